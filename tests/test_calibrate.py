"""`kit calibrate`: nested-CV table and choice, Optuna studies in storage, held-out folds unseen,
bad inputs (one line, nothing written), and the dashboard over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from rich.console import Console

from kit.artifacts import OOF, save_oof
from kit.config import CompetitionConfig
from kit.decision.rules import Decision
from kit.errors import KitError
from kit.stages.calibrate import RuleResult, calibrate, calibrate_logits, choose

REPO = Path(__file__).resolve().parent.parent
PRIOR = np.array([0.7, 0.2, 0.07, 0.03])


def make_cfg(tmp_path: Path, trials: int = 12, task: str = "multi-class", **calibrate) -> CompetitionConfig:
    return CompetitionConfig.model_validate({
        "task": task,
        "seed": 0,
        "calibrate": {"trials": trials, "storage": f"sqlite:///{tmp_path / 'oof' / 'optuna.db'}", **calibrate},
        "folds": {"n_folds": 3, "path": str(tmp_path / "folds" / "folds.csv")},
        "paths": {"oof": str(tmp_path / "oof"), "submissions": str(tmp_path / "subs")},
    })


def stratified_folds(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def simulated_oof(n: int = 600, k: int = 3, seed: int = 0, signal: float = 1.5):
    """Labels from PRIOR, logits of a model trained with an inverse-frequency sampler (prior q uniform)."""
    rng = np.random.default_rng(seed)
    c = len(PRIOR)
    counts = np.maximum(np.round(PRIOR * n).astype(int), k)
    y = rng.permutation(np.repeat(np.arange(c), counts))
    z = rng.normal(size=(len(y), c))
    z[np.arange(len(y)), y] += signal
    q = np.full(c, 1 / c)
    logits = signal * z + np.log(q)  # calibrated under q
    return logits.astype(np.float32), np.eye(c, dtype=np.uint8)[y], stratified_folds(y, k, rng), q


def quiet_console() -> Console:
    return Console(record=True, width=200, file=open(os.devnull, "w"))


def test_table_rows_choice_and_saved_rule(tmp_path):
    logits, labels, fold, q = simulated_oof()
    console = quiet_console()
    decision, report = calibrate_logits(logits, labels, fold, q, make_cfg(tmp_path), "sim", list("abcd"), console)
    rows = {r["rule"]: r for r in report["rows"]}
    assert list(rows) == ["trivial", "argmax", "prior_argmax", "bayes", "bayes_offsets"]
    for r in rows.values():
        assert len(r["per_fold"]) == 3 and r["nested_cv"] == pytest.approx(np.mean(r["per_fold"]))
    nested = report["nested_cv"]
    # the sampler-trained model decided by argmax loses to the prior-corrected Bayes rule, which beats trivial
    assert nested["bayes"] > nested["argmax"] + 0.5
    assert nested["bayes"] > rows["trivial"]["nested_cv"]
    assert report["chosen"] in ("bayes", "bayes_offsets")
    if report["chosen"] == "bayes_offsets":
        assert nested["bayes_offsets"] > nested["bayes"]
    assert decision.rule == report["chosen"] and list(decision.classes) == list("abcd")
    assert report["chosen_nested_cv"] == nested[report["chosen"]]
    # tuning starts from the closed form, so in-sample it can only match or improve it
    assert report["in_sample"]["bayes_offsets"] >= report["in_sample"]["bayes"] - 1e-12
    text = console.export_text()
    assert "nested-CV score" in text and "in-sample score" in text and "trivial baseline" in text and "chosen:" in text


def test_choose_keeps_the_closed_form_unless_tuning_beats_it():
    def rows(**scores):
        return [RuleResult(k, k, v, v) for k, v in scores.items()]

    assert choose(rows(argmax=-3.0, prior_argmax=-2.5, bayes=-2.0, bayes_offsets=-2.0), True).key == "bayes"
    assert choose(rows(argmax=-3.0, prior_argmax=-2.5, bayes=-2.0, bayes_offsets=-1.9), True).key == "bayes_offsets"
    assert choose(rows(argmax=-1.0, prior_argmax=-2.5, bayes=-2.0, bayes_offsets=-1.9), True).key == "argmax"
    assert choose(rows(**{"threshold_0.5": -3.0, "closed_form": -2.0, "fitted": -2.0}), False).key == "closed_form"


def test_nested_cv_never_sees_the_held_out_fold(tmp_path):
    """Poison fold 0's labels (shuffled within the fold): what is fitted for outer fold 0 must not change."""
    logits, labels, fold, q = simulated_oof(seed=1)
    poisoned = labels.copy()
    rows0 = np.flatnonzero(fold == 0)
    poisoned[rows0] = labels[np.random.default_rng(9).permutation(rows0)]
    assert (poisoned != labels).any()
    _, clean = calibrate_logits(logits, labels, fold, q, make_cfg(tmp_path / "a"), "t", None, quiet_console())
    _, dirty = calibrate_logits(logits, poisoned, fold, q, make_cfg(tmp_path / "b"), "t", None, quiet_console())
    for clean_row, dirty_row in zip(clean["rows"][1:], dirty["rows"][1:]):
        assert clean_row["fitted_per_fold"][0] == dirty_row["fitted_per_fold"][0], clean_row["rule"]
    # ...while the outer folds that fit on fold 0 do change (so the check can fail)
    bayes_clean, bayes_dirty = clean["rows"][3], dirty["rows"][3]
    assert bayes_clean["fitted_per_fold"][1]["temperature"] != bayes_dirty["fitted_per_fold"][1]["temperature"]
    # the outer-0 Optuna search saw exactly the same objective values
    values = [
        [t.value for t in optuna.load_study(study_name="t/offsets/outer-0", storage=f"sqlite:///{d / 'oof' / 'optuna.db'}").trials]
        for d in (tmp_path / "a", tmp_path / "b")
    ]
    assert values[0] == values[1]


