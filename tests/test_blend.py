"""Blender: greedy weights on calibrated log-probabilities, honest nested-CV scores, the stage's files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kit.artifacts import OOF, load_oof, save_oof
from kit.config import MetricConfig
from kit.errors import KitError
from kit.stages.blend import blend, caruana_weights, class_prior, fold_score, make_scorer, mix, nested_blend
from kit.submission import check_submission_file
from tests.test_submission import make_layout

WEIGHTS = MetricConfig()
PRIOR = np.array([0.55, 0.25, 0.15, 0.05])


def complementary(n: int = 1000, seed: int = 0):
    """Labels, folds and two variants' calibrated logits: v1 sees classes 0-1, v2 sees classes 2-3."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(PRIOR), size=n, p=PRIOR)
    fold = np.empty(n, dtype=np.int64)
    for c in range(len(PRIOR)):  # stratified folds
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = np.arange(len(rows)) % 5
    labels = np.eye(len(PRIOR), dtype=np.uint8)[y]
    zs = []
    for seen in ((0, 1), (2, 3)):
        signal = 2.5 * labels * np.isin(np.arange(len(PRIOR)), seen)
        logits = np.log(PRIOR) + signal + rng.normal(0, 1.0, labels.shape)
        zs.append((logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32))
    return labels, fold, zs


def test_blend_beats_its_best_member_in_nested_cv():
    labels, fold, zs = complementary()
    singles = [fold_score(z, labels, fold, WEIGHTS, "multi-class") for z in zs]
    nested, per_fold = nested_blend(zs, labels, fold, WEIGHTS, "multi-class", steps=15)
    assert nested >= max(singles) + 0.05, (nested, singles)
    for w in per_fold.values():  # every fold's search uses both members
        assert w.sum() == pytest.approx(1.0) and (w > 0).all()


def test_greedy_selection_never_below_best_single_on_its_rows():
    rng = np.random.default_rng(3)
    labels, _, _ = complementary(400, seed=3)
    zs = [np.log(PRIOR).astype(np.float32) + rng.normal(0, s, labels.shape).astype(np.float32) + labels * g
          for s, g in ((1.0, 1.0), (2.0, 2.0), (0.5, 0.2))]
    score = make_scorer(labels, class_prior(labels), WEIGHTS, "multi-class")
    w, best = caruana_weights(zs, score, steps=10)
    assert best >= max(score(z) for z in zs) - 1e-12
    assert score(mix(zs, w)) == pytest.approx(best)


def test_nested_weights_never_see_the_held_out_fold():
    labels, fold, zs = complementary(600, seed=1)
    _, reference = nested_blend(zs, labels, fold, WEIGHTS, "multi-class", steps=8)
    rng = np.random.default_rng(0)
    for k in range(5):
        scrambled = labels.copy()
        held = np.flatnonzero(fold == k)
        scrambled[held] = scrambled[rng.permutation(held)][:, ::-1]  # destroy the held-out labels
        _, weights = nested_blend(zs, scrambled, fold, WEIGHTS, "multi-class", steps=8)
        np.testing.assert_array_equal(weights[k], reference[k])


def test_multi_label_scorer_uses_cost_threshold():
    labels = np.array([[1, 0], [0, 1], [0, 0]], dtype=np.uint8)
    z = np.log(np.array([[0.2, 0.1], [0.1, 0.3], [0.1, 0.1]]) / (1 - np.array([[0.2, 0.1], [0.1, 0.3], [0.1, 0.1]])))
    # threshold b/(a+b+w) = 1/7 ≈ 0.143: predicts [1,0], [0,1], [0,0] -> perfect
    assert make_scorer(labels, labels.mean(axis=0), WEIGHTS, "multi-label")(z) == pytest.approx(1.0)


# --- the stage --------------------------------------------------------------------------------


def _stage_setup(tmp_path, n=300, m=40):
    labels, fold, zs = complementary(n, seed=2)
    classes = ["No Finding", "Effusion", "Mass", "Hernia"]
    names = np.array(classes)[labels.argmax(axis=1)].tolist()
    test_ids = [f"te{i:03d}" for i in range(m)]
    cfg = make_layout(tmp_path, names, test_ids, classes=classes, variants=["v1", "v2"])
    ids = np.array([f"tr{i:03d}" for i in range(n)])
    pd.DataFrame({"id": ids, "fold": fold}).to_csv(cfg.folds.path, index=False)
    rng = np.random.default_rng(5)
    for name, z in zip(("v1", "v2"), zs):
        test_logits = rng.normal(0, 1, (5, m, 4)).astype(np.float32) + np.log(PRIOR).astype(np.float32)
        # a sampler-trained model: its logits carry a flat training prior
        train_prior = np.full(4, 0.25)
        logits = z - np.log(PRIOR).astype(np.float32) + np.log(train_prior).astype(np.float32)
        save_oof(cfg.paths.oof / f"{name}.npz", OOF(np.array(classes), ids, fold, logits, np.array(test_ids), test_logits, train_prior))
    return cfg, labels


