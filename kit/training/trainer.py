"""The one training core: a `Trainer` built once per job, with the step every caller runs (after timm's TrainingTask).

A `Trainer` holds what a job trains and evaluates with: the network (cosine head for LDAM, channels_last,
torch.compile), its EMA, the AdamW optimizer, the schedule, precision with its GradScaler and the loss as it
stands at the current epoch. `build_model` + `build_trainer` is the only place these are put together:
`kit train` (`kit.training.loop.train_fold`), `kit doctor` (which times `Trainer.train_step`, the real step:
mixing, accumulation, clipping, scheduler and EMA included) and the training benchmark all build through them,
so what doctor measures is what a job runs. `load_trainer` is the inference entry point: the variant's
network with a fold checkpoint's weights, whose `predict` gives the logits `kit train` would write.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import TextColumn
from torch import nn

from kit.config import ModelConfig, model_file
from kit.errors import KitError
from kit.models import classifier_of, create_model
from kit.progress import make_progress
from kit.training.dataset import to_model_input
from kit.training.device import Precision, pick_device, pick_precision, prepare_model
from kit.training.evaluation import predict_logits
from kit.training.heads import use_cosine_head
from kit.training.losses import loss_of, make_loss
from kit.training.optim import build_optimizer

SYNC_EVERY = 16  # training steps between reads of the running loss (host syncs on a GPU)


class WeightEMA:
    """Exponential moving average of weights (buffers copied), kept as a plain module for eval."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)