def test_studies_in_storage_user_attrs_and_rerun_reproduces(tmp_path):
    logits, labels, fold, q = simulated_oof(seed=2)
    cfg = make_cfg(tmp_path, trials=10)
    d1, _ = calibrate_logits(logits, labels, fold, q, cfg, "v", list("abcd"), quiet_console())
    d2, _ = calibrate_logits(logits, labels, fold, q, cfg, "v", list("abcd"), quiet_console())
    assert d1.to_dict() == d2.to_dict()
    storage = cfg.calibrate.storage
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert set(summaries) == {"v/offsets/all", "v/offsets/outer-0", "v/offsets/outer-1", "v/offsets/outer-2"}
    assert all(s.n_trials == 10 for s in summaries.values())  # a re-run replaces, never appends
    study = optuna.load_study(study_name="v/offsets/outer-1", storage=storage)
    first = study.trials[0]
    assert first.params == {f"offset[{c}]": 0.0 for c in "abcd"}  # seeded with the closed-form rule
    assert all(t.user_attrs["rule"] == "bayes_offsets" and "held_out_score" in t.user_attrs for t in study.trials)
    assert study.user_attrs["outer_fold"] == 1
    everything = optuna.load_study(study_name="v/offsets/all", storage=storage)
    assert set(everything.user_attrs["nested_cv"]) == {"argmax", "prior_argmax", "bayes", "bayes_offsets"}
    assert everything.best_trial.user_attrs["nested_cv_score"] == everything.user_attrs["nested_cv"]["bayes_offsets"]


def test_parallel_searches_give_the_serial_result(tmp_path):
    logits, labels, fold, q = simulated_oof(seed=7)
    serial, r1 = calibrate_logits(logits, labels, fold, q, make_cfg(tmp_path / "s", trials=8, workers=1), "p", None, quiet_console())
    parallel, r2 = calibrate_logits(logits, labels, fold, q, make_cfg(tmp_path / "p", trials=8, workers=2), "p", None, quiet_console())
    assert serial.to_dict() == parallel.to_dict()
    assert r1["rows"] == r2["rows"]
    trials = [
        [(t.params, t.value) for t in optuna.load_study(study_name="p/offsets/all", storage=f"sqlite:///{d / 'oof' / 'optuna.db'}").trials]
        for d in (tmp_path / "s", tmp_path / "p")
    ]
    assert trials[0] == trials[1]


def test_cmaes_sampler_runs(tmp_path):
    logits, labels, fold, q = simulated_oof(seed=3)
    decision, report = calibrate_logits(logits, labels, fold, q, make_cfg(tmp_path, trials=8, sampler="cmaes"), "c", None, quiet_console())
    assert report["sampler"] == "cmaes" and report["chosen"] in report["nested_cv"]


def test_multilabel_thresholds(tmp_path):
    rng = np.random.default_rng(4)
    n, c = 600, 3
    rate = np.array([0.05, 0.2, 0.4])
    true_logit = rng.normal(0, 2, size=(n, c)) + np.log(rate / (1 - rate))
    labels = (rng.random((n, c)) < 1 / (1 + np.exp(-true_logit))).astype(np.uint8)
    fold = np.arange(n) % 3
    decision, report = calibrate_logits(
        true_logit * 0.5, labels, fold, labels.mean(axis=0), make_cfg(tmp_path, task="multi-label", threshold_method="youden"),
        "ml", ["x", "y", "z"], quiet_console(),
    )
    assert [r["rule"] for r in report["rows"]] == ["trivial", "threshold_0.5", "closed_form", "fitted"]
    assert decision.rule == "thresholds" and decision.thresholds.shape == (3,)
    assert report["nested_cv"]["closed_form"] > report["trivial_baseline"]["nested_cv"]
    assert decision.temperature == pytest.approx(0.5, rel=0.25)  # logits were halved: T ~ 0.5 undoes it
    assert report["studies"] == []


