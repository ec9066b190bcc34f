"""`kit predict`: the trained ensemble re-run from its checkpoints equals what training and `kit blend` wrote.

Tiny runs (16-28 px, one or two epochs, 3 folds) of a one-hot, a label-column and a multi-label competition;
predict on the config's own test set must give the OOF files' test logits exactly and `kit blend`'s CSV byte for
byte; every missing or mismatched piece is refused with one line naming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from kit.artifacts import load_oof
from kit.config import load_competition
from kit.data.sources import open_source
from kit.errors import KitError
from kit.inference.predict import TimeBudget, blend_plan, run_plan
from kit.stages.blend import blend
from kit.stages.predict import predict
from kit.stages.train import train
from tests.conftest import TINY_VARIANT, TinyCompetition, assert_one_line_error, kaggle_copy, model_toml, run_kit

pytestmark = pytest.mark.slow


def quiet() -> Console:
    return Console(quiet=True)


def _train_and_blend(tiny: TinyCompetition, tmp_path: Path, variant_run, second: dict | None = None, **keys):
    cfg = variant_run(tiny, tmp_path, name="tiny", **keys)
    names = ["tiny"]
    if second is not None:
        (tmp_path / "models" / "tiny2.toml").write_text(model_toml({**TINY_VARIANT, **keys, **second}))
        names.append("tiny2")
    cfg = cfg.model_copy(update={"variants": names, "paths": cfg.paths.model_copy(update={"submissions": tmp_path / "submissions"})})
    train(cfg, names, None, resume=False, console=quiet())
    blend(cfg, names, "b", console=quiet())
    return cfg


def _assert_predict_is_blend(cfg, tmp_path: Path) -> None:
    """Logits equal every member's OOF test_logits; the CSV equals blend's byte for byte."""
    plan = blend_plan(cfg, "b")
    split = open_source(cfg).test
    _, logits = run_plan(plan, split, cfg, console=quiet())
    for member in plan.blend.members:
        oof = load_oof(cfg.paths.oof / f"{member}.npz")
        assert logits[member].dtype == np.float32
        assert np.array_equal(logits[member], oof.test_logits), member
    out = predict(cfg, name="b", output=tmp_path / "predicted.csv", console=quiet())
    assert out.read_bytes() == (cfg.paths.submissions / "b.csv").read_bytes()


@pytest.fixture(scope="module")
def one_hot_run(tiny_competition, tmp_path_factory, variant_run):
    """Two members: a plain one, and one whose head is τ-normalised and whose TTA rescales (its own preprocessing)."""
    tmp = tmp_path_factory.mktemp("predict_one_hot")
    return _train_and_blend(tiny_competition, tmp, variant_run, second=dict(tau_norm=1.0, tta_scales=[1.0, 1.25], tta_hflip=False,
                                                                            sampler_power=0.0), epochs=2)


def test_predict_equals_blend_one_hot(one_hot_run, tmp_path):
    _assert_predict_is_blend(one_hot_run, tmp_path)
    assert (one_hot_run.paths.runs / "tiny2" / "fold0" / "decoupled.pt").is_file()  # τ-norm: the re-balanced head is what ran


def test_predict_equals_blend_label_column(tiny_competition, tmp_path, variant_run):
    config = kaggle_copy(tiny_competition, tmp_path, label_column="label")
    data = tmp_path / "data"
    classes = pd.read_csv(data / "sample_submission.csv").columns[1:].tolist()
    train_csv = pd.read_csv(data / "train.csv", dtype={"id": str})
    pd.DataFrame({"id": train_csv["id"], "patient_id": train_csv["patient_id"],
                  "label": np.asarray(classes)[train_csv[classes].to_numpy().argmax(axis=1)]}).to_csv(data / "train.csv", index=False)
    sample = pd.read_csv(data / "sample_submission.csv", dtype={"id": str})
    pd.DataFrame({"id": sample["id"], "label": classes[0]}).to_csv(data / "sample_submission.csv", index=False)
    tiny = TinyCompetition(tmp_path, config, load_competition(config))
    cfg = _train_and_blend(tiny, tmp_path, variant_run, epochs=2)
    assert pd.read_csv(cfg.paths.submissions / "b.csv").columns.tolist() == ["id", "label"]
    _assert_predict_is_blend(cfg, tmp_path)


def test_predict_equals_blend_multi_label(tiny_chestmnist, tmp_path, variant_run):
    """The second member has two seeds (seed 0 shares the variant's folder, seed 1 has its own): per fold, their mean."""
    cfg = _train_and_blend(tiny_chestmnist, tmp_path, variant_run, second=dict(tta_hflip=False, seeds=[0, 1]), image_size=28, loss="bce",
                           sampler_power=0.0, freeze_epochs=0, ema_decay=0.0, scheduler="plateau", epochs=1)
    _assert_predict_is_blend(cfg, tmp_path)
    assert (cfg.paths.runs / "tiny2" / "seed1" / "fold0" / "best.pt").is_file()


def test_predict_on_a_folder_of_new_images(one_hot_run, tmp_path):
    """A folder of some test images (new file names): each row is the blend's row for that image."""
    cfg = one_hot_run
    source = open_source(cfg)
    picked = list(range(0, len(source.test), 7))
    folder = tmp_path / "new"
    folder.mkdir()
    for k in picked:
        shutil.copy2(source.test.paths[k], folder / f"new_{source.test.ids[k]}.png")
    out = predict(cfg, folder, name="b", output=tmp_path / "new.csv", console=quiet())
    got = pd.read_csv(out, dtype=str)
    blended = pd.read_csv(cfg.paths.submissions / "b.csv", dtype=str).set_index("id")
    assert got.columns.tolist() == ["id", *blended.columns]
    assert len(got) == len(picked)
    for _, row in got.iterrows():
        assert row.drop("id").tolist() == blended.loc[row["id"].removeprefix("new_")].tolist()
    ids = tmp_path / "ids.csv"  # an ids CSV picks and orders the rows
    pd.DataFrame({"id": [f"new_{source.test.ids[k]}" for k in reversed(picked)]}).to_csv(ids, index=False)
    out = predict(cfg, folder, ids=ids, name="b", output=tmp_path / "ids.csv.out", console=quiet())
    assert pd.read_csv(out, dtype=str)["id"].tolist() == [f"new_{source.test.ids[k]}" for k in reversed(picked)]


def test_variant_alone_under_its_calibrated_decision(one_hot_run, tmp_path):
    """--variant: the fold models' calibrated probabilities averaged, then the variant's own rule (kit calibrate)."""
    from kit.decision.rules import Decision, decide_indices
    from kit.stages.calibrate import calibrate

    cfg = one_hot_run
    calibrate(cfg, [cfg.paths.oof / "tiny.npz"], console=quiet())
    out = predict(cfg, variant="tiny", output=tmp_path / "v.csv", console=quiet())
    decision = Decision.load(cfg.paths.oof / "tiny.decision.json")
    oof = load_oof(cfg.paths.oof / "tiny.npz")
    mean = np.log(np.mean([np.exp(decision.log_probs(z)) for z in oof.test_logits], axis=0))
    weights = decision.metric.bayes_weights(decision.target_prior) if decision.bayes else None
    want = decide_indices(mean, np.zeros(len(decision.classes)) if decision.offsets is None else decision.offsets, weights)
    frame = pd.read_csv(out, dtype=str).set_index("id").loc[oof.test_ids.astype(str)]
    got = frame[list(decision.classes)].astype(int).to_numpy().argmax(axis=1)
    assert (got == want).mean() > 0.98  # the same rule on the same mixture (float rounding may flip a near-tie)


# --- refusals: one line naming the missing or mismatched piece -----------------------------------


@pytest.fixture
def broken(one_hot_run, tmp_path):
    """A private copy of the one-hot run's oof/ and runs/ (tests break it), and its config file."""
    cfg = one_hot_run
    for folder in ("oof", "runs"):
        shutil.copytree(getattr(cfg.paths, folder), tmp_path / folder)
    cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"oof": tmp_path / "oof", "runs": tmp_path / "runs",
                                                                          "submissions": tmp_path / "submissions"})})
    toml = tmp_path / "competition.toml"
    src = Path(cfg.data.dir)
    toml.write_text(
        f'task = "multi-class"\nseed = {cfg.seed}\nvariants = ["tiny", "tiny2"]\n[data]\ndir = "{src}"\npatient_column = "patient_id"\n'
        f'[folds]\nn_folds = {cfg.folds.n_folds}\nseed = 0\npath = "{cfg.folds.path}"\n[calibrate]\nstorage = "sqlite:///{tmp_path / "optuna.db"}"\n'
        f'[paths]\noof = "{tmp_path / "oof"}"\nruns = "{tmp_path / "runs"}"\nsubmissions = "{tmp_path / "submissions"}"\n'
        f'cache = "{cfg.paths.cache}"\nmodels = "{cfg.paths.models}"\n'
    )
    return tmp_path, toml