def test_blend_stage_writes_submission_oof_and_pictures(tmp_path, capsys):
    cfg, labels = _stage_setup(tmp_path)
    out = blend(cfg, None, "t")
    assert out == cfg.paths.submissions / "t.csv"
    frame = check_submission_file(out, cfg)
    assert len(frame) == 40
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["variants"] == ["v1", "v2"]
    assert sum(meta["weights"].values()) == pytest.approx(1.0)
    assert meta["nested_cv_score"] > meta["trivial_baseline"]
    assert meta["nested_cv_score"] >= max(meta["single_variant_nested_cv"].values())
    blended = load_oof(cfg.paths.oof / "blend_t.npz")
    assert blended.logits.shape == (300, 4) and blended.test_logits.shape == (5, 40, 4)
    printed = capsys.readouterr().out
    for suffix in ("confusion", "per_class", "reliability"):
        png = cfg.paths.submissions / f"t_{suffix}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"t_{suffix}.png" in printed
    assert "trivial baseline" in printed and "nested-CV" in printed


def test_blend_refuses_mismatched_inputs(tmp_path):
    cfg, _ = _stage_setup(tmp_path)
    v2 = load_oof(cfg.paths.oof / "v2.npz")
    renamed = OOF(np.array(["a", "b", "c", "d"]), v2.ids, v2.fold, v2.logits, v2.test_ids, v2.test_logits, v2.train_prior)
    save_oof(cfg.paths.oof / "v2.npz", renamed)
    with pytest.raises(KitError, match="classes differ"):
        blend(cfg, ["v1", "v2"], "x")
    moved = OOF(v2.classes, v2.ids, (v2.fold + 1) % 5, v2.logits, v2.test_ids, v2.test_logits, v2.train_prior)
    save_oof(cfg.paths.oof / "v2.npz", moved)
    with pytest.raises(KitError, match="sit in another fold"):
        blend(cfg, ["v1", "v2"], "x")
    with pytest.raises(KitError, match="not found"):
        blend(cfg, ["v1", "nope"], "x")
    for name in ("v1", "v2"):  # both renamed alike: they agree with each other but not with the data
        save_oof(cfg.paths.oof / f"{name}.npz", renamed)
    with pytest.raises(KitError, match="classes differ from the data source"):
        blend(cfg, ["v1", "v2"], "x")
    assert not (cfg.paths.submissions / "x.csv").exists()


def test_blend_uses_the_variants_saved_decisions(tmp_path, capsys):
    from kit.stages.calibrate import calibrate

    cfg, _ = _stage_setup(tmp_path)
    calibrate(cfg, [cfg.paths.oof / "v1.npz"])
    blend(cfg, ["v1", "v2"], "d")
    meta = json.loads((cfg.paths.submissions / "d.json").read_text())
    assert meta["member_decisions"]["v1"]["source"] == "kit calibrate"
    assert meta["member_decisions"]["v2"]["source"] == "fitted temperature"
    saved = json.loads((cfg.paths.oof / "v1.decision.json").read_text())
    assert meta["member_decisions"]["v1"]["temperature"] == pytest.approx(saved["temperature"])
    own = meta["single_variant_own_decision_nested_cv"]
    assert own["v2"] is None and own["v1"]["nested_cv"] == pytest.approx(
        json.loads((cfg.paths.oof / "v1.calibration.json").read_text())["chosen_nested_cv"])
    assert meta["nested_cv_score"] == max(meta["nested_cv_by_choice"].values())
    assert meta["weighting"] in ("greedy selection", "best single member")


