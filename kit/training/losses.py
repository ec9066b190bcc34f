"""Training losses, each a `loss(logits, y_uint8)` built from a variant's config."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kit.config import ModelConfig
from kit.errors import KitError


def bce_pos_weight(labels: np.ndarray, clip: float) -> np.ndarray:
    """neg/pos per class clipped at `clip` (the published ChestMNIST recipe)."""
    labels = np.asarray(labels, dtype=np.float64)
    pos = labels.sum(axis=0)
    return np.clip((len(labels) - pos) / np.maximum(pos, 1.0), 1.0, clip)


def loss_prior(prior: np.ndarray, mcfg: ModelConfig, pos_weight: np.ndarray | None) -> np.ndarray:
    """BCE with pos_weight w trains the sigmoid on odds multiplied by w: fold that into the prior."""
    if mcfg.loss != "bce" or pos_weight is None:
        return prior
    odds = prior / (1 - prior) * pos_weight
    return np.clip(odds / (1 + odds), 1e-6, 1 - 1e-6)


def make_loss(mcfg: ModelConfig, task: str, train_labels: np.ndarray, device: torch.device):
    """loss(logits, y_uint8) for the configured choice; CE and focal read y as one-hot."""
    if mcfg.loss == "ce":
        if task == "multi-label":
            raise KitError(f"configs/models/{mcfg.name}.toml: key 'loss': \"ce\" is for multi-class; use \"bce\" or \"focal\"")

        def ce(logits, y):
            return F.cross_entropy(logits.float(), y.argmax(1), label_smoothing=mcfg.label_smoothing)

        return ce
    if mcfg.loss == "focal":
        gamma = mcfg.focal_gamma

        def focal(logits, y):
            logits = logits.float()
            if task == "multi-label":
                yf = y.float()
                bce = F.binary_cross_entropy_with_logits(logits, yf, reduction="none")
                p_t = torch.exp(-bce)
                return ((1 - p_t) ** gamma * bce).mean()
            log_p = F.log_softmax(logits, dim=1).gather(1, y.argmax(1, keepdim=True)).squeeze(1)
            return (-((1 - log_p.exp()) ** gamma) * log_p).mean()

        return focal
    pos_weight = torch.tensor(bce_pos_weight(train_labels, mcfg.pos_weight_clip), dtype=torch.float32, device=device)

    def bce(logits, y):
        return F.binary_cross_entropy_with_logits(logits.float(), y.float(), pos_weight=pos_weight)

    return bce
