"""Classifier heads the long-tail recipes need: LDAM's cosine head and swapping a model's head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kit.config import ModelConfig, model_file
from kit.errors import KitError
from kit.models import classifier_of


class NormedLinear(nn.Module):
    """s·cos(feature, w_c): the head of Cao et al. 2019 (LDAM), scaled by s so its outputs are logits.

    Both the features and each class's weight vector are L2-normalised, so no class wins by the norm of
    its weights (what plain training on a long tail does). Initialised as in the authors' code.
    """

    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


def replace_classifier(model: nn.Module, new_head: nn.Module) -> nn.Module:
    """Put `new_head` where the model's classifier is (timm's `get_classifier()` then returns it)."""
    old = classifier_of(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new_head)
                return model
    raise KitError(f"{type(model).__name__}: its classifier is not a submodule; cannot replace the head")


def use_cosine_head(model: nn.Module, mcfg: ModelConfig) -> nn.Module:
    """Swap the linear classifier for LDAM's :class:`NormedLinear` (scale `ldam_scale`) with the same shape."""
    old = classifier_of(model)
    if not isinstance(old, nn.Linear):
        raise KitError(
            f"{model_file(mcfg)}: key 'loss': \"ldam\" needs a linear classifier head; backbone '{mcfg.backbone}' has {type(old).__name__}"
        )
    return replace_classifier(model, NormedLinear(old.in_features, old.out_features, mcfg.ldam_scale).to(old.weight.device))