def test_multi_label_blend_and_score_on_a_medmnist_npz(tmp_path):
    from kit.config import CalibrateConfig, CompetitionConfig, DataConfig, FoldsConfig, PathsConfig
    from kit.data.folds import make_folds
    from kit.data.sources import open_source, test_labels
    from kit.data.synth import generate
    from kit.submission import score_file

    generate(tmp_path / "data", n_train=240, n_test=60, size=28, seed=1, task="multi-label", processes=1)
    cfg = CompetitionConfig(
        task="multi-label", variants=["a", "b"],
        data=DataConfig(source="medmnist", dir=tmp_path / "data", patient_column=None),
        folds=FoldsConfig(n_folds=3, path=tmp_path / "folds.csv"),
        calibrate=CalibrateConfig(storage=f"sqlite:///{tmp_path / 'optuna.db'}"),
        paths=PathsConfig(oof=tmp_path / "oof", submissions=tmp_path / "subs"),
    )
    make_folds(cfg)
    source = open_source(cfg)
    folds = pd.read_csv(cfg.folds.path, dtype={"id": str}).set_index("id").loc[source.train.ids, "fold"].to_numpy()
    y, c = source.train.labels, len(source.classes)
    y_test = test_labels(cfg)[source.classes].to_numpy()
    q = np.clip(y.mean(axis=0), 0.01, 0.99)
    rng = np.random.default_rng(0)
    for name, seen in (("a", np.arange(0, c, 2)), ("b", np.arange(1, c, 2))):
        strength = np.where(np.isin(np.arange(c), seen), 3.0, 0.3)
        base = np.log(q / (1 - q))
        logits = (base + rng.normal(0, 1, y.shape) + y * strength).astype(np.float32)
        test = np.stack([base + rng.normal(0, 1, y_test.shape) + y_test * strength for _ in range(3)]).astype(np.float32)
        save_oof(cfg.paths.oof / f"{name}.npz", OOF(np.array(source.classes), source.train.ids, folds, logits, source.test.ids, test, q))
    out = blend(cfg, None, "ml")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["decision"]["task"] == "multi-label" and meta["synthetic"] is True
    assert meta["nested_cv_score"] > max(meta["single_variant_nested_cv"].values()) > meta["trivial_baseline"]
    assert out.read_text().splitlines()[0] == ",".join(["id", *source.classes])
    check_submission_file(out, cfg)  # no sample: checked against the npz's test ids and classes
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(out.read_text().splitlines()[:-1]) + "\n")  # one test id short
    with pytest.raises(KitError, match=r"59 rows, expected 60 \(one per test id, as in the test ids of the data source\)"):
        check_submission_file(bad, cfg)
    result = score_file(out, None, cfg, compare_argmax=True)  # solution: the npz's test labels
    assert result["score"] > result["trivial_baseline"] == pytest.approx(-cfg.metric.w)
    assert set(result["argmax"]) == {"a", "b"}


def test_best_single_fallback_picks_the_member_best_on_the_fitting_folds():
    labels, fold, zs = complementary(600, seed=4)
    noise = np.log(PRIOR).astype(np.float32) + np.random.default_rng(9).normal(0, 1, labels.shape).astype(np.float32)
    from kit.stages.blend import select_single

    score, per_fold = nested_blend([noise, zs[0]], labels, fold, WEIGHTS, "multi-class", select=select_single)
    for w in per_fold.values():
        np.testing.assert_array_equal(w, [0.0, 1.0])  # the informative member, every fold
    assert score == pytest.approx(fold_score(zs[0], labels, fold, WEIGHTS, "multi-class"))


def _toml(cfg, path):
    path.write_text(
        f'task = "multi-class"\nvariants = ["v1", "v2"]\n[data]\ndir = "{cfg.data.dir}"\n'
        f'[folds]\npath = "{cfg.folds.path}"\n[calibrate]\ntrials = 10\nstorage = "{cfg.calibrate.storage}"\n'
        f'[paths]\noof = "{cfg.paths.oof}"\nsubmissions = "{cfg.paths.submissions}"\n'
    )
    return path


def test_cli_blend_score_and_bad_input(tmp_path):
    import subprocess
    import sys

    cfg, _ = _stage_setup(tmp_path)
    config = _toml(cfg, tmp_path / "c.toml")
    kit = [sys.executable, "-m", "kit", "--config", str(config)]
    env = {**__import__("os").environ, "COLUMNS": "200"}
    ok = subprocess.run([*kit, "blend", "--variants", "v1", "--variants", "v2", "--name", "cli"], capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stderr
    assert (cfg.paths.submissions / "cli.csv").is_file() and "trivial baseline" in ok.stdout
    bad = subprocess.run([*kit, "blend", "--variants", "v1,nope", "--name", "bad"], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "nope.npz" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr and not (cfg.paths.submissions / "bad.csv").exists()
    missing = subprocess.run([*kit, "score", str(tmp_path / "none.csv"), "--solution", str(tmp_path / "none2.csv")],
                             capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode == 2 and "file not found" in missing.stderr and "Traceback" not in missing.stderr


def test_reliability_bins_by_hand():
    from kit.plots import reliability_bins

    conf, acc, count, ece = reliability_bins(np.array([0.05, 0.95, 0.95]), np.array([0, 1, 0]), n_bins=10)
    assert count[0] == 1 and count[9] == 2 and count[1:9].sum() == 0
    assert acc[9] == pytest.approx(0.5) and conf[9] == pytest.approx(0.95)
    assert ece == pytest.approx(0.05 / 3 + 2 / 3 * 0.45)