def test_class_absent_from_a_held_out_fold_is_named(tmp_path):
    logits, labels, fold, q = simulated_oof(seed=5)
    fold = fold.copy()
    fold[(labels[:, 3] == 1)] = 1  # class 'd' only in fold 1
    with pytest.raises(KitError, match=r"class 'd' has no image in the held-out set of fold 0.*fewer folds"):
        calibrate_logits(logits, labels, fold, q, make_cfg(tmp_path), "x", list("abcd"), quiet_console())
    assert not (tmp_path / "oof").exists()  # nothing written, not even the study storage


def test_no_trials_means_no_search_and_no_storage(tmp_path):
    logits, labels, fold, q = simulated_oof(seed=8)
    decision, report = calibrate_logits(logits, labels, fold, q, make_cfg(tmp_path, trials=0), "z", None, quiet_console())
    assert "bayes_offsets" not in report["nested_cv"] and report["studies"] == []
    assert decision.rule in ("bayes", "prior_argmax", "argmax")
    assert not (tmp_path / "oof").exists()


def test_unusable_storage_is_one_line_before_any_work(tmp_path):
    logits, labels, fold, q = simulated_oof(seed=8)
    cfg = make_cfg(tmp_path)
    cfg = cfg.model_copy(update={"calibrate": cfg.calibrate.model_copy(update={"storage": "nosuchdb://user@host/x"})})
    with pytest.raises(KitError, match="calibrate.storage = 'nosuchdb://user@host/x': cannot open"):
        calibrate_logits(logits, labels, fold, q, cfg, "z", None, quiet_console())


def test_nan_logits_are_refused(tmp_path):
    logits, labels, fold, q = simulated_oof(seed=6)
    logits[5, 2] = np.nan
    with pytest.raises(KitError, match="NaN or infinite"):
        calibrate_logits(logits, labels, fold, q, make_cfg(tmp_path), "x", None, quiet_console())


# --- the stage on a real (tiny, synthetic) dataset ---------------------------------------------


@pytest.fixture()
def stage(tiny_competition, tmp_path):
    """The tiny competition's data with this test's own folds, oof and storage; one OOF file written."""
    from kit.data.sources import open_source

    base = tiny_competition.cfg
    cfg = base.model_copy(update={
        "folds": base.folds.model_copy(update={"path": tmp_path / "folds" / "folds.csv"}),
        "paths": base.paths.model_copy(update={"oof": tmp_path / "oof"}),
        "calibrate": base.calibrate.model_copy(update={"trials": 6, "storage": f"sqlite:///{tmp_path / 'oof' / 'optuna.db'}"}),
    })
    source = open_source(cfg)
    y = source.train.labels.argmax(axis=1)
    rng = np.random.default_rng(0)
    fold = stratified_folds(y, 3, rng)
    (tmp_path / "folds").mkdir()
    pd.DataFrame({"id": source.train.ids, "fold": fold}).to_csv(cfg.folds.path, index=False)
    c = len(source.classes)
    logits = rng.normal(size=(len(y), c)).astype(np.float32)
    logits[np.arange(len(y)), y] += 2.0
    oof = OOF(np.array(source.classes), source.train.ids, fold, logits, source.test.ids,
              rng.normal(size=(3, len(source.test.ids), c)).astype(np.float32), np.full(c, 1 / c))
    save_oof(tmp_path / "oof" / "v.npz", oof)
    text = tiny_competition.config_path.read_text()
    text = text.replace(str(base.folds.path), str(cfg.folds.path)).replace(f'oof = "{base.paths.oof}"', f'oof = "{cfg.paths.oof}"')
    text = text.replace(str(base.paths.oof / "optuna.db"), str(tmp_path / "oof" / "optuna.db"))
    (tmp_path / "competition.toml").write_text(text)
    return cfg, oof, tmp_path


def test_stage_writes_decision_report_and_png(stage):
    cfg, oof, root = stage
    console = quiet_console()
    decisions = calibrate(cfg, [root / "oof" / "v.npz"], console)
    decision = Decision.load(root / "oof" / "v.decision.json")
    assert decisions["v"].to_dict() == decision.to_dict()
    report = json.loads((root / "oof" / "v.calibration.json").read_text())
    assert report["chosen"] == decision.rule
    png = root / "oof" / "v.per_class.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = console.export_text()
    assert str(png) in text.replace("\n", "") and "trivial baseline" in text


def _expect_refusal(cfg, path: Path, root: Path, pattern: str) -> None:
    before = sorted(p.name for p in (root / "oof").iterdir())
    with pytest.raises(KitError, match=pattern):
        calibrate(cfg, [path], quiet_console())
    assert sorted(p.name for p in (root / "oof").iterdir()) == before  # nothing written


