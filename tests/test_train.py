"""K-fold trainer on tiny data (CPU): OOF contract, resume, sampler, losses, bad images, multi-label."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from kit.artifacts import check_against_folds, load_oof
from kit.config import ModelConfig, load_competition
from kit.data.sources import open_source
from kit.errors import KitError
from kit.models import create_model
from kit.stages.train import train
from kit.training.dataset import to_model_input
from kit.training.losses import bce_pos_weight, loss_prior, make_loss
from kit.training.samplers import sample_weights, sampler_prior


def quiet() -> Console:
    return Console(quiet=True)


@pytest.fixture(scope="module")
def trained(tiny_grid):
    """One uninterrupted 3-fold run of the tiny variant: the session's shared grid (read only)."""
    return tiny_grid.cfg


def test_each_train_id_once_in_oof_from_its_own_fold(trained):
    cfg = trained
    oof = load_oof(cfg.paths.oof / "tiny.npz")
    source = open_source(cfg)
    assert sorted(oof.ids.tolist()) == sorted(source.train.ids.tolist())
    assert len(set(oof.ids.tolist())) == len(oof.ids)
    check_against_folds(oof, cfg.folds.path, "oof")  # fold array == folds.csv
    folds = pd.read_csv(cfg.folds.path, dtype={"id": str})
    position = {i: r for r, i in enumerate(oof.ids.tolist())}
    for k in range(cfg.folds.n_folds):
        with np.load(cfg.paths.runs / "tiny" / f"fold{k}" / "preds.npz") as z:
            assert int(z["fold"]) == k
            assert sorted(z["val_ids"].tolist()) == sorted(folds.loc[folds.fold == k, "id"].tolist())
            rows = [position[i] for i in z["val_ids"].tolist()]
            assert np.array_equal(oof.logits[rows], z["val_logits"])  # the row came from fold k's model
            assert np.array_equal(oof.test_logits[k], z["test_logits"])
    assert oof.test_logits.shape == (cfg.folds.n_folds, len(source.test), len(source.classes))
    assert np.isfinite(oof.logits).all()
    assert (cfg.paths.runs / "tiny" / "fold0" / "curves.png").stat().st_size > 1000
    metrics = pd.read_csv(cfg.paths.runs / "tiny" / "fold0" / "metrics.csv")
    assert {"val_score", "trivial_baseline", "val_macro_f1", "val_auc", "val_loss", "images_per_s"} <= set(metrics.columns)
    assert len(metrics) == 2


def test_train_prior_in_oof_is_the_sampler_distribution(trained):
    cfg = trained
    oof = load_oof(cfg.paths.oof / "tiny.npz")
    source = open_source(cfg)
    counts = source.train.labels.sum(axis=0)
    expected = counts ** 0.5 / (counts ** 0.5).sum()  # power 0.5: ∝ n_c^(1-p), roughly (folds hold ~2/3)
    assert np.corrcoef(oof.train_prior, expected)[0, 1] > 0.98
    assert abs(oof.train_prior.sum() - 1) < 1e-9


def test_resume_after_interruption_gives_identical_oof(trained, tiny_competition, tmp_path, variant_run, monkeypatch):
    from kit.timings import read

    cfg = variant_run(tiny_competition, tmp_path)
    monkeypatch.setenv("KIT_TIMINGS", str(tmp_path / "timings.jsonl"))
    train(cfg, ["tiny"], None, resume=False, stop_after_epoch=1, console=quiet(), cpus_per_job=1)  # the grid's threads
    assert not (cfg.paths.oof / "tiny.npz").exists()  # interrupted: nothing assembled
    assert read(tmp_path / "timings.jsonl") == []  # nor a variant's train time
    assert not (cfg.paths.runs / "tiny" / "fold0" / "preds.npz").exists()
    assert (cfg.paths.runs / "tiny" / "fold0" / "last.pt").exists()
    train(cfg, ["tiny"], None, resume=True, console=quiet(), cpus_per_job=1)
    times = read(tmp_path / "timings.jsonl")
    assert [(t["stage"], t["command"]) for t in times] == [("train tiny", "3 jobs, their wall times summed")] and times[0]["seconds"] > 0
    resumed, full = load_oof(cfg.paths.oof / "tiny.npz"), load_oof(trained.paths.oof / "tiny.npz")
    assert np.array_equal(resumed.logits, full.logits)
    assert np.array_equal(resumed.test_logits, full.test_logits)
    assert np.array_equal(resumed.train_prior, full.train_prior)


