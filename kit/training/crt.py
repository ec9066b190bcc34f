"""Decoupled classifier learning (Kang et al. 2020, "Decoupling representation and classifier for
long-tailed recognition"): once the backbone is trained, re-balance only the classifier.

- cRT (classifier re-training): freeze the backbone, re-initialise the head and train it alone with
  class-balanced sampling. Here the backbone's features of the fold's *training* images (no
  augmentation, eval mode) are computed once and the head is trained on them, so a fold's held-out
  images are never seen and the OOF stays out-of-fold.
- τ-normalisation: rescale each class's weight vector to w_c/‖w_c‖^τ (τ = 1: equal norms) and drop
  the bias, as the authors' reference computes its logits (features · wᵀ).

Both run per fold inside `train_fold`, after the best epoch is loaded and before predicting.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from kit.config import ModelConfig, model_file
from kit.errors import KitError
from kit.models import classifier_of
from kit.progress import make_progress
from kit.training.dataset import to_model_input
from kit.training.device import pick_precision
from kit.training.losses import softmax_cross_entropy
from kit.training.samplers import sample_weights, sampler_prior


@torch.no_grad()
def classifier_inputs(model: nn.Module, images: np.ndarray, indices: np.ndarray, mcfg: ModelConfig, device: torch.device) -> torch.Tensor:
    """(len(indices), D) float32: what the classifier head receives for each image (eval mode, no augmentation)."""
    model.eval()
    captured: list[torch.Tensor] = []
    hook = classifier_of(model).register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach().float()))
    precision = pick_precision(device, mcfg.amp)
    try:
        batch_size = max(mcfg.batch_size, 64)
        for start in range(0, len(indices), batch_size):
            idx = np.asarray(indices[start : start + batch_size])
            x = torch.from_numpy(np.array(images[idx], dtype=np.uint8))[:, None].to(device, non_blocking=True)
            with precision.autocast():
                model(to_model_input(x, mcfg.in_chans, mcfg.channels_last))
    finally:
        hook.remove()
    return torch.cat(captured).flatten(1)


def retrain_head(
    head: nn.Module, features: torch.Tensor, y_train: np.ndarray, mcfg: ModelConfig, task: str, seed: int, *, console: Console | None = None
) -> np.ndarray:
    """cRT: re-initialise the head and train only it for `crt_epochs` on the frozen `features` of the training
    images, with a sampler of power `crt_sampler_power` (1: class-balanced). Returns the class distribution the
    head is now calibrated to."""
    device = features.device
    targets = torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.float32)).to(device)
    torch.manual_seed(seed)
    if not hasattr(head, "reset_parameters"):
        raise KitError(f"{model_file(mcfg)}: key 'crt_epochs': backbone '{mcfg.backbone}' has a head ({type(head).__name__}) that cannot be re-initialised")
    head.reset_parameters()
    for p in head.parameters():
        p.requires_grad_(True)
    weights = sample_weights(y_train, mcfg.crt_sampler_power)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(mcfg.batch_size, len(features))
    steps_per_epoch = max(len(features) // batch_size, 1)
    total = mcfg.crt_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(head.parameters(), lr=mcfg.crt_lr, weight_decay=mcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0))))
    draw = torch.as_tensor(weights, dtype=torch.double)
    head.train()
    with make_progress(console) as progress:
        bar = progress.add_task(f"{mcfg.name} cRT head", total=total)
        for _ in range(mcfg.crt_epochs):
            order = torch.multinomial(draw, steps_per_epoch * batch_size, replacement=True, generator=generator).to(device)
            for rows in order.view(steps_per_epoch, batch_size):
                logits = head(features[rows]).float()
                if task == "multi-label":
                    loss = F.binary_cross_entropy_with_logits(logits, targets[rows])
                else:
                    loss = softmax_cross_entropy(logits, targets[rows], label_smoothing=mcfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                progress.advance(bar)
    head.eval()
    return sampler_prior(y_train, weights, task)


@torch.no_grad()
def tau_normalise(model: nn.Module, tau: float) -> None:
    """w_c ← w_c/‖w_c‖^τ for every class row of the linear head, bias ← 0 (in place)."""
    head = classifier_of(model)
    if not isinstance(head, nn.Linear):
        raise KitError(f"{type(model).__name__}: tau_norm needs a linear classifier head, found {type(head).__name__}")
    norms = head.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    head.weight.div_(norms**tau)
    if head.bias is not None:
        head.bias.zero_()


def uniform_prior(n_classes: int) -> np.ndarray:
    """The nominal prior of a τ-normalised head: every class alike."""
    return np.full(n_classes, 1.0 / n_classes)


def rebalance_classifier(
    model: nn.Module,
    images: np.ndarray,
    train_idx: np.ndarray,
    y_train: np.ndarray,
    mcfg: ModelConfig,
    task: str,
    *,
    device: torch.device,
    seed: int,
    console: Console | None = None,
) -> np.ndarray | None:
    """The variant's decoupling step, if any: cRT or τ-norm on the trained model (in place).

    Returns the class distribution the new head is calibrated to (cRT: its sampler's, exact for CE;
    τ-norm: uniform, nominal), or None when the variant has neither."""
    if mcfg.crt_epochs > 0:
        head = classifier_of(model)
        features = classifier_inputs(model, images, train_idx, mcfg, device)
        return retrain_head(head, features, y_train, mcfg, task, seed, console=console)
    if mcfg.tau_norm > 0:
        if not isinstance(classifier_of(model), nn.Linear):
            raise KitError(f"{model_file(mcfg)}: key 'tau_norm': backbone '{mcfg.backbone}' has no linear classifier head to normalise")
        tau_normalise(model, mcfg.tau_norm)
        return uniform_prior(y_train.shape[1])
    return None