def test_stage_refuses_ids_not_in_folds_csv(stage):
    cfg, oof, root = stage
    folds = pd.read_csv(cfg.folds.path, dtype={"id": str})
    folds.iloc[:-1].to_csv(cfg.folds.path, index=False)  # one OOF id unknown to folds.csv
    _expect_refusal(cfg, root / "oof" / "v.npz", root, "do not match")


def test_stage_refuses_other_folds(stage):
    cfg, oof, root = stage
    moved = OOF(**{**oof.__dict__, "fold": (oof.fold + 1) % 3})
    save_oof(root / "oof" / "moved.npz", moved)
    _expect_refusal(cfg, root / "oof" / "moved.npz", root, "another fold")


def test_stage_refuses_nan_logits(stage):
    cfg, oof, root = stage
    arrays = {k: np.asarray(v) for k, v in oof.__dict__.items()}
    arrays["logits"] = arrays["logits"].copy()
    arrays["logits"][3, 1] = np.inf
    np.savez(root / "oof" / "nan.npz", **arrays)
    _expect_refusal(cfg, root / "oof" / "nan.npz", root, "NaN or infinite")


def test_stage_refuses_other_classes(stage):
    cfg, oof, root = stage
    classes = oof.classes.astype(str).copy()
    classes[[0, 1]] = classes[[1, 0]]  # same names, other order
    save_oof(root / "oof" / "swapped.npz", OOF(**{**oof.__dict__, "classes": classes}))
    _expect_refusal(cfg, root / "oof" / "swapped.npz", root, "classes differ")


def test_cli_bad_input_is_one_line_exit_2(stage):
    cfg, oof, root = stage
    result = subprocess.run(
        [sys.executable, "-m", "kit", "--config", str(root / "competition.toml"), "calibrate", "--oof", str(root / "oof" / "missing.npz")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    assert "missing.npz" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_calibrate_default_variants(stage):
    cfg, oof, root = stage
    (root / "oof" / "v.npz").rename(root / "oof" / "cnn_demo.npz")  # the tiny config's variant
    result = subprocess.run(
        [sys.executable, "-m", "kit", "--config", str(root / "competition.toml"), "calibrate"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (root / "oof" / "cnn_demo.decision.json").is_file()
    assert "nested-CV" in result.stdout and "trivial baseline" in result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_studies_over_http(stage):
    cfg, oof, root = stage
    calibrate(cfg, [root / "oof" / "v.npz"], quiet_console())
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit", "--config", str(root / "competition.toml"), "dashboard", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    try:
        body, deadline = None, time.time() + 60
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    body = json.loads(response.read())
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
        assert body is not None, "dashboard did not answer"
        names = {s["study_name"] for s in body["study_summaries"]}
        assert {"v/offsets/all", "v/offsets/outer-0"} <= names
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/" in out


def test_stage_multilabel_on_a_medmnist_npz(tiny_chestmnist, tmp_path):
    from kit.data.sources import open_source

    base = tiny_chestmnist.cfg
    cfg = base.model_copy(update={
        "folds": base.folds.model_copy(update={"path": tmp_path / "folds.csv", "n_folds": 2}),
        "paths": base.paths.model_copy(update={"oof": tmp_path / "oof"}),
        "calibrate": base.calibrate.model_copy(update={"storage": f"sqlite:///{tmp_path / 'oof' / 'optuna.db'}", "threshold_method": "f1"}),
    })
    source = open_source(cfg)
    labels = source.train.labels
    for seed in range(100):  # two folds in which every label has a positive image
        fold = np.random.default_rng(seed).permutation(np.arange(len(labels)) % 2)
        if all(labels[fold == k].sum(axis=0).min() > 0 for k in (0, 1)):
            break
    pd.DataFrame({"id": source.train.ids, "fold": fold}).to_csv(cfg.folds.path, index=False)
    rng = np.random.default_rng(0)
    c = len(source.classes)
    logits = (rng.normal(size=labels.shape) + 2.0 * labels - 2.0).astype(np.float32)
    oof = OOF(np.array(source.classes), source.train.ids, fold, logits, source.test.ids,
              rng.normal(size=(2, len(source.test.ids), c)).astype(np.float32), np.clip(labels.mean(axis=0), 0.01, None))
    save_oof(tmp_path / "oof" / "ml.npz", oof)
    console = quiet_console()
    decisions = calibrate(cfg, [tmp_path / "oof" / "ml.npz"], console)
    saved = Decision.load(tmp_path / "oof" / "ml.decision.json")
    assert saved.rule == "thresholds" and saved.thresholds.shape == (c,)
    assert saved.to_dict() == decisions["ml"].to_dict()
    assert "per-class thresholds (f1)" in console.export_text()
