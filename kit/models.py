"""Model registry à la timm: one `create_model(mcfg, num_classes)` for every variant.

`backbone = "chestmnist_cnn"` builds the resolution-adaptive CNN of DESIGN §3; any other name is
handed to `timm.create_model`. Weights come from timm's hub (`pretrained = true`), from a local
file or URL (`weights = "..."`), or not at all (`pretrained = false`); when none of these works the
user gets one line saying how to supply them, never a 50-second retry loop and a traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from kit.config import ModelConfig
from kit.errors import KitError

CNN_NAME = "chestmnist_cnn"


class ChestMNISTCNN(nn.Module):
    """conv-BN-ReLU-maxpool-dropout blocks whose count grows with resolution (DESIGN §3).

    Two blocks at 28/64 px, three at 128, four at 224 and above; global average + max pooling,
    dropout and a linear head. Small on purpose: the published ChestMNIST study found deeper is not better.
    """

    def __init__(self, num_classes: int, image_size: int, in_chans: int = 3, drop_rate: float = 0.2, width: int = 32):
        super().__init__()
        n_blocks = cnn_depth(image_size)
        layers: list[nn.Module] = []
        chans = in_chans
        for i in range(n_blocks):
            out = width * 2**i
            layers += [
                nn.Conv2d(chans, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout2d(drop_rate / 2),
            ]
            chans = out
        self.features = nn.Sequential(*layers)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(2 * chans, num_classes)
        self.num_features = 2 * chans

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # global average and max pooling side by side: the average sees diffuse changes (a bigger
        # heart, darker lungs), the max a small bright or dark finding anywhere in the image
        x = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.fc(self.head_drop(x))


def cnn_depth(image_size: int) -> int:
    """Number of conv blocks for a resolution: 2 up to 64 px, 3 up to 128 px, 4 above."""
    if image_size <= 64:
        return 2
    if image_size <= 128:
        return 3
    return 4


def create_model(mcfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the variant's network with `num_classes` outputs and load its weights if asked."""
    if mcfg.backbone == CNN_NAME:
        model: nn.Module = ChestMNISTCNN(num_classes, mcfg.image_size, mcfg.in_chans, mcfg.dropout, mcfg.cnn_width)
        if mcfg.pretrained and not mcfg.weights:
            raise KitError(
                f"variant '{mcfg.name}': {CNN_NAME} has no published pretrained weights; "
                f"set pretrained = false (or weights = \"/path/to/file\") in configs/models/{mcfg.name}.toml"
            )
    else:
        model = _timm_model(mcfg, num_classes, pretrained=mcfg.pretrained and not mcfg.weights)
    if mcfg.weights:
        load_weights(model, mcfg.weights, mcfg.name)
    return model


def classifier_of(model: nn.Module) -> nn.Module:
    """The head (what stays trainable while the backbone is frozen)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    raise KitError(f"{type(model).__name__}: cannot find its classifier head for staged fine-tuning")


def _timm_model(mcfg: ModelConfig, num_classes: int, pretrained: bool) -> nn.Module:
    import timm

    if not timm.is_model(mcfg.backbone):
        raise KitError(
            f"configs/models/{mcfg.name}.toml: key 'backbone': unknown model '{mcfg.backbone}'; "
            f"use '{CNN_NAME}' or a name from timm.list_models()"
        )
    kwargs = dict(num_classes=num_classes, drop_rate=mcfg.dropout, in_chans=mcfg.in_chans)
    if not pretrained:
        return timm.create_model(mcfg.backbone, pretrained=False, **kwargs)
    offline = contextlib.nullcontext() if _hub_reachable() else _hub_offline()
    try:
        with offline:
            return timm.create_model(mcfg.backbone, pretrained=True, **kwargs)
    except Exception as exc:  # timm/hf raise many types (OSError, RuntimeError, HF errors)
        raise KitError(
            f"variant '{mcfg.name}': pretrained weights for '{mcfg.backbone}' cannot be downloaded "
            f"({type(exc).__name__}); on an offline machine put weights = \"/path/to/file.safetensors\" "
            f"(or .pth) in configs/models/{mcfg.name}.toml, or set pretrained = false"
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A fast check so an offline machine fails in seconds, not after minutes of hub retries."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline():
    """Use only weights already in the local Hugging Face cache."""
    import huggingface_hub.constants as hf_constants

    old = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = old


def read_state_dict(source: str, variant: str) -> dict[str, torch.Tensor]:
    """A state dict from a local .pth/.pt/.bin/.safetensors file or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        try:
            state = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise KitError(
                f"variant '{variant}': cannot download weights from {source} ({type(exc).__name__}); "
                f"download the file elsewhere and set weights = \"/path/to/file\" in configs/models/{variant}.toml"
            ) from None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise KitError(
                f"{path}: weights file not found (key 'weights' of configs/models/{variant}.toml); "
                "fix the path or set pretrained = false"
            )
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path), device="cpu")
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise KitError(f"{path}: cannot read weights ({type(exc).__name__}: {exc}); expected a state dict") from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise KitError(f"{source}: weights file holds a {type(state).__name__}, expected a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, source: str, variant: str) -> list[str]:
    """Load matching tensors; drop those whose shape differs (the head). Returns the dropped keys."""
    state = read_state_dict(source, variant)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    dropped = sorted(k for k in state if k not in usable)
    if not usable:
        raise KitError(
            f"{source}: no tensor of this file fits backbone of variant '{variant}' "
            "(wrong architecture?); check key 'backbone' and 'weights'"
        )
    model.load_state_dict(usable, strict=False)
    return dropped