def _refused(toml: Path, capsys, *needles: str, args: tuple = ()) -> None:
    code, _, err = run_kit(["--config", toml, "predict", "--name", "b", *args], capsys)
    assert_one_line_error(code, err, *needles)


def test_refuses_a_missing_blend(broken, capsys):
    _, toml = broken
    code, _, err = run_kit(["--config", toml, "predict", "--name", "nope"], capsys)
    assert_one_line_error(code, err, "blend_nope.json", "kit blend --name nope")


def test_refuses_a_missing_fold_checkpoint(broken, capsys):
    root, toml = broken
    (root / "runs" / "tiny" / "fold1" / "best.pt").unlink()
    _refused(toml, capsys, "fold1/best.pt", "fold 1", "kit train --variant tiny --fold 1")


def test_refuses_a_missing_decoupled_head(broken, capsys):
    root, toml = broken
    (root / "runs" / "tiny2" / "fold2" / "decoupled.pt").unlink()
    _refused(toml, capsys, "fold2/decoupled.pt", "re-balanced head")


def test_refuses_a_fold_retrained_after_the_oof(broken, capsys):
    root, toml = broken
    path = root / "runs" / "tiny" / "fold0" / "best.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["val_logits"] = ckpt["val_logits"] + 0.5
    torch.save(ckpt, path)
    _refused(toml, capsys, "fold0/best.pt", "held-out logits", "fold 0")


