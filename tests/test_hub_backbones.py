"""`hf-hub:` and `local-dir:` backbones (domain-pretrained checkpoints) and local weights files, never touching
the network when pretrained = false or the weights are a local file."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from kit.config import ModelConfig
from kit.errors import KitError
from kit.models import create_model

CONFIG_JSON = {"architecture": "test_resnet", "num_classes": 14, "pretrained_cfg": {"input_size": [3, 32, 32]}}


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection is refused and recorded; the test fails if there was one (even when
    the code under test turned the refusal into a KitError): the hub must not be asked."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache; `add(repo)` puts a timm config.json there as a download would."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))

    def add(repo: str) -> None:
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
        snapshot = folder / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text(json.dumps(CONFIG_JSON))

    return add


def _weights_file(tmp_path, n_classes: int = 14):
    """A state dict of the architecture (a domain checkpoint stand-in) with a foreign 14-class head."""
    import timm

    source = timm.create_model("test_resnet", pretrained=False, num_classes=n_classes)
    path = tmp_path / "cxr.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    return path, source


def test_hf_hub_backbone_with_a_local_weights_file_never_asks_the_hub(tmp_path, hf_cache, no_network):
    hf_cache("kit-test/cxr-resnet")
    path, source = _weights_file(tmp_path)
    mcfg = ModelConfig(name="cxr", backbone="hf-hub:kit-test/cxr-resnet", pretrained=True, weights=str(path), image_size=32)
    model = create_model(mcfg, num_classes=20)
    assert model.get_classifier().out_features == 20  # the competition's head, the checkpoint's 14-class head dropped
    stem = next(k for k in source.state_dict() if k.endswith("weight"))
    assert torch.equal(model.state_dict()[stem], source.state_dict()[stem])  # backbone tensors came from the file


def test_hf_hub_backbone_without_pretrained_weights_never_asks_the_hub(hf_cache, no_network):
    hf_cache("kit-test/cxr-resnet")
    model = create_model(ModelConfig(name="cxr", backbone="hf-hub:kit-test/cxr-resnet", pretrained=False, image_size=32), num_classes=3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_hf_hub_backbone_not_cached_is_one_line_not_a_download(hf_cache, no_network):
    mcfg = ModelConfig(name="cxr", backbone="hf-hub:kit-test/absent", pretrained=False, image_size=32)
    with pytest.raises(KitError) as err:
        create_model(mcfg, num_classes=3)
    message = str(err.value)
    assert "\n" not in message and "not in the local Hugging Face cache" in message and "local-dir:" in message


def test_local_dir_backbone_with_a_weights_file(tmp_path, no_network):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG_JSON))
    path, _ = _weights_file(tmp_path)
    mcfg = ModelConfig(name="cxr", backbone=f"local-dir:{folder}", pretrained=False, weights=str(path), image_size=32)
    assert create_model(mcfg, num_classes=20).get_classifier().out_features == 20


def test_unknown_plain_name_still_refused():
    with pytest.raises(KitError, match="hf-hub:org/repo"):
        create_model(ModelConfig(name="x", backbone="no_such_net", pretrained=False), num_classes=3)
