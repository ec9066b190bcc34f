"""Pretrained weights: timm's hub when reachable, else a local file or URL, else one line saying how."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from kit.errors import KitError


def hub_reachable(timeout: float = 3.0) -> bool:
    """A fast check so an offline machine fails in seconds, not after minutes of hub retries."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline():
    """Use only weights already in the local Hugging Face cache."""
    import huggingface_hub.constants as hf_constants

    old = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = old


def read_state_dict(source: str, variant: str, config_file: str | Path | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a local .pth/.pt/.bin/.safetensors file or an http(s) URL; messages name
    `config_file` (the variant's TOML, by default configs/models/<variant>.toml)."""
    config_file = config_file or f"configs/models/{variant}.toml"
    if source.startswith(("http://", "https://")):
        try:
            state = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise KitError(
                f"variant '{variant}': cannot download weights from {source} ({type(exc).__name__}); "
                f"download the file elsewhere and set weights = \"/path/to/file\" in {config_file}"
            ) from None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise KitError(
                f"{path}: weights file not found (key 'weights' of {config_file}); "
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


def load_weights(model: nn.Module, source: str, variant: str, config_file: str | Path | None = None) -> list[str]:
    """Load matching tensors; drop those whose shape differs (the head). Returns the dropped keys."""
    config_file = config_file or f"configs/models/{variant}.toml"
    state = read_state_dict(source, variant, config_file)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    dropped = sorted(k for k in state if k not in usable)
    if not usable:
        raise KitError(
            f"{source}: no tensor of this file fits backbone of variant '{variant}' "
            f"(wrong architecture?); check keys 'backbone' and 'weights' in {config_file}"
        )
    model.load_state_dict(usable, strict=False)
    return dropped


# Backbones named by where they come from, as timm takes them: `hf-hub:org/repo` (a Hugging Face repo with
# timm's config.json, e.g. a chest X-ray checkpoint) or `local-dir:/path` (the same files on disk).
HUB_PREFIXES = ("hf-hub:", "local-dir:")


def is_sourced_name(backbone: str) -> bool:
    """`hf-hub:...` or `local-dir:...`: timm reads the architecture from the repo's config.json."""
    return backbone.startswith(HUB_PREFIXES)


def create_sourced_model(backbone: str, pretrained: bool, variant: str, config_file: str | Path, **kwargs) -> nn.Module:
    """timm's model for an `hf-hub:`/`local-dir:` name. Without hub weights (pretrained = false, or a local
    `weights` file) the hub is never asked: the architecture comes from the local Hugging Face cache (or the
    folder), and when it is not there, one line says how to get it."""
    import timm

    if pretrained:
        context = contextlib.nullcontext() if hub_reachable() else hub_offline()
    else:
        context = hub_offline()
    try:
        with context:
            return timm.create_model(backbone, pretrained=pretrained, **kwargs)
    except Exception as exc:  # huggingface_hub / timm raise many types (LocalEntryNotFoundError, OSError, RuntimeError)
        if backbone.startswith("local-dir:"):
            where = f"the folder {backbone.removeprefix('local-dir:')} needs timm's config.json (and the weights file when pretrained = true)"
        elif pretrained:
            where = "its config and weights cannot be downloaded and are not in the local Hugging Face cache"
        else:
            where = ("its architecture (the repo's config.json) is not in the local Hugging Face cache, and with pretrained = false "
                     "or a local weights file the hub is not asked")
        raise KitError(
            f"variant '{variant}': backbone '{backbone}': {where} ({type(exc).__name__}); download the repo once "
            f"(`huggingface-cli download {backbone.split(':', 1)[1]}`) or point backbone = \"local-dir:/path/to/repo\" "
            f"at a copy, in {config_file}"
        ) from None
