"""Augmentation: per-image pipelines on the cache's uint8 single-channel images (albumentations 2.x,
plus torchvision's RandAugment) and per-batch mixup/cutmix (timm's Mixup) on the device.

Augmenting uint8 (H, W) arrays before any float conversion keeps the loader cheap; the float
conversion, channel repeat and normalization happen on the device (kit.training.dataset.to_model_input).
The pipeline is seeded per epoch (and per loader worker), so a run is reproducible for a given worker count;
the batch mixer is seeded per epoch too.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from timm.data import Mixup
from torchvision.transforms import v2

from kit.config import ModelConfig

# strength -> (flip p, max shift fraction, scale range, max rotation deg, brightness/contrast limit, affine p)
_LEVELS: dict[str, tuple[float, float, float, float, float, float]] = {
    "mild": (0.5, 0.03, 0.05, 5.0, 0.10, 0.5),
    "moderate": (0.5, 0.06, 0.10, 10.0, 0.20, 0.7),
    "strong": (0.5, 0.10, 0.20, 15.0, 0.30, 0.9),
}
LEVELS = ("none", *_LEVELS)


class RandAugment(A.ImageOnlyTransform):
    """torchvision's RandAugment (Cubuk et al. 2020: `num_ops` random ops at one `magnitude`, 0–30) on a
    (H, W) uint8 image, drawing from the pipeline's seeded random stream instead of torch's global one."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, p: float = 1.0):
        super().__init__(p=p)
        self.num_ops, self.magnitude = num_ops, magnitude
        self.randaugment = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)

    def get_params(self) -> dict[str, int]:
        return {"seed": self.py_random.randint(0, 2**31 - 1)}

    def apply(self, img: np.ndarray, seed: int = 0, **params) -> np.ndarray:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.randaugment(torch.from_numpy(np.array(img, dtype=np.uint8))[None])[0].numpy()

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("num_ops", "magnitude")


def build_augment(level: str, randaugment_magnitude: int = 0, randaugment_ops: int = 2) -> A.Compose | None:
    """HorizontalFlip + Affine (shift/scale/rotate) + RandomBrightnessContrast, stronger per level,
    then RandAugment when `randaugment_magnitude` > 0."""
    if level != "none" and level not in _LEVELS:
        raise ValueError(f"unknown augmentation level {level!r}; use one of {LEVELS}")
    randaugment = [RandAugment(randaugment_ops, randaugment_magnitude)] if randaugment_magnitude > 0 else []
    if level == "none":
        return A.Compose(randaugment, seed=0) if randaugment else None
    flip_p, shift, scale, rotate, bc, affine_p = _LEVELS[level]
    return A.Compose(
        [
            A.HorizontalFlip(p=flip_p),
            A.Affine(
                translate_percent=(-shift, shift),
                scale=(1 - scale, 1 + scale),
                rotate=(-rotate, rotate),
                border_mode=0,
                fill=0,
                p=affine_p,
            ),
            A.RandomBrightnessContrast(brightness_limit=bc, contrast_limit=bc, p=0.5),
            *randaugment,
        ],
        seed=0,
    )


def augment_image(pipeline: A.Compose | None, image: np.ndarray, seed: int | None = None) -> np.ndarray:
    """Apply `pipeline` to one (H, W) uint8 image; with `seed`, reseed first (same seed -> same output).

    Reseeding costs about as much as the augmentation itself, so the training loader seeds the
    pipeline once per epoch (and per worker) instead and passes no seed here.
    """
    if pipeline is None:
        return image
    if seed is not None:
        pipeline.set_random_seed(seed)
    out = pipeline(image=np.ascontiguousarray(image))["image"]
    return out.reshape(image.shape)


class BatchMixer:
    """timm's Mixup/CutMix (Zhang et al. 2018; Yun et al. 2019) for one epoch, on a device batch.

    timm draws from numpy's global random state; the mixer keeps its own (seeded per epoch) and swaps
    it in around each call, so runs are reproducible and nobody else's draws move. Targets come back
    soft (B, C) float; label smoothing stays the loss's job. A batch of odd size is left unmixed.
    `soft_targets` (a second round's pseudo-labels): mix the dense targets as they are (timm's multi-label
    path, exact for one-hot rows too) rather than their argmax.
    """

    def __init__(self, mcfg: ModelConfig, num_classes: int, task: str, seed: int, soft_targets: bool = False):
        self.multi_label = task == "multi-label" or soft_targets
        self.mixup = Mixup(
            mixup_alpha=mcfg.mixup_alpha, cutmix_alpha=mcfg.cutmix_alpha, prob=mcfg.mixup_prob,
            switch_prob=mcfg.mixup_switch_prob, mode="batch", label_smoothing=0.0, num_classes=num_classes,
            multi_label=self.multi_label,
        )
        self.state = np.random.RandomState(seed).get_state()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2:
            return x, y.float()
        outer = np.random.get_state()
        np.random.set_state(self.state)
        try:
            x, targets = self.mixup(x, y.float() if self.multi_label else y.argmax(1))
            self.state = np.random.get_state()
        finally:
            np.random.set_state(outer)
        return x, targets


def make_mixer(mcfg: ModelConfig, num_classes: int, task: str, seed: int, soft_targets: bool = False) -> BatchMixer | None:
    """A BatchMixer when the variant asks for mixup or cutmix, else None."""
    if mcfg.mixup_alpha <= 0 and mcfg.cutmix_alpha <= 0:
        return None
    return BatchMixer(mcfg, num_classes, task, seed, soft_targets)
