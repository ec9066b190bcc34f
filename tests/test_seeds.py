"""Seed ensembles: `seeds = [...]` trains a job per (seed, fold); oof/<v>.npz is exactly the seeds' mean.

The tiny competition's seed is 0, so seed 0 of a list is the variant's own job (runs/<v>/fold<k>) and the
other seeds get runs/<v>/seed<s>/fold<k>.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from kit.artifacts import load_oof
from kit.config import load_competition, load_model
from kit.errors import KitError
from kit.stages.calibrate import find_oof_paths
from kit.stages.train import train
from tests.conftest import assert_one_line_error, run_kit

SEEDS = [0, 7]


def quiet() -> Console:
    return Console(quiet=True)


def mean64(arrays: list[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack([a.astype(np.float64) for a in arrays]), axis=0).astype(np.float32)


@pytest.fixture(scope="module")
def seeded(tiny_competition, tmp_path_factory, variant_run):
    """The tiny variant (1 epoch) with seeds [0, 7], trained once for the checks below."""
    cfg = variant_run(tiny_competition, tmp_path_factory.mktemp("seeded"), epochs=1, seeds=SEEDS)
    train(cfg, ["tiny"], None, resume=False, console=quiet())
    return cfg


@pytest.mark.slow
def test_the_variant_oof_is_exactly_the_mean_of_the_per_seed_oofs(seeded):
    oof_dir = seeded.paths.oof
    per_seed = [load_oof(oof_dir / f"tiny.seed{s}.npz") for s in SEEDS]
    mean = load_oof(oof_dir / "tiny.npz")
    assert np.array_equal(mean.logits, mean64([o.logits for o in per_seed]))
    assert np.array_equal(mean.test_logits, mean64([o.test_logits for o in per_seed]))
    assert np.array_equal(mean.ids, per_seed[0].ids) and np.array_equal(mean.fold, per_seed[0].fold)
    meta = json.loads((oof_dir / "tiny.json").read_text())
    assert meta["seeds"] == SEEDS
    assert {s: v["oof"] for s, v in meta["per_seed"].items()} == {str(s): f"tiny.seed{s}.npz" for s in SEEDS}
    assert json.loads((oof_dir / "tiny.seed7.json").read_text())["seed"] == 7


@pytest.mark.slow
def test_seeds_train_different_models_in_their_own_run_folders(seeded):
    a, b = (load_oof(seeded.paths.oof / f"tiny.seed{s}.npz") for s in SEEDS)
    assert not np.allclose(a.logits, b.logits)  # other init and data order
    assert not np.allclose(a.test_logits, b.test_logits)
    runs = seeded.paths.runs / "tiny"
    for k in range(seeded.folds.n_folds):
        assert (runs / f"fold{k}" / "preds.npz").is_file()  # seed 0 = the competition seed: the variant's own job
        assert (runs / "seed7" / f"fold{k}" / "preds.npz").is_file()


@pytest.mark.slow
def test_the_competition_seed_reproduces_the_variant_without_seeds(seeded, tiny_competition, tmp_path, variant_run):
    cfg = variant_run(tiny_competition, tmp_path, epochs=1)
    train(cfg, ["tiny"], None, resume=False, console=quiet())
    plain, seed0 = load_oof(cfg.paths.oof / "tiny.npz"), load_oof(seeded.paths.oof / "tiny.seed0.npz")
    assert np.array_equal(plain.logits, seed0.logits)
    assert np.array_equal(plain.test_logits, seed0.test_logits)


@pytest.mark.slow
def test_discovery_finds_the_variant_not_its_seeds(seeded):
    assert find_oof_paths(seeded) == [seeded.paths.oof / "tiny.npz"]


@pytest.mark.slow
def test_resume_skips_finished_seed_jobs_and_trains_only_an_added_seed(seeded, tiny_competition, tmp_path, variant_run):
    import shutil

    cfg = variant_run(tiny_competition, tmp_path, epochs=1, seeds=[*SEEDS, 9])
    shutil.copytree(seeded.paths.runs, cfg.paths.runs)
    before = {p: p.stat().st_mtime_ns for p in cfg.paths.runs.rglob("preds.npz")}
    console = Console(width=300, record=True, force_terminal=False)
    train(cfg, ["tiny"], None, resume=True, console=console)
    out = console.export_text()
    assert out.count("already done") == len(SEEDS) * cfg.folds.n_folds
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished seeds untouched
    assert (cfg.paths.runs / "tiny" / "seed9" / "fold0" / "preds.npz").is_file()
    three = [load_oof(cfg.paths.oof / f"tiny.seed{s}.npz") for s in [*SEEDS, 9]]
    assert np.array_equal(load_oof(cfg.paths.oof / "tiny.npz").logits, mean64([o.logits for o in three]))
    assert np.array_equal(three[1].logits, load_oof(seeded.paths.oof / "tiny.seed7.npz").logits)


@pytest.mark.slow
def test_missing_seed_folds_write_no_mean(tiny_competition, tmp_path, variant_run):
    cfg = variant_run(tiny_competition, tmp_path, epochs=1, seeds=[3])
    console = Console(width=300, record=True, force_terminal=False)
    train(cfg, ["tiny"], [0], resume=False, console=console)
    out = console.export_text()
    assert "tiny seed 3: folds [1, 2] not trained yet" in out
    assert not (cfg.paths.oof / "tiny.npz").exists() and not (cfg.paths.oof / "tiny.seed3.npz").exists()


@pytest.mark.parametrize(
    "value, needle",
    [("[]", "the list is empty"), ("[1, 2, 1]", "seed 1 is listed twice"), ('["a"]', "key 'seeds.0'"), ("3", "key 'seeds'"),
     ("[1.5]", "key 'seeds.0'")],
)
def test_invalid_seeds_are_one_line(tmp_path, capsys, value, needle):
    models = tmp_path / "models"
    models.mkdir()
    (models / "bad.toml").write_text(f"seeds = {value}\n")
    comp = tmp_path / "c.toml"
    comp.write_text(f'variants = ["bad"]\n[paths]\nmodels = "{models}"\n')
    with pytest.raises(KitError, match="seeds"):
        load_model("bad", load_competition(comp))
    code, _, err = run_kit(["--config", comp, "train", "--variant", "bad"], capsys)
    assert_one_line_error(code, err, "bad.toml", needle)


def test_a_variant_name_like_a_per_seed_file_is_refused(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "resnet.seed1.toml").write_text("epochs = 1\n")
    comp = tmp_path / "c.toml"
    comp.write_text(f'variants = ["resnet.seed1"]\n[paths]\nmodels = "{models}"\n')
    code, _, err = run_kit(["--config", comp, "train", "--variant", "resnet.seed1"], capsys)
    assert_one_line_error(code, err, "resnet.seed1", "per-seed OOF file")
