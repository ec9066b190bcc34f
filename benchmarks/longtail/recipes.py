"""The recipes the benchmark compares: one model config each, on the same backbone and schedule.

Every recipe starts from BASE and changes only its own keys, so a difference in score is the
recipe's. BASE is the realistic synthetic preset's reference recipe (timm's test_resnet from scratch at
64 px, 5 epochs, cosine schedule, no sampler, no augmentation, label smoothing 0): the preset's
difficulty is calibrated on it, and `ce` (BASE itself) is what every goal is measured against.
"""

from __future__ import annotations

BASE = dict(
    backbone="test_resnet", pretrained=False, image_size=64, epochs=5, batch_size=32, lr=3e-3, weight_decay=1e-4,
    loss="ce", label_smoothing=0.0, augment="none", sampler_power=0.0, scheduler="cosine", warmup_epochs=1,
    dropout=0.1, early_stopping_patience=3, tta_hflip=True,
)


def recipes(epochs: int) -> dict[str, dict]:
    """name -> the keys that differ from BASE (paper in the comment; docs/training.md has the details)."""
    drw_epoch = max(1, round(0.6 * epochs))  # Cao et al. defer re-weighting to epoch 160 of 200; with 5 epochs, the last 2
    return {
        "ce": {},  # plain softmax cross-entropy
        "sqrt_sampler": {"sampler_power": 0.5},  # square-root sampling (the demo variants' choice)
        "logit_adjusted": {"loss": "logit_adjusted", "logit_adjust_tau": 1.0},  # Menon et al. 2021
        "balanced_softmax": {"loss": "balanced_softmax"},  # Ren et al. 2020
        "ldam_drw": {"loss": "ldam", "class_weights": "effective_number", "class_weights_from_epoch": min(drw_epoch, epochs - 1)},  # Cao et al. 2019
        "cb_focal": {"loss": "focal", "focal_gamma": 1.0, "class_weights": "effective_number"},  # Cui et al. 2019
        "crt": {"crt_epochs": 10, "crt_lr": 3e-3},  # Kang et al. 2020: class-balanced classifier re-training
        "tau_norm": {"tau_norm": 1.0},  # Kang et al. 2020: τ-normalised classifier
    }


def model_toml(keys: dict, comment: str) -> str:
    """A variant's TOML text."""

    def fmt(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        return repr(value)

    return f"# {comment}\n" + "".join(f"{k} = {fmt(v)}\n" for k, v in keys.items())
