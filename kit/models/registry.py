"""Model registry à la timm: `register_model(name)` for the kit's own networks, timm for every other name.

The kit's own backbones are a `kit.registry.Registry` (`BACKBONES`) of `Backbone` entries: the builder and
what the config checks ask of it (whether `drop_path_rate` and `layer_decay` apply), so `kit.config` asks the
registry instead of naming a backbone.

`create_model(mcfg, num_classes)` is the one way a variant's network is built: a registered kit model
(the ChestMNIST CNN) or any `timm.list_models()` name. Weights come from timm's hub
(`pretrained = true`), a local file or URL (`weights = "..."`), or not at all (`pretrained = false`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from kit.config import ModelConfig, model_file
from kit.errors import KitError
from kit.registry import Registry


@dataclass(frozen=True)
class Backbone:
    """One of the kit's own networks: `build(mcfg, num_classes)` and the timm options it takes."""

    build: Callable[[ModelConfig, int], nn.Module]
    drop_path: bool = False  # has residual blocks for stochastic depth (`drop_path_rate`)
    layer_decay: bool = False  # has layer groups for timm's layer-wise lr decay (`layer_decay`)


BACKBONES: Registry[Backbone] = Registry("backbone")


def register_model(name: str, *, drop_path: bool = False, layer_decay: bool = False):
    """Decorator: `fn(mcfg, num_classes) -> nn.Module` becomes the backbone `name` (a second registration
    replaces the first, loudly, as timm's register_model does)."""

    def wrap(fn):
        BACKBONES.add(name, Backbone(fn, drop_path=drop_path, layer_decay=layer_decay))
        return fn

    return wrap


def list_models() -> list[str]:
    """The kit's own backbones (timm's are listed by `timm.list_models()`)."""
    return sorted(BACKBONES.names())


def kit_backbone(name: str) -> Backbone | None:
    """The kit's own backbone `name`, or None for a timm (or hub, local-dir) name."""
    return BACKBONES.get(name) if name in BACKBONES else None


def create_model(mcfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the variant's network with `num_classes` outputs and load its weights if asked."""
    from kit.models.weights import load_weights

    if mcfg.backbone in BACKBONES:
        model = BACKBONES.get(mcfg.backbone).build(mcfg, num_classes)
        if mcfg.pretrained and not mcfg.weights:
            raise KitError(
                f"variant '{mcfg.name}': {mcfg.backbone} has no published pretrained weights; "
                f"set pretrained = false (or weights = \"/path/to/file\") in {model_file(mcfg)}"
            )
    else:
        model = _timm_model(mcfg, num_classes, pretrained=mcfg.pretrained and not mcfg.weights)
    if mcfg.weights:
        load_weights(model, mcfg.weights, mcfg.name, model_file(mcfg))
    return model


def classifier_of(model: nn.Module) -> nn.Module:
    """The head (what stays trainable while the backbone is frozen)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    raise KitError(f"{type(model).__name__}: cannot find its classifier head for staged fine-tuning")


def _timm_model(mcfg: ModelConfig, num_classes: int, pretrained: bool) -> nn.Module:
    import timm

    from kit.models.weights import create_sourced_model, hub_offline, hub_reachable, is_sourced_name

    if not timm.is_model(mcfg.backbone) and not is_sourced_name(mcfg.backbone):
        raise KitError(
            f"{model_file(mcfg)}: key 'backbone': unknown model '{mcfg.backbone}'; "
            f"use one of {list_models()}, a name from timm.list_models(), or hf-hub:org/repo / local-dir:/path"
        )
    kwargs = dict(num_classes=num_classes, drop_rate=mcfg.dropout, in_chans=mcfg.in_chans)
    if mcfg.drop_path_rate > 0:  # stochastic depth; passed only when asked, as not every timm family takes it
        kwargs["drop_path_rate"] = mcfg.drop_path_rate
    if is_sourced_name(mcfg.backbone):  # hf-hub:/local-dir: (contact helper's block: kit.models.weights)
        return create_sourced_model(mcfg.backbone, pretrained, mcfg.name, model_file(mcfg), **kwargs)
    if not pretrained:
        return timm.create_model(mcfg.backbone, pretrained=False, **kwargs)
    offline = contextlib.nullcontext() if hub_reachable() else hub_offline()
    try:
        with offline:
            return timm.create_model(mcfg.backbone, pretrained=True, **kwargs)
    except Exception as exc:  # timm/hf raise many types (OSError, RuntimeError, HF errors)
        raise KitError(
            f"variant '{mcfg.name}': pretrained weights for '{mcfg.backbone}' cannot be downloaded "
            f"({type(exc).__name__}); on an offline machine put weights = \"/path/to/file.safetensors\" "
            f"(or .pth) in {model_file(mcfg)}, or set pretrained = false"
        ) from None