def test_refuses_weights_of_another_model(broken, capsys):
    root, toml = broken
    path = root / "runs" / "tiny" / "fold0" / "best.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = {k: v[..., :1] if v.ndim else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, path)
    _refused(toml, capsys, "fold0/best.pt", "does not fit variant 'tiny'")


def test_refuses_a_member_calibration_of_another_prior(broken, capsys):
    root, toml = broken
    path = root / "oof" / "blend_b.json"
    meta = json.loads(path.read_text())
    meta["fitted_blend"]["calibrations"][1]["train_prior"][0] *= 1.01
    path.write_text(json.dumps(meta))
    _refused(toml, capsys, "blend_b.json", "'tiny2'", "calibration")


def test_refuses_a_class_order_that_differs(broken, capsys):
    root, toml = broken
    path = root / "oof" / "blend_b.json"
    meta = json.loads(path.read_text())
    classes = meta["fitted_blend"]["classes"]
    meta["fitted_blend"]["classes"] = [classes[1], classes[0], *classes[2:]]
    path.write_text(json.dumps(meta))
    _refused(toml, capsys, "tiny.npz", "classes", "differ")


def test_refuses_an_oof_changed_since_the_blend(broken, capsys):
    root, toml = broken
    from kit.artifacts import save_oof

    path = root / "oof" / "tiny.npz"
    oof = load_oof(path)
    save_oof(path, type(oof)(**{**oof.__dict__, "logits": oof.logits + 1}), json.loads(path.with_suffix(".json").read_text()))
    _refused(toml, capsys, "tiny.npz", "changed since blend 'b'")


def test_refuses_a_record_of_an_older_blend(broken, capsys):
    root, toml = broken
    path = root / "oof" / "blend_b.json"
    meta = json.loads(path.read_text())
    del meta["fitted_blend"]
    path.write_text(json.dumps(meta))
    _refused(toml, capsys, "blend_b.json", "no fitted blend")


def test_refuses_an_untrained_member(broken, capsys):
    root, toml = broken
    path = root / "oof" / "tiny2.json"
    meta = json.loads(path.read_text())
    del meta["model_config"]
    path.write_text(json.dumps(meta))
    _refused(toml, capsys, "tiny2.json", "not trained by `kit train`")


def test_refuses_an_empty_folder_and_a_missing_image(broken, capsys, tmp_path):
    _, toml = broken
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(toml, capsys, "no image files", args=(str(empty),))
    ids = tmp_path / "some_ids.csv"
    ids.write_text("id\nimg_nowhere\n")
    _refused(toml, capsys, "img_nowhere", "missing", args=(str(empty), "--ids", str(ids)))


def test_max_minutes_stops_before_the_limit(broken, capsys):
    _, toml = broken
    code, _, err = run_kit(["--config", toml, "predict", "--name", "b", "--max-minutes", "0.000001"], capsys)
    assert_one_line_error(code, err, "--max-minutes", "images/s", "would take about")


def test_time_budget_projects_from_the_measured_rate():
    now = [0.0]
    budget = TimeBudget(1.0, total_images=1000, clock=lambda: now[0])
    budget.started()
    now[0] = 5.0
    budget.advance(100)  # 20 images/s: 5 s + 900 / 20 = 50 s, under a minute
    now[0] = 10.0
    with pytest.raises(KitError, match="would take about 1.1 min"):
        budget.advance(50)  # 15 images/s: 10 s + 850 / 15 = 66.7 s = 1.1 min, over
