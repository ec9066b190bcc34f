"""Model registry, weights loading and augmentation pipelines (CPU, tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kit.config import ModelConfig
from kit.errors import KitError
from kit.models import ChestMNISTCNN, cnn_depth, create_model, load_weights
from kit.training.augment import LEVELS, augment_image, build_augment


def test_timm_builds_a_model_and_runs_forward():
    """Imports timm and builds a model: a torch/torchvision pair that cannot load together fails here."""
    import timm  # noqa: F401

    model = create_model(ModelConfig(name="t", backbone="test_resnet", pretrained=False, image_size=32), num_classes=7)
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 7)


def test_unknown_backbone_is_one_clear_error():
    with pytest.raises(KitError, match="unknown model 'no_such_net'"):
        create_model(ModelConfig(name="t", backbone="no_such_net", pretrained=False), num_classes=3)


@pytest.mark.parametrize("size, blocks", [(28, 2), (64, 2), (128, 3), (224, 4)])
def test_chestmnist_cnn_depth_grows_with_resolution(size, blocks):
    model = ChestMNISTCNN(num_classes=14, image_size=size, in_chans=1, width=8)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert cnn_depth(size) == blocks == len(convs)
    assert model(torch.zeros(2, 1, size, size)).shape == (2, 14)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_is_loaded_and_head_mismatch_dropped(tmp_path, suffix):
    torch.manual_seed(0)
    source = create_model(ModelConfig(name="t", backbone="test_resnet", pretrained=False), num_classes=5)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    torch.manual_seed(1)
    mcfg = ModelConfig(name="t", backbone="test_resnet", pretrained=False, weights=str(path))
    target = create_model(mcfg, num_classes=3)  # another head: its tensors must be dropped, not crash
    got = target.state_dict()
    backbone_keys = [k for k in state if not k.startswith("fc.")]
    assert backbone_keys and all(torch.equal(got[k], state[k]) for k in backbone_keys)
    assert got["fc.weight"].shape == (3, state["fc.weight"].shape[1])
    dropped = load_weights(create_model(ModelConfig(name="t", backbone="test_resnet", pretrained=False), 3), str(path), "t")
    assert set(dropped) == {"fc.weight", "fc.bias"}


def test_missing_weights_file_names_the_path(tmp_path):
    mcfg = ModelConfig(name="v", backbone="test_resnet", pretrained=False, weights=str(tmp_path / "nope.pth"))
    with pytest.raises(KitError, match="nope.pth: weights file not found"):
        create_model(mcfg, num_classes=3)


def test_unreachable_pretrained_weights_give_one_clear_message(monkeypatch):
    import kit.models.weights

    monkeypatch.setattr(kit.models.weights, "hub_reachable", lambda timeout=3.0: False)  # as on this offline machine
    mcfg = ModelConfig(name="resnet_x", backbone="test_resnet", pretrained=True)
    with pytest.raises(KitError) as info:
        create_model(mcfg, num_classes=3)
    message = str(info.value)
    assert "cannot be downloaded" in message
    assert 'weights = "/path/to/file' in message and "configs/models/resnet_x.toml" in message
    assert "pretrained = false" in message
    assert "\n" not in message


def test_cnn_refuses_pretrained_without_weights():
    with pytest.raises(KitError, match="pretrained = false"):
        create_model(ModelConfig(name="c", backbone="chestmnist_cnn", pretrained=True, image_size=28), num_classes=14)


@pytest.mark.parametrize("level", LEVELS)
def test_augment_keeps_uint8_shape_and_is_seeded(level):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    pipeline = build_augment(level)
    a = augment_image(pipeline, image, seed=5)
    b = augment_image(pipeline, image, seed=5)
    assert a.dtype == np.uint8 and a.shape == (32, 32)
    assert np.array_equal(a, b)
    if level == "none":
        assert np.array_equal(a, image)
    else:
        outputs = [augment_image(pipeline, image, seed=s) for s in range(8)]
        assert any(not np.array_equal(o, image) for o in outputs)


def test_augment_strength_grows():
    """Mean absolute change from the original grows from mild to strong (same seeds)."""
    yy, xx = np.mgrid[0:48, 0:48]
    image = ((np.sin(xx / 3.0) + np.cos(yy / 5.0)) * 60 + 128).astype(np.uint8)
    change = {}
    for level in ("mild", "moderate", "strong"):
        pipeline = build_augment(level)
        change[level] = np.mean([np.abs(augment_image(pipeline, image, s).astype(float) - image).mean() for s in range(40)])
    assert change["mild"] < change["moderate"] < change["strong"]
