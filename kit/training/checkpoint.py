"""A job's checkpoints: one object owns `best.pt`, `last.pt` and `preds.npz` (timm's CheckpointSaver is the model).

`last.pt` holds the full training state after every epoch, so `--resume` continues where a job stopped;
`best.pt` the weights and held-out logits of the best epoch; `preds.npz` the finished job's result.
Each carries the job's identity (`kit.training.identity`) and is reused only when it is the current one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kit.errors import KitError
from kit.files import atomic_write
from kit.paths import BEST_FILE, DECOUPLED_FILE, LAST_FILE, PREDS_FILE, set_aside
from kit.training.identity import BEST_KEYS, LAST_KEYS, identity_changes, read_checkpoint, read_preds
from kit.training.trainer import Trainer


@dataclass
class FoldState:
    """Everything that changes between epochs and must survive an interruption."""

    epoch: int = 0  # next epoch to run
    best_score: float = -math.inf
    best_val_loss: float = math.inf  # breaks ties: early on the rule often predicts the majority class everywhere
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False  # early-stopped or all epochs done
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def is_better(self, score: float, val_loss: float) -> bool:
        return (score, -val_loss) > (self.best_score, -self.best_val_loss)


def _save_torch(path: Path, obj: dict) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


class FoldCheckpoints:
    """The files of one (variant, fold) job in `out_dir`, checked against its `identity`; `hint` says how to retrain."""

    def __init__(self, out_dir: Path, identity: dict[str, str], hint: str):
        self.out_dir, self.identity, self.hint = out_dir, identity, hint
        self.preds, self.last, self.best = out_dir / PREDS_FILE, out_dir / LAST_FILE, out_dir / BEST_FILE
        self.decoupled = out_dir / DECOUPLED_FILE

    def finished(self) -> bool:
        """True when `preds.npz` exists and was made from the current inputs; KitError when from others."""
        if not self.preds.is_file():
            return False
        changed = identity_changes(read_preds(self.preds, self.hint)[1], self.identity)
        if changed:
            raise KitError(f"{self.preds}: this fold was trained on other inputs ({changed}); {self.hint}")
        return True

    def can_resume(self) -> bool:
        return self.last.is_file()

    def clear(self) -> None:
        """A fresh start: no file of an earlier run may be mistaken for this one's (so `--resume` continues this
        run, not the earlier one), yet nothing earlier is lost before this run has its own result: preds.npz,
        last.pt and best.pt are moved aside as *.previous, and removed only once the new preds.npz exists."""
        for stale in (self.preds, self.last, self.best, self.decoupled):
            if stale.is_file():
                os.replace(stale, set_aside(stale))

    def restore(self, trainer: Trainer) -> FoldState:
        """Load `last.pt` into `trainer` (and torch's RNG); the state to continue from."""
        ckpt = read_checkpoint(self.last, LAST_KEYS, self.hint)
        changed = identity_changes(ckpt.get("identity"), self.identity)
        if changed:
            raise KitError(f"{self.last}: the checkpoint was made from other inputs ({changed}); {self.hint}")
        try:
            trainer.model.load_state_dict(ckpt["model"])
            trainer.optimizer.load_state_dict(ckpt["optimizer"])
            trainer.scheduler.load_state_dict(ckpt["scheduler"])
            trainer.scaler.load_state_dict(ckpt["scaler"])
            if trainer.ema is not None:
                trainer.ema.module.load_state_dict(ckpt["ema"])
            state = FoldState(**ckpt["state"])
            torch.set_rng_state(ckpt["torch_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise KitError(f"{self.last}: the checkpoint does not fit this variant ({type(exc).__name__}); {self.hint}") from None
        if state.best_epoch >= 0:  # read now: a damaged best.pt must stop the resume before it writes anything
            read_checkpoint(self.best, BEST_KEYS, self.hint)
        return state

    def save_best(self, trainer: Trainer, val_logits: np.ndarray, epoch: int) -> None:
        _save_torch(self.best, {"model": trainer.eval_model.state_dict(), "val_logits": torch.from_numpy(val_logits), "epoch": epoch})

    def save_last(self, trainer: Trainer, state: FoldState, *, sampler) -> None:
        _save_torch(self.last, {
            "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(), "ema": trainer.ema.module.state_dict() if trainer.ema is not None else None,
            "state": state.__dict__, "torch_rng": torch.get_rng_state(), "sampler_generator": sampler.generator.get_state(),
            "identity": self.identity,
        })

    def save_decoupled(self, trainer: Trainer, val_logits: np.ndarray, epoch: int) -> None:
        """The weights after cRT/τ-norm (best.pt keeps the epoch's own, which a resumed job re-balances again)."""
        _save_torch(self.decoupled, {"model": trainer.eval_model.state_dict(), "val_logits": torch.from_numpy(val_logits), "epoch": epoch})

    def load_best(self, trainer: Trainer, device: torch.device) -> tuple[int, np.ndarray]:
        """Put the best epoch's weights into the eval model; (that epoch, its held-out logits)."""
        best = read_checkpoint(self.best, BEST_KEYS, self.hint, map_location=device)
        trainer.eval_model.load_state_dict(best["model"])
        return int(best["epoch"]), best["val_logits"].cpu().numpy().astype(np.float32)

    def write_preds(self, arrays: dict[str, np.ndarray], summary: dict) -> Path:
        """The job's result, with its identity and summary as JSON strings."""
        arrays = {**arrays, "identity": np.asarray(json.dumps(self.identity)), "metrics": np.asarray(json.dumps(summary))}
        atomic_write(self.preds, lambda f: np.savez(f, **arrays))
        for kept in (self.preds, self.last, self.best, self.decoupled):  # the new result exists: the earlier run's files may go
            set_aside(kept).unlink(missing_ok=True)
        return self.preds