@dataclass(eq=False)
class Trainer:
    """What one job trains and evaluates with; `last.pt` saves and restores the state of each part."""

    mcfg: ModelConfig
    device: torch.device
    task: str  # "multi-class" or "multi-label": which losses apply
    model: nn.Module  # whose weights are saved
    step_model: nn.Module  # what a training step calls (the compiled model when compile = true)
    ema: WeightEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: Any  # LambdaLR or ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    precision: Precision
    train_labels: np.ndarray | None = None  # the training rows' labels, which the loss is built from (None: inference only)
    loss_fn: Any = None  # loss(logits, targets) at the current epoch (`start_epoch`)

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved as the best epoch: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def start_epoch(self, epoch: int) -> None:
        """The freeze schedule and the loss as they stand at `epoch` (deferred re-weighting changes the loss per epoch)."""
        apply_freeze_schedule(self, epoch)
        if self.train_labels is None:
            raise KitError(f"variant '{self.mcfg.name}': this trainer was built for inference (no training labels)")
        self.loss_fn = make_loss(self.mcfg, self.task, self.train_labels, self.device, epoch)

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, *, mixer=None, group_size: int = 1, optimizer_step: bool = True
    ) -> torch.Tensor:
        """One batch as the loader yields it (uint8 images, targets): to the device and model input, mixup/cutmix,
        forward under autocast, the loss scaled by 1/`group_size` (gradient accumulation) and backward; with
        `optimizer_step`, the group's update: clipping, GradScaler step, EMA, and the cosine schedule's step.
        Returns the batch's loss, detached, on the device (reading it is a host sync: the caller decides when)."""
        mcfg = self.mcfg
        x = to_model_input(x.to(self.device, non_blocking=True), mcfg.in_chans, mcfg.channels_last)
        y = y.to(self.device, non_blocking=True)
        if mixer is not None:
            x, y = mixer(x, y)
        with self.precision.autocast():
            logits = self.step_model(x)
        loss = self.loss_fn(logits, y)
        self.scaler.scale(loss / group_size).backward()
        if optimizer_step:
            if mcfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.step_model.parameters(), mcfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.step_model)
            if mcfg.scheduler == "cosine":
                self.scheduler.step()
        return loss.detach()

    def train_epoch(self, loader, *, console: Console, description: str, mixer=None) -> dict:
        """One epoch of `train_step`; the optimizer steps every `grad_accum_steps` batches (the last group may be
        shorter: its loss is averaged over the batches it has, as in timm's train.py). The loss is summed on the
        device and read back (one host sync) every SYNC_EVERY steps and at the end: a `.item()` per step would make
        a GPU wait for every step before the next is queued. A non-finite loss is still caught within SYNC_EVERY
        steps, before any checkpoint is written."""
        self.step_model.train()
        loss_sum, seen, steps = torch.zeros((), dtype=torch.float64, device=self.device), 0, len(loader)
        accum = self.mcfg.grad_accum_steps
        t0 = time.perf_counter()
        progress = make_progress(console, TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"), refresh_per_second=2)
        self.optimizer.zero_grad(set_to_none=True)
        with progress:
            bar = progress.add_task(description, total=steps, loss=float("nan"), ips=0.0)
            for step, (x, y) in enumerate(loader, 1):
                group_start = (step - 1) - (step - 1) % accum
                group_size = min(accum, steps - group_start)
                loss = self.train_step(x, y, mixer=mixer, group_size=group_size, optimizer_step=step == group_start + group_size)
                loss_sum += loss.double() * len(x)
                seen += len(x)
                if step % SYNC_EVERY == 0 or step == steps:
                    total_loss = loss_sum.item()
                    if not math.isfinite(total_loss):
                        raise KitError(f"variant '{self.mcfg.name}': training loss became {total_loss}; lower lr in {model_file(self.mcfg)}")
                    progress.update(bar, completed=step, loss=total_loss / seen, ips=seen / max(time.perf_counter() - t0, 1e-9))
        total_loss = loss_sum.item()
        return {"loss": total_loss / max(seen, 1), "images_per_s": seen / max(time.perf_counter() - t0, 1e-9)}

    def predict(self, images: np.ndarray, rows: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """float32 logits of the eval model (the EMA when there is one) on `images[rows]`, with the variant's TTA."""
        return predict_logits(self.eval_model, images, rows, self.mcfg, self.device, batch_size)

    def evaluate(self, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, *, scored: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(logits of every row, the current loss over the `scored` ones (a boolean mask; default all)): a held-out pass."""
        logits = self.predict(images, rows)
        scored = np.ones(len(rows), dtype=bool) if scored is None else scored
        with torch.no_grad():
            loss = float(self.loss_fn(torch.from_numpy(logits[scored]).to(self.device), torch.from_numpy(labels[scored]).to(self.device)))
        return logits, loss


def make_scheduler(optimizer, mcfg: ModelConfig, steps_per_epoch: int):
    if mcfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1)
    warmup = mcfg.warmup_epochs * steps_per_epoch
    total = max(mcfg.epochs * steps_per_epoch, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def apply_freeze_schedule(trainer: Trainer, epoch: int) -> None:
    """`freeze_epochs`: only the head trains until then; at that epoch the lr is scaled by `unfreeze_lr_factor`."""
    mcfg = trainer.mcfg
    if not mcfg.freeze_epochs:
        return
    head = {id(p) for p in classifier_of(trainer.model).parameters()}
    for p in trainer.model.parameters():
        p.requires_grad_(epoch >= mcfg.freeze_epochs or id(p) in head)
    if epoch == mcfg.freeze_epochs:
        for group in trainer.optimizer.param_groups:
            group["lr"] *= mcfg.unfreeze_lr_factor
        if hasattr(trainer.scheduler, "base_lrs"):
            trainer.scheduler.base_lrs = [lr * mcfg.unfreeze_lr_factor for lr in trainer.scheduler.base_lrs]


def build_model(mcfg: ModelConfig, n_classes: int, device: torch.device, *, init_seed: int) -> nn.Module:
    """The variant's network on `device`, initialised from `init_seed` (LDAM: with its cosine head)."""
    torch.manual_seed(init_seed)
    model = create_model(mcfg, n_classes).to(device)
    return use_cosine_head(model, mcfg) if loss_of(mcfg).cosine_head else model


def build_trainer(
    mcfg: ModelConfig,
    *,
    model: nn.Module,
    device: torch.device,
    task: str,
    train_labels: np.ndarray | None,
    optimizer_steps_per_epoch: int,
) -> Trainer:
    """Everything around `model` (from `build_model`): channels_last/compile, precision, EMA, optimizer,
    schedule, GradScaler; the loss is built per epoch by `Trainer.start_epoch` from `train_labels`."""
    model, step_model = prepare_model(model, mcfg)
    precision = pick_precision(device, mcfg.amp)
    ema = WeightEMA(model, mcfg.ema_decay) if mcfg.ema_decay > 0 else None
    optimizer = build_optimizer(model, mcfg, device)
    scheduler = make_scheduler(optimizer, mcfg, optimizer_steps_per_epoch)
    return Trainer(
        mcfg=mcfg, device=device, task=task, model=model, step_model=step_model, ema=ema, optimizer=optimizer, scheduler=scheduler,
        scaler=precision.grad_scaler(), precision=precision, train_labels=train_labels,
    )


def load_trainer(
    mcfg: ModelConfig, *, n_classes: int, checkpoint: Path, task: str = "multi-class", device: torch.device | None = None
) -> Trainer:
    """Inference: the variant's network with the weights of a fold's `best.pt` (runs/<v>/fold<k>/best.pt, the
    best epoch's eval model: the EMA when the variant has one); `trainer.predict(images, rows)` then gives its
    logits with the variant's TTA. Nothing is downloaded (the checkpoint has every weight). Note: a variant with
    cRT or τ-norm re-balances the head after `best.pt` is written; those logits are in the fold's `preds.npz`."""
    from kit.training.identity import BEST_KEYS, read_checkpoint

    device = device or pick_device()
    offline = mcfg.model_copy(update={"pretrained": False, "weights": None, "compile": False})
    model = build_model(offline, n_classes, device, init_seed=0)
    trainer = build_trainer(offline, model=model, device=device, task=task, train_labels=None, optimizer_steps_per_epoch=1)
    best = read_checkpoint(Path(checkpoint), BEST_KEYS, f"train variant '{mcfg.name}' again (`kit train --variant {mcfg.name}`)", map_location=device)
    try:
        trainer.eval_model.load_state_dict(best["model"])
    except RuntimeError as exc:
        raise KitError(f"{checkpoint}: the checkpoint does not fit variant '{mcfg.name}' ({type(exc).__name__}); train it again") from None
    trainer.eval_model.eval()
    return trainer
