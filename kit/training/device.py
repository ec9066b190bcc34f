"""Where a job runs and in which precision: the one place that chooses the device."""

from __future__ import annotations

import torch

from kit.config import ModelConfig


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, mcfg: ModelConfig):
    if device.type == "cuda" and mcfg.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)
