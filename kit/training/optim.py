"""The optimizer of a variant: AdamW through timm's `create_optimizer_v2`, fused on CUDA.

Without `layer_decay` this is `torch.optim.AdamW(model.parameters(), lr, weight_decay)` (one group,
weight decay on every parameter: the published recipe). With `layer_decay` (BEiT/ConvNeXt fine-tuning),
timm groups the parameters by depth, scales each group's learning rate by decay^(layers above it) and
leaves 1-D parameters (biases, norms) out of weight decay. timm's own schedulers apply the groups'
`lr_scale`; the kit's torch schedulers do not, so it is applied to each group's lr here, once.
"""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from torch import nn

from kit.config import ModelConfig


def build_optimizer(model: nn.Module, mcfg: ModelConfig, device: torch.device, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW for `model`; `fused` defaults to True on CUDA (one kernel for all parameters), False elsewhere."""
    fused = device.type == "cuda" if fused is None else fused
    optimizer = create_optimizer_v2(
        model,
        "adamw",
        lr=mcfg.lr,
        weight_decay=mcfg.weight_decay,
        filter_bias_and_bn=mcfg.layer_decay is not None,
        layer_decay=mcfg.layer_decay,
        fused=fused,
    )
    for group in optimizer.param_groups:
        group["lr"] = mcfg.lr * group.get("lr_scale", 1.0)
    return optimizer
