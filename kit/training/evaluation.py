"""A model's logits on cached images (with test-time augmentation) and the score checkpoints are chosen by."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kit.config import CompetitionConfig, ModelConfig
from kit.decision.metrics import MacroF1, balanced_accuracy, build_metric, macro_auc, macro_f1, trivial_baseline
from kit.decision.rules import closed_form_decision
from kit.training.dataset import to_model_input
from kit.training.device import pick_precision


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    mcfg: ModelConfig,
    device: torch.device,
    batch_size: int | None = None,
) -> np.ndarray:
    """float32 (len(indices), C) logits: the mean over `tta_scales` (each view the image rescaled, see
    `rescale_view`) and, with tta_hflip, over each view and its mirror image."""
    model.eval()
    batch_size = batch_size or max(mcfg.batch_size, 64)
    precision = pick_precision(device, mcfg.amp)
    black = to_model_input(torch.zeros((1, 1, 1, 1), dtype=torch.uint8, device=device), mcfg.in_chans, False)
    out = []
    for start in range(0, len(indices), batch_size):
        idx = np.asarray(indices[start : start + batch_size])
        x = torch.from_numpy(np.array(images[idx], dtype=np.uint8))[:, None].to(device, non_blocking=True)
        x = to_model_input(x, mcfg.in_chans, mcfg.channels_last)
        views = []
        with precision.autocast():
            for scale in mcfg.tta_scales:
                view = x if scale == 1.0 else rescale_view(x, scale, black)
                logits = model(view).float()
                if mcfg.tta_hflip:
                    logits = (logits + model(view.flip(-1)).float()) / 2
                views.append(logits)
        logits = views[0] if len(views) == 1 else torch.stack(views).mean(dim=0)
        out.append(logits.cpu().numpy())
    n_classes = out[0].shape[1] if out else 0
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, n_classes), np.float32)


def rescale_view(x: torch.Tensor, scale: float, fill: torch.Tensor) -> torch.Tensor:
    """The batch zoomed by `scale` about the centre at the same size: bilinear resize, then a centre crop
    (scale > 1) or a border of `fill`, the normalised black (scale < 1). This is the training augmentation's
    scale (an affine zoom with black fill), so the model sees what it was trained on, at its training size."""
    height, width = x.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    zoomed = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    if scale >= 1:
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        return zoomed[..., top : top + height, left : left + width]
    out = fill.expand(len(x), -1, height, width).clone()
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    out[..., top : top + size[0], left : left + size[1]] = zoomed
    return out


def evaluate(
    logits: np.ndarray,
    labels: np.ndarray,
    task: str,
    classes: list[str],
    train_prior: np.ndarray,
    target_prior: np.ndarray,
    *,
    cfg: CompetitionConfig,
    temperature: float,
) -> dict[str, float]:
    """The metric under its closed-form decision rule (what checkpoints are chosen by), with macro-F1,
    balanced accuracy, AUC and the trivial baseline."""
    metric = build_metric(cfg.metric)
    decision = closed_form_decision(task, classes, train_prior, target_prior, metric, temperature=temperature)
    values = decision.predict(logits)  # what the metric scores: labels, or probabilities
    # the label companions read labels: a probability or ranking metric's are the calibrated argmax (threshold 0.5)
    pred = values if metric.kind == "label" else closed_form_decision(task, classes, train_prior, target_prior, MacroF1(),
                                                                      temperature=temperature).with_(bayes=False).predict(logits)
    if task == "multi-label":
        probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    else:
        z = logits.astype(np.float64)
        probs = np.exp(z - z.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    return {
        "score": metric.score(labels, values),
        "trivial_baseline": trivial_baseline(labels, metric, task=task),
        "macro_f1": macro_f1(labels, pred),
        "balanced_accuracy": balanced_accuracy(labels, pred) if task == "multi-class" else float("nan"),
        "auc": macro_auc(labels, probs),
    }
