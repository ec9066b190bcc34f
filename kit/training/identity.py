"""A training job's identity: what its result depends on, stored with the result and compared on reuse.

The files of a (variant, fold) job, `preds.npz` and `last.pt`, record the job's identity: the model
config, the data the job saw (train labels, train and test images, the ids it holds out) and extra
fields: the seed and the metric its checkpoint was chosen by. `kit train --resume` reuses a file only when its identity is the current
one, and the OOF is assembled only from folds whose identity is current; otherwise one line says
what changed and how to retrain, instead of scoring old logits against new labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kit.config import CompetitionConfig, ModelConfig
from kit.data.common import DataSource
from kit.decision.metrics import build_metric
from kit.errors import KitError
from kit.files import read_npz
from kit.hashing import digest
from kit.training.pseudo import pseudo_label_source

PREDS_KEYS = ("classes", "val_ids", "val_logits", "test_ids", "test_logits", "train_prior", "metrics")
LAST_KEYS = ("model", "optimizer", "scheduler", "scaler", "state", "torch_rng")
BEST_KEYS = ("model", "val_logits", "epoch")


def _digest(*parts: Any) -> str:
    return digest(*parts, length=16)


def fold_data_fingerprint(source: DataSource, fold_of: np.ndarray, fold: int) -> dict[str, str]:
    """The data job `fold` sees: train labels (ids, classes, values), train and test images, its held-out ids."""
    train, test = source.train, source.test
    return {
        "train labels": _digest(list(source.classes), np.asarray(train.ids, dtype=str), np.asarray(train.labels, dtype=np.uint8)),
        "train images": train.images_fingerprint,
        "test images": _digest(np.asarray(test.ids, dtype=str), test.images_fingerprint),
        "folds": _digest(np.asarray(train.ids, dtype=str)[np.asarray(fold_of) == fold]),
    }


# How a job is run, not what it computes: loader workers re-seed exactly as the main process would
# (kit.training.loader), so changing these keeps a finished fold valid.
EXECUTION_ONLY_KEYS = frozenset({"num_workers", "persistent_workers", "prefetch_factor"})
# Which jobs a variant has, not what one job computes: a seed job's own seed is the identity's "seed" field,
# so adding a seed to `seeds` keeps the finished seeds valid (and the key's absence changes no old identity).
JOB_LIST_KEYS = frozenset({"seeds"})
# Keys added after identities were first recorded: part of the identity only when set, so a config that
# leaves them at their defaults keeps the identity (and the finished folds) it had before they existed.
IDENTITY_WHEN_SET_KEYS = ("pseudo_label_from", "pseudo_label_temperature", "pseudo_label_min_confidence", "tta_scales")


def _identity_exclusions(mcfg: ModelConfig) -> set[str]:
    at_default = {k for k in IDENTITY_WHEN_SET_KEYS if getattr(mcfg, k) == ModelConfig.model_fields[k].get_default(call_default_factory=True)}
    return set(EXECUTION_ONLY_KEYS | JOB_LIST_KEYS) | at_default


def job_identity(mcfg: ModelConfig, data_fingerprint: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, str]:
    """{part: digest} of everything a job's result depends on: model config (but its execution-only keys),
    data, and `extra` fields (each compared on its own, so a mismatch can say which part changed)."""
    recipe = mcfg.model_dump(mode="json", exclude=_identity_exclusions(mcfg))
    identity = {"model config": _digest(recipe), **data_fingerprint}
    identity.update({name: _digest(value) for name, value in (extra or {}).items()})
    return identity


def fold_identity(cfg: CompetitionConfig, mcfg: ModelConfig, source: DataSource, fold_of: np.ndarray, fold: int) -> dict[str, str]:
    """The identity of job (variant, fold): the one place that lists which inputs a fold's result depends on.
    The metric is one: the checkpoint is chosen by it."""
    extra = {"seed": cfg.seed, "metric": build_metric(cfg.metric).params()}
    if mcfg.pseudo_label_from is not None:  # a changed first round retrains the second
        extra["pseudo-label source"] = pseudo_label_source(cfg, mcfg, source, fold_of).fingerprint
    return job_identity(mcfg, fold_data_fingerprint(source, fold_of, fold), extra=extra)


def identity_changes(stored: dict[str, str] | None, current: dict[str, str]) -> str:
    """'' when `stored` is `current`; else the changed parts, e.g. 'train labels and folds changed'."""
    if not isinstance(stored, dict):
        return "written by an older kit that did not record its inputs"
    changed = [k for k in current if stored.get(k) != current[k]] + [k for k in stored if k not in current]
    if not changed:
        return ""
    return (", ".join(changed[:-1]) + " and " + changed[-1] if len(changed) > 1 else changed[0]) + " changed since"


def retrain_hint(variant: str, fold: int) -> str:
    return f"run `kit train --variant {variant} --fold {fold}` without --resume to train fold {fold} again"


def read_checkpoint(path: Path, keys: tuple[str, ...], hint: str, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint written by `kit train`; KitError naming it when it is truncated, corrupt or foreign."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise KitError(f"{path}: checkpoint not found; {hint}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        raise KitError(f"{path}: unreadable checkpoint, truncated or corrupt ({type(exc).__name__}); {hint}") from None
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise KitError(f"{path}: not a checkpoint of `kit train` (no {', '.join(missing)}); {hint}")
    return ckpt


def read_preds(path: Path, hint: str) -> tuple[dict[str, np.ndarray], dict[str, str] | None]:
    """A fold's preds.npz and the identity it was made with (None for files of an older kit)."""
    arrays = read_npz(path, hint)
    missing = [k for k in PREDS_KEYS if k not in arrays]
    if missing:
        raise KitError(f"{path}: not a preds file of `kit train` (no {', '.join(missing)}); {hint}")
    try:
        identity = json.loads(str(arrays["identity"])) if "identity" in arrays else None
    except ValueError:
        identity = None
    return arrays, identity
