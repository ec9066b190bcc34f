"""The GPU-only branches and their CPU twins: the precision choice for each GPU, bf16 and fp16 (+ GradScaler)
autocast, channels_last and torch.compile run on the CPU; loader workers kept across epochs draw what
fresh ones would; the default path never imports Ray."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from rich.console import Console

from kit.config import ModelConfig
from kit.paths import run_dir
from kit.stages.train import train
from kit.training.device import pick_precision, prepare_model


def quiet() -> Console:
    return Console(quiet=True)


@pytest.mark.parametrize(
    ("device", "amp", "bf16_supported", "dtype", "scaler"),
    [
        ("cuda", True, True, torch.bfloat16, False),  # A100/H100
        ("cuda", True, False, torch.float16, True),  # T4, V100: fp16 needs the GradScaler
        ("cuda", False, True, None, False),
        ("cpu", True, None, None, False),  # automatic mode: float32 on the CPU
        ("cpu", "bf16", None, torch.bfloat16, False),  # the twins: asked for by name, on any device
        ("cpu", "fp16", None, torch.float16, True),
    ],
)
def test_precision_is_chosen_in_one_place(device, amp, bf16_supported, dtype, scaler):
    precision = pick_precision(torch.device(device), amp, bf16_supported=bf16_supported)
    assert precision.dtype == dtype and precision.needs_scaler == scaler


def _preds(cfg, fold: int = 0) -> dict[str, np.ndarray]:
    with np.load(run_dir(cfg, "tiny", fold) / "preds.npz") as z:
        return {k: z[k] for k in ("val_logits", "test_logits")}


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_twin_trains_on_cpu_with_channels_last(amp, tiny_run, tmp_path):
    cfg = tiny_run(tmp_path, amp=amp, channels_last=True, epochs=1, freeze_epochs=0)
    train(cfg, ["tiny"], [0], resume=False, console=quiet())
    out = _preds(cfg)
    assert np.isfinite(out["val_logits"]).all() and out["val_logits"].std() > 0
    checkpoint = torch.load(run_dir(cfg, "tiny", 0) / "last.pt", weights_only=True)
    assert checkpoint["scaler"].get("scale") is not None if amp == "fp16" else not checkpoint["scaler"]  # the GradScaler ran for fp16 only
    plain = tiny_run(tmp_path / "fp32", amp=False, channels_last=True, epochs=1, freeze_epochs=0)
    train(plain, ["tiny"], [0], resume=False, console=quiet())
    assert not np.array_equal(out["val_logits"], _preds(plain)["val_logits"])  # autocast really ran in low precision


def test_channels_last_model_and_input():
    mcfg = ModelConfig(name="t", backbone="chestmnist_cnn", pretrained=False, image_size=16, in_chans=1, cnn_width=8, channels_last=True)
    from kit.models import create_model

    model, step = prepare_model(create_model(mcfg, 3), mcfg)
    assert step is model
    conv = next(p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_compile_twin_trains_and_checkpoints_plain_weights(tiny_run, tmp_path):
    """torch.compile (inductor, gcc) of a tiny model on the CPU: about 15 s here the first time, then cached."""
    cfg = tiny_run(tmp_path, compile=True, epochs=1, freeze_epochs=0, ema_decay=0.0)
    train(cfg, ["tiny"], [0], resume=False, console=quiet())
    checkpoint = torch.load(run_dir(cfg, "tiny", 0) / "last.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in checkpoint["model"])  # loadable without compiling
    assert np.isfinite(_preds(cfg)["val_logits"]).all()


@pytest.mark.slow
def test_persistent_workers_draw_what_fresh_workers_draw_and_resume_identically(tiny_run, tmp_path):
    keys = dict(num_workers=2, augment="strong", epochs=2)
    kept = tiny_run(tmp_path / "kept", **keys)
    train(kept, ["tiny"], [0], resume=False, console=quiet())
    fresh = tiny_run(tmp_path / "fresh", persistent_workers=False, **keys)
    train(fresh, ["tiny"], [0], resume=False, console=quiet())
    resumed = tiny_run(tmp_path / "resumed", **keys)
    train(resumed, ["tiny"], [0], resume=False, stop_after_epoch=1, console=quiet())
    train(resumed, ["tiny"], [0], resume=True, console=quiet())
    a, b, c = (_last_weights(cfg) for cfg in (kept, fresh, resumed))  # after epoch 2 (the best epoch may be the first)
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key


def _last_weights(cfg) -> dict[str, torch.Tensor]:
    return torch.load(run_dir(cfg, "tiny", 0) / "last.pt", weights_only=True)["model"]


@pytest.mark.subprocess
def test_the_default_path_does_not_import_ray():
    code = "import sys, kit.cli, kit.stages.train, kit.executors.local; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_diverging_loss_stops_the_job_with_one_line(tiny_run, tmp_path):
    """The loss is read back every SYNC_EVERY steps (not every step), and a non-finite one still stops the job."""
    from kit.errors import KitError

    cfg = tiny_run(tmp_path, lr=1e30, grad_clip=0.0, freeze_epochs=0, epochs=1)
    with pytest.raises(KitError, match="variant 'tiny': training loss became nan; lower lr"):
        train(cfg, ["tiny"], [0], resume=False, console=quiet())
    assert not (run_dir(cfg, "tiny", 0) / "last.pt").exists()


def test_ray_executor_without_ray_installed_is_one_line(tiny_run, tmp_path, monkeypatch):
    from kit.errors import KitError

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "kit.executors.ray", raising=False)
    with pytest.raises(KitError, match=r"--executor ray: Ray is not installed; run `make setup`"):
        train(tiny_run(tmp_path), ["tiny"], None, resume=False, console=quiet(), executor="ray")
