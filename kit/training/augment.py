"""Augmentation pipelines on the cache's uint8 single-channel images (albumentations 2.x).

Augmenting uint8 (H, W) arrays before any float conversion keeps the loader cheap; the float
conversion, channel repeat and normalization happen on the device (kit.training.dataset.to_model_input).
The pipeline is seeded per epoch (and per loader worker), so a run is reproducible for a given worker count.
"""

from __future__ import annotations

import albumentations as A
import numpy as np

# strength -> (flip p, max shift fraction, scale range, max rotation deg, brightness/contrast limit, affine p)
_LEVELS: dict[str, tuple[float, float, float, float, float, float]] = {
    "mild": (0.5, 0.03, 0.05, 5.0, 0.10, 0.5),
    "moderate": (0.5, 0.06, 0.10, 10.0, 0.20, 0.7),
    "strong": (0.5, 0.10, 0.20, 15.0, 0.30, 0.9),
}
LEVELS = ("none", *_LEVELS)


def build_augment(level: str) -> A.Compose | None:
    """HorizontalFlip + Affine (shift/scale/rotate) + RandomBrightnessContrast, stronger per level."""
    if level == "none":
        return None
    if level not in _LEVELS:
        raise ValueError(f"unknown augmentation level {level!r}; use one of {LEVELS}")
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