def test_missing_folds_are_named_and_no_oof_written(tiny_competition, tmp_path, capsys, variant_run):
    cfg = variant_run(tiny_competition, tmp_path, epochs=1)
    train(cfg, ["tiny"], [1], resume=False, console=Console(force_terminal=False, width=300))
    out = capsys.readouterr().out
    assert "folds [0, 2] not trained yet" in out
    assert not (cfg.paths.oof / "tiny.npz").exists()
    assert (cfg.paths.runs / "tiny" / "fold1" / "preds.npz").exists()


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_sampler_draws_follow_the_power(power):
    counts = np.array([400, 100, 25, 5])
    labels = np.repeat(np.eye(4, dtype=np.uint8), counts, axis=0)
    weights = sample_weights(labels, power)
    expected = counts ** (1 - power) / (counts ** (1 - power)).sum()
    generator = torch.Generator().manual_seed(0)
    draws = torch.multinomial(torch.as_tensor(weights), 200_000, replacement=True, generator=generator).numpy()
    empirical = np.bincount(labels.argmax(1)[draws], minlength=4) / len(draws)
    np.testing.assert_allclose(empirical, expected, atol=0.01)
    np.testing.assert_allclose(sampler_prior(labels, weights, "multi-class"), expected, atol=0.01)


def test_no_sampler_prior_is_the_class_frequency():
    counts = np.array([300, 60, 40])
    labels = np.repeat(np.eye(3, dtype=np.uint8), counts, axis=0)
    np.testing.assert_allclose(sampler_prior(labels, sample_weights(labels, 0.0), "multi-class"), counts / counts.sum(), atol=0.002)


def test_bce_pos_weight_shifts_the_reported_prior():
    labels = np.zeros((100, 2), dtype=np.uint8)
    labels[:5, 0] = 1
    labels[:50, 1] = 1
    pw = bce_pos_weight(labels, clip=10.0)
    np.testing.assert_allclose(pw, [10.0, 1.0])
    q = np.array([0.05, 0.5])
    shifted = loss_prior(q, ModelConfig(loss="bce"), pw)
    np.testing.assert_allclose(shifted, [0.5 / (0.5 + 0.95), 0.5])  # odds × pos_weight


@pytest.mark.parametrize(
    "loss, task", [("ce", "multi-class"), ("focal", "multi-class"), ("focal", "multi-label"), ("bce", "multi-label"), ("bce", "multi-class")]
)
def test_each_loss_trains_one_step(loss, task):
    torch.manual_seed(0)
    mcfg = ModelConfig(name="t", backbone="chestmnist_cnn", pretrained=False, image_size=16, in_chans=1, cnn_width=8, loss=loss, label_smoothing=0.1)
    model = create_model(mcfg, num_classes=4)
    rng = np.random.default_rng(0)
    if task == "multi-class":
        y = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 16)]
    else:
        y = (rng.random((16, 4)) < 0.3).astype(np.uint8)
    loss_fn = make_loss(mcfg, task, y, torch.device("cpu"))
    x = to_model_input(torch.from_numpy(rng.integers(0, 256, (16, 1, 16, 16), dtype=np.uint8)), 1, True)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    value = loss_fn(model(x), torch.from_numpy(y))
    value.backward()
    optimizer.step()
    assert torch.isfinite(value) and value.item() > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_ce_on_multi_label_is_refused():
    with pytest.raises(KitError, match="'loss'"):
        make_loss(ModelConfig(name="t", loss="ce"), "multi-label", np.zeros((4, 3)), torch.device("cpu"))


