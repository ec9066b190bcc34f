"""Test-time augmentation: horizontal flip and scales (`tta_scales`), and the keys' validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from kit.config import ModelConfig
from kit.training.dataset import to_model_input
from kit.training.evaluation import predict_logits, rescale_view

CPU = torch.device("cpu")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 12, 12), dtype=np.uint8)


def config(**keys) -> ModelConfig:
    return ModelConfig(name="t", in_chans=1, channels_last=False, amp=False, batch_size=2, **keys)


def test_default_scale_is_the_plain_flip_average():
    model, x = tiny_model().eval(), images()
    got = predict_logits(model, x, np.arange(5), config(), CPU)
    with torch.no_grad():
        t = to_model_input(torch.from_numpy(x)[:, None], 1, False)
        expected = ((model(t) + model(t.flip(-1))) / 2).numpy()
    assert np.array_equal(got, expected)


def test_scales_average_the_rescaled_views():
    model, x = tiny_model().eval(), images()
    scales = [0.9, 1.0, 1.25]
    got = predict_logits(model, x, np.arange(5), config(tta_scales=scales, tta_hflip=False), CPU)
    with torch.no_grad():
        t = to_model_input(torch.from_numpy(x)[:, None], 1, False)
        black = to_model_input(torch.zeros((1, 1, 1, 1), dtype=torch.uint8), 1, False)
        views = [model(t if s == 1.0 else rescale_view(t, s, black)) for s in scales]
    np.testing.assert_allclose(got, torch.stack(views).mean(0).numpy(), rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, predict_logits(model, x, np.arange(5), config(tta_hflip=False), CPU))


def test_rescale_view_zooms_about_the_centre_at_the_same_size():
    x = torch.zeros((1, 1, 8, 8))
    x[..., 2:6, 2:6] = 1.0  # a centred square
    fill = torch.full((1, 1, 1, 1), -1.0)
    zoomed_in = rescale_view(x, 2.0, fill)
    assert zoomed_in.shape == x.shape and zoomed_in[..., 1:7, 1:7].min() > 0.5  # the square fills the middle
    zoomed_out = rescale_view(x, 0.75, fill)
    assert zoomed_out.shape == x.shape
    assert (zoomed_out[..., 0, :] == -1).all() and (zoomed_out[..., :, -1] == -1).all()  # a black border
    assert zoomed_out[..., 3:5, 3:5].min() > 0.5


@pytest.mark.parametrize("scales", [[0.5], [2.1], [float("nan")], [float("inf")], [], [1.0, 0.0]])
def test_invalid_scales_are_refused(scales):
    with pytest.raises(ValidationError, match="tta_scales"):
        ModelConfig(name="t", tta_scales=scales)
