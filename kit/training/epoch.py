"""One epoch of training, and what a job trains with (model, EMA, optimizer, schedule, loader)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import TextColumn
from torch import nn
from torch.utils.data import DataLoader

from kit.config import ModelConfig, model_file
from kit.errors import KitError
from kit.models import classifier_of
from kit.progress import make_progress
from kit.training.dataset import to_model_input
from kit.training.device import Precision
from kit.training.loader import EpochSampler

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


@dataclass
class Trainer:
    """What one job trains with; `last.pt` saves and restores the state of each part."""

    model: nn.Module  # whose weights are saved
    step_model: nn.Module  # what a training step calls (the compiled model when compile = true)
    ema: WeightEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: Any  # LambdaLR or ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    loader: DataLoader
    sampler: EpochSampler
    precision: Precision

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved as the best epoch: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model


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


def apply_freeze_schedule(trainer: Trainer, mcfg: ModelConfig, epoch: int) -> None:
    """`freeze_epochs`: only the head trains until then; at that epoch the lr is scaled by `unfreeze_lr_factor`."""
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


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, ema, mcfg, device, precision: Precision, console, description, mixer=None) -> dict:
    """One epoch; the optimizer steps every `grad_accum_steps` batches (the last group may be shorter: its
    loss is averaged over the batches it has, as in timm's train.py). The loss is summed on the device and
    read back (one host sync) every SYNC_EVERY steps and at the end: a `.item()` per step would make a GPU
    wait for every step before the next is queued. A non-finite loss is still caught within SYNC_EVERY
    steps, before any checkpoint is written."""
    model.train()
    loss_sum, seen, steps = torch.zeros((), dtype=torch.float64, device=device), 0, len(loader)
    accum = mcfg.grad_accum_steps
    t0 = time.perf_counter()
    progress = make_progress(console, TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"), refresh_per_second=2)
    optimizer.zero_grad(set_to_none=True)
    with progress:
        task = progress.add_task(description, total=steps, loss=float("nan"), ips=0.0)
        for step, (x, y) in enumerate(loader, 1):
            x = to_model_input(x.to(device, non_blocking=True), mcfg.in_chans, mcfg.channels_last)
            y = y.to(device, non_blocking=True)
            if mixer is not None:
                x, y = mixer(x, y)
            with precision.autocast():
                logits = model(x)
            loss = loss_fn(logits, y)
            group_start = (step - 1) - (step - 1) % accum
            group_size = min(accum, steps - group_start)
            scaler.scale(loss / group_size).backward()
            if step == group_start + group_size:
                if mcfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), mcfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                if mcfg.scheduler == "cosine":
                    scheduler.step()
            loss_sum += loss.detach().double() * len(x)
            seen += len(x)
            if step % SYNC_EVERY == 0 or step == steps:
                total_loss = loss_sum.item()
                if not math.isfinite(total_loss):
                    raise KitError(f"variant '{mcfg.name}': training loss became {total_loss}; lower lr in {model_file(mcfg)}")
                progress.update(task, completed=step, loss=total_loss / seen, ips=seen / max(time.perf_counter() - t0, 1e-9))
    total_loss = loss_sum.item()
    return {"loss": total_loss / max(seen, 1), "images_per_s": seen / max(time.perf_counter() - t0, 1e-9)}