def test_to_model_input_normalizes_on_device():
    x = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    out = to_model_input(x, 3, channels_last=True)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-5)


def _copy_with_corrupt_image(tiny, tmp_path: Path, on_bad_image: str):
    data = tmp_path / "data"
    shutil.copytree(tiny.cfg.data.dir, data)
    source = open_source(tiny.cfg)
    victim = str(source.train.ids[7])
    png = data / tiny.cfg.data.train_images.format(id=victim)
    png.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    text = tiny.config_path.read_text().replace(str(tiny.cfg.data.dir), str(data))
    text = text.replace(str(tiny.root / "cache"), str(tmp_path / "cache"))
    text = text.replace(f'dir = "{data}"', f'dir = "{data}"\non_bad_image = "{on_bad_image}"')
    (tmp_path / "competition.toml").write_text(text)
    return load_competition(tmp_path / "competition.toml"), victim, png


def test_corrupt_image_stops_with_the_file_named(tiny_competition, tmp_path, variant_run):
    cfg, _, png = _copy_with_corrupt_image(tiny_competition, tmp_path, "stop")
    cfg = variant_run(type(tiny_competition)(tmp_path, tmp_path / "competition.toml", cfg), tmp_path, epochs=1)
    with pytest.raises(KitError, match=png.name):
        train(cfg, ["tiny"], [0], resume=False, console=quiet())
    assert not (cfg.paths.runs / "tiny" / "fold0" / "preds.npz").exists()


@pytest.mark.slow
def test_corrupt_image_skipped_is_listed_and_kept_out_of_training(tiny_competition, tmp_path, capsys, variant_run):
    cfg, victim, _ = _copy_with_corrupt_image(tiny_competition, tmp_path, "skip")
    cfg = variant_run(type(tiny_competition)(tmp_path, tmp_path / "competition.toml", cfg), tmp_path, epochs=1)
    train(cfg, ["tiny"], None, resume=False, console=Console(force_terminal=False, width=400))
    out = capsys.readouterr().out
    assert "unreadable train images skipped" in out and victim in out
    oof = load_oof(cfg.paths.oof / "tiny.npz")
    assert victim in oof.ids.tolist()  # its held-out row is predicted (from a blank image), never dropped silently
    import json

    meta = json.loads((cfg.paths.oof / "tiny.json").read_text())
    victim_fold = int(oof.fold[oof.ids.tolist().index(victim)])
    trained_on = [f["n_train"] for f in meta["folds"]]
    full = [int((oof.fold != k).sum()) for k in range(cfg.folds.n_folds)]
    assert [t - f for t, f in zip(trained_on, full)] == [0 if k == victim_fold else -1 for k in range(cfg.folds.n_folds)]


@pytest.mark.slow
def test_multi_label_end_to_end_on_medmnist_npz(tiny_chestmnist, tmp_path, variant_run):
    cfg = variant_run(
        tiny_chestmnist, tmp_path, name="cnn_ml", image_size=28, loss="bce", sampler_power=0.0, freeze_epochs=0, ema_decay=0.0, scheduler="plateau"
    )
    train(cfg, ["cnn_ml"], None, resume=False, console=quiet())
    oof = load_oof(cfg.paths.oof / "cnn_ml.npz")
    source = open_source(cfg)
    assert oof.logits.shape == (len(source.train), 14)
    assert oof.test_logits.shape == (cfg.folds.n_folds, len(source.test), 14)
    assert ((oof.train_prior > 0) & (oof.train_prior < 1)).all()  # per-class positive rates, not a distribution
    check_against_folds(oof, cfg.folds.path, "oof")


def test_cli_train_rejects_a_bad_fold(tiny_competition, tmp_path, variant_run):
    from kit.cli import app

    variant_run(tiny_competition, tmp_path)
    result = CliRunner().invoke(app, ["--config", str(tiny_competition.config_path), "train", "--variant", "cnn_demo", "--fold", "x"])
    assert result.exit_code != 0
    assert isinstance(result.exception, KitError) and "--fold" in str(result.exception)
