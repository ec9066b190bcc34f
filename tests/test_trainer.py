"""The one training core (kit.training.trainer): doctor, train_fold and the benchmark build and step through it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from kit.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
# what only the training core may put together (kit.training.trainer): a caller importing one builds a trainer by hand
SET_UP = {"build_optimizer", "make_loss", "prepare_model", "WeightEMA", "use_cosine_head", "make_scheduler"}


def _imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}


@pytest.mark.parametrize("path", ["kit/stages/doctor.py", "kit/training/loop.py"])  # (bench_train's plain loop uses the kit's loss on purpose)
def test_no_training_set_up_outside_the_core(path):
    assert not _imported_names(ROOT / path) & SET_UP, f"{path} builds part of a trainer itself; use kit.training.trainer"


@pytest.mark.slow
def test_doctor_times_the_step_train_fold_runs(tiny_run, tmp_path, monkeypatch):
    """doctor's timed step and a training job's step are one function, `Trainer.train_step`, on trainers built
    by the same `build_trainer`; the variant's mixing, accumulation and clipping are in what doctor times."""
    from kit.stages import doctor
    from kit.stages.train import train
    from kit.training import trainer as core

    calls: list[tuple[str, Trainer, bool]] = []
    built: list[str] = []
    real_step, real_build = Trainer.train_step, core.build_trainer

    def step(self, x, y, **kw):
        calls.append((caller, self, kw.get("mixer") is not None))
        return real_step(self, x, y, **kw)

    def build(*args, **kw):
        built.append(caller)
        return real_build(*args, **kw)

    monkeypatch.setattr(Trainer, "train_step", step)
    monkeypatch.setattr(core, "build_trainer", build)
    monkeypatch.setattr(doctor, "build_trainer", build)
    monkeypatch.setattr("kit.training.loop.build_trainer", build)
    cfg = tiny_run(tmp_path, epochs=1, mixup_alpha=0.2, grad_accum_steps=2)
    from kit.config import load_model
    from kit.data.sources import open_source

    mcfg, source = load_model("tiny", cfg), open_source(cfg)
    caller = "doctor"
    images = doctor._real_images(source.train, mcfg.image_size, 8)
    doctor._measure_steps(mcfg, images, doctor._labels_for(source, 8), source.task, len(source.classes), torch.device("cpu"), channels_last=False)
    caller = "train"
    train(cfg, ["tiny"], [0], resume=False, console=Console(quiet=True))
    assert built == ["doctor", "train"]
    by = {who: [c for c in calls if c[0] == who] for who in ("doctor", "train")}
    assert by["doctor"] and by["train"]
    assert all(mixed for _, _, mixed in calls)  # the variant's mixup is in both
    assert all(type(t) is Trainer and t.mcfg.grad_accum_steps == 2 for _, t, _ in calls)


@pytest.mark.slow
def test_load_trainer_predicts_what_the_job_wrote(tiny_run, tmp_path):
    """`load_trainer` (the inference entry point) on a fold's best.pt gives the held-out logits in its preds.npz."""
    from kit.config import load_model
    from kit.data.cache import cached_images
    from kit.data.folds import load_fold_assignment
    from kit.data.sources import open_source
    from kit.paths import run_dir
    from kit.stages.train import train
    from kit.training.trainer import load_trainer

    cfg = tiny_run(tmp_path, epochs=1, ema_decay=0.5)
    train(cfg, ["tiny"], [0], resume=False, console=Console(quiet=True))
    mcfg, source = load_model("tiny", cfg), open_source(cfg)
    preds = np.load(run_dir(cfg, "tiny", 0) / "preds.npz")
    trainer = load_trainer(mcfg, n_classes=len(source.classes), checkpoint=run_dir(cfg, "tiny", 0) / "best.pt", device=torch.device("cpu"))
    assert trainer.ema is not None and trainer.eval_model is trainer.ema.module
    rows = np.flatnonzero(load_fold_assignment(cfg, source.train.ids) == 0)
    images = cached_images(source.train, mcfg.image_size, cfg.paths.cache).images
    np.testing.assert_allclose(trainer.predict(images, rows), preds["val_logits"], rtol=1e-5, atol=1e-5)
    test_images = cached_images(source.test, mcfg.image_size, cfg.paths.cache).images
    np.testing.assert_allclose(trainer.predict(test_images, np.arange(len(source.test))), preds["test_logits"], rtol=1e-5, atol=1e-5)
