"""`kit calibrate`: the stage on a tiny synthetic dataset — nested-CV table and choice, the decision tied
to its OOF, the report, the Optuna study, the metric carried along, bad inputs (one line, nothing
written), the CLI and the dashboard over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from rich.console import Console

from kit.artifacts import OOF, oof_fingerprint, save_oof
from kit.decision.metrics import LinearCountMetric
from kit.decision.rules import Decision
from kit.errors import KitError
from kit.stages.calibrate import calibrate
from tests.conftest import dashboard_studies

REPO = Path(__file__).resolve().parent.parent


def quiet_console() -> Console:
    return Console(record=True, width=200, file=open(os.devnull, "w"))


@pytest.fixture()
def stage(tiny_competition, tmp_path, make_folds_for):
    """The tiny competition's data with this test's own folds, oof and storage; one OOF file written."""
    from kit.data.sources import open_source

    base = tiny_competition.cfg
    cfg = base.model_copy(update={
        "folds": base.folds.model_copy(update={"path": tmp_path / "folds" / "folds.csv"}),
        "paths": base.paths.model_copy(update={"oof": tmp_path / "oof"}),
        "calibrate": base.calibrate.model_copy(update={"storage": f"sqlite:///{tmp_path / 'oof' / 'optuna.db'}"}),
    })
    source = open_source(cfg)
    y = source.train.labels.argmax(axis=1)
    rng = np.random.default_rng(0)
    fold = make_folds_for(y, 3, rng)
    (tmp_path / "folds").mkdir()
    pd.DataFrame({"id": source.train.ids, "fold": fold}).to_csv(cfg.folds.path, index=False)
    c = len(source.classes)
    logits = rng.normal(size=(len(y), c)).astype(np.float32)
    logits[np.arange(len(y)), y] += 2.0
    oof = OOF(np.array(source.classes), source.train.ids, fold, logits, source.test.ids,
              rng.normal(size=(3, len(source.test.ids), c)).astype(np.float32), np.full(c, 1 / c))
    save_oof(tmp_path / "oof" / "v.npz", oof, {"metric": LinearCountMetric().params()})
    text = tiny_competition.config_path.read_text()
    text = text.replace(str(base.folds.path), str(cfg.folds.path)).replace(f'oof = "{base.paths.oof}"', f'oof = "{cfg.paths.oof}"')
    text = text.replace(str(base.paths.oof / "optuna.db"), str(tmp_path / "oof" / "optuna.db"))
    (tmp_path / "competition.toml").write_text(text)
    return cfg, oof, tmp_path


@pytest.mark.slow
def test_stage_writes_decision_report_and_png(stage):
    cfg, oof, root = stage
    console = quiet_console()
    decisions = calibrate(cfg, [root / "oof" / "v.npz"], console)
    decision = Decision.load(root / "oof" / "v.decision.json")
    assert decisions["v"].to_dict() == decision.to_dict()
    report = json.loads((root / "oof" / "v.calibration.json").read_text())
    assert report["chosen"] == decision.rule and decision.fitted_on == oof_fingerprint(oof) == report["fitted_on"]
    assert report["metric"] == decision.metric.params() == {"name": "linear", "a": 1.0, "b": 1.0, "w": 5.0}
    rows = {r["key"]: r for r in report["rows"]}
    assert list(rows) == ["trivial", "argmax", "prior_argmax", "bayes", "bayes_alpha", "offsets"]
    for r in rows.values():
        assert len(r["per_fold"]) == 3 and r["nested_cv"] == pytest.approx(np.mean(r["per_fold"])) and r["se"] >= 0
    assert report["chosen_nested_cv"] == rows[report["chosen"]]["nested_cv"] > report["trivial_baseline"]["nested_cv"]
    png = root / "oof" / "v.per_class.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = console.export_text()
    assert str(png) in text.replace("\n", "") and "trivial baseline" in text and "nested CV ± SE" in text and "chosen:" in text
    study = optuna.load_study(study_name="calibrate/v", storage=cfg.calibrate.storage)
    assert len(study.trials) == 6  # one trial per candidate
    bayes = next(t for t in study.trials if t.params["candidate"] == "bayes")
    assert [bayes.intermediate_values[k] for k in sorted(bayes.intermediate_values)] == pytest.approx(rows["bayes"]["per_fold"])
    calibrate(cfg, [root / "oof" / "v.npz"], quiet_console())  # a re-run replaces the study and reproduces the decision
    assert len(optuna.load_study(study_name="calibrate/v", storage=cfg.calibrate.storage).trials) == 6
    assert Decision.load(root / "oof" / "v.decision.json").to_dict() == decision.to_dict()


@pytest.mark.slow
def test_study_reads_true(stage):
    """Through Optuna's public API: the objective is named, the best trial is the best candidate by nested
    CV (not a fold's or an in-sample number), and exactly one trial is the kit's choice, valued at its nested score."""
    cfg, oof, root = stage
    calibrate(cfg, [root / "oof" / "v.npz"], quiet_console())
    report = json.loads((root / "oof" / "v.calibration.json").read_text())
    rows = {r["key"]: r for r in report["rows"]}
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(cfg.calibrate.storage)}
    assert summaries["calibrate/v"].n_trials == len(rows)
    study = optuna.load_study(study_name="calibrate/v", storage=cfg.calibrate.storage)
    assert study.metric_names == ["nested-CV score"]
    best = max(rows.values(), key=lambda r: r["nested_cv"])
    assert study.best_trial.value == pytest.approx(best["nested_cv"]) and study.best_trial.params["candidate"] == best["key"]
    chosen = [t for t in study.trials if t.user_attrs["chosen"]]
    assert len(chosen) == 1 and chosen[0].params["candidate"] == report["chosen"]
    assert chosen[0].value == pytest.approx(report["chosen_nested_cv"])
    for t in study.trials:
        row = rows[t.params["candidate"]]
        assert t.user_attrs["se"] == pytest.approx(row["se"]) and t.user_attrs["in_sample"] == pytest.approx(report["in_sample"][row["key"]])
        assert sorted(t.intermediate_values) == [0, 1, 2]
        assert all(f"fold{k}.temperature" in t.user_attrs and f"fold{k}.alpha" in t.user_attrs for k in range(3))
    assert study.user_attrs["chosen"] == report["chosen"]
    assert study.user_attrs["trivial_baseline"] == pytest.approx(report["trivial_baseline"]["nested_cv"])
    searches = sorted(name for name in summaries if name.startswith("calibrate/v/offsets/"))
    assert searches == sorted(f"calibrate/v/offsets/{where}/from_{start}" for where in ("fold0", "fold1", "fold2", "all") for start in ("argmax", "bayes"))
    search = optuna.load_study(study_name="calibrate/v/offsets/all/from_argmax", storage=cfg.calibrate.storage)
    assert search.metric_names == ["in-sample score (fitting folds)"] and search.user_attrs["search"] == "coordinate"
    assert search.trials[0].params == {f"offset[{c}]": 0.0 for c in oof.classes} and len(search.trials) > 1


def test_optuna_search_studies_hold_the_sampled_trials(stage):
    """calibrate.search = "cmaes": each offsets search is an Optuna study of the sampler's trials; a run with
    no offsets candidate removes the stale search studies."""
    cfg, oof, root = stage
    cfg = cfg.model_copy(update={"calibrate": cfg.calibrate.model_copy(update={"search": "cmaes", "search_trials": 15})})
    calibrate(cfg, [root / "oof" / "v.npz"], quiet_console())
    study = optuna.load_study(study_name="calibrate/v/offsets/fold1/from_bayes", storage=cfg.calibrate.storage)
    assert len(study.trials) == 15 and study.user_attrs["search"] == "cmaes"
    assert len({tuple(t.params.values()) for t in study.trials}) == 15  # sampled proposals, each scored
    decision = json.loads((root / "oof" / "v.decision.json").read_text())
    assert "_search_trials" not in decision["extra"]  # the history lives in the studies, not in the decision file
    cfg = cfg.model_copy(update={"calibrate": cfg.calibrate.model_copy(update={"candidates": ["trivial", "argmax"]})})
    calibrate(cfg, [root / "oof" / "v.npz"], quiet_console())
    assert [s.study_name for s in optuna.get_all_study_summaries(cfg.calibrate.storage)] == ["calibrate/v"]


def test_stage_refuses_an_oof_made_for_another_metric(stage):
    cfg, oof, root = stage
    save_oof(root / "oof" / "w3.npz", oof, {"metric": LinearCountMetric(w=3.0).params()})
    expected = r"w3.json: made for metric linear\(a=1, b=1, w=3\) but .* has linear\(a=1, b=1, w=5\); rerun `kit train --variant w3`"
    _expect_refusal(cfg, root / "oof" / "w3.npz", root, expected)


@pytest.mark.slow
def test_stage_refuses_an_oof_trained_on_data_that_changed_since_unless_accepted(stage):
    from kit.data.sources import open_source

    cfg, oof, root = stage
    current = open_source(cfg).train.fingerprint
    save_oof(root / "oof" / "old.npz", oof, {"metric": LinearCountMetric().params(), "data_fingerprint": "before-the-label-fix"})
    expected = r"old.npz: trained on other data than the data source holds now .*kit train --variant old.*calibrate.accept_stale_oof = true"
    _expect_refusal(cfg, root / "oof" / "old.npz", root, expected)
    save_oof(root / "oof" / "same.npz", oof, {"metric": LinearCountMetric().params(), "data_fingerprint": current})
    calibrate(cfg, [root / "oof" / "same.npz"], quiet_console())
    accepting = cfg.model_copy(update={"calibrate": cfg.calibrate.model_copy(update={"accept_stale_oof": True})})
    calibrate(accepting, [root / "oof" / "old.npz"], quiet_console())
    assert (root / "oof" / "old.decision.json").is_file()


def test_stage_refuses_an_unknown_candidate(stage):
    cfg, oof, root = stage
    cfg = cfg.model_copy(update={"calibrate": cfg.calibrate.model_copy(update={"candidates": ["argmax", "vote"]})})
    _expect_refusal(cfg, root / "oof" / "v.npz", root, "calibrate.candidates.*unknown decision candidates")


def test_stage_candidates_key_limits_the_table(stage):
    cfg, oof, root = stage
    cfg = cfg.model_copy(update={"calibrate": cfg.calibrate.model_copy(update={"candidates": ["trivial", "argmax", "bayes"]})})
    calibrate(cfg, [root / "oof" / "v.npz"], quiet_console())
    report = json.loads((root / "oof" / "v.calibration.json").read_text())
    assert [r["key"] for r in report["rows"]] == ["trivial", "argmax", "bayes"]


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


@pytest.mark.subprocess
def test_cli_bad_input_is_one_line_exit_2(stage):
    cfg, oof, root = stage
    result = subprocess.run(
        [sys.executable, "-m", "kit", "--config", str(root / "competition.toml"), "calibrate", "--oof", str(root / "oof" / "missing.npz")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    assert "missing.npz" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_calibrate_default_variants(stage):
    cfg, oof, root = stage
    (root / "oof" / "v.npz").rename(root / "oof" / "cnn_demo.npz")  # the tiny config's variant
    (root / "oof" / "v.json").rename(root / "oof" / "cnn_demo.json")
    result = subprocess.run(
        [sys.executable, "-m", "kit", "--config", str(root / "competition.toml"), "calibrate"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (root / "oof" / "cnn_demo.decision.json").is_file()
    assert "nested CV" in result.stdout and "trivial baseline" in result.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_dashboard_serves_the_studies_over_http(stage):
    cfg, oof, root = stage
    calibrate(cfg, [root / "oof" / "v.npz"], quiet_console())
    names, out, port = dashboard_studies(root / "competition.toml", REPO)
    assert "calibrate/v" in names
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
    save_oof(tmp_path / "oof" / "ml.npz", oof, {"metric": LinearCountMetric().params()})
    console = quiet_console()
    decisions = calibrate(cfg, [tmp_path / "oof" / "ml.npz"], console)
    saved = Decision.load(tmp_path / "oof" / "ml.decision.json")
    report = json.loads((tmp_path / "oof" / "ml.calibration.json").read_text())
    assert [r["key"] for r in report["rows"]] == ["trivial", "threshold_0.5", "closed_form", "closed_form_alpha", "thresholds"]
    assert saved.rule == report["chosen"] != "trivial" and saved.thresholds.shape == (c,)
    assert saved.to_dict() == decisions["ml"].to_dict()
    assert report["fitted_per_fold"]["0"]["thresholds"]["thresholds"] is not None
    assert "per-class thresholds (fitted)" in console.export_text()  # kit.decision.names


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment carries `marker` (children inherit it, whoever adopts them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find orphaned processes")
@pytest.mark.subprocess
def test_sigkill_during_calibrate_leaves_no_process_behind(stage):
    """SIGKILL mid-run: no worker may outlive the command (the engine runs in the one process it started in)."""
    import signal
    import uuid

    cfg, oof, root = stage
    marker = f"KIT_TEST_MARKER={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.Popen([sys.executable, "-m", "kit", "--config", str(root / "competition.toml"), "calibrate", "--oof", str(root / "oof" / "v.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not (root / "oof" / "optuna.db").exists() and proc.poll() is None:
        time.sleep(0.05)  # the storage is opened once the inputs are checked: the fits are under way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)
    assert _processes_with(marker) == []


@pytest.mark.subprocess
def test_a_second_run_on_the_same_storage_is_refused_before_any_work(stage, capsys):
    """Two `kit calibrate` (or blend) at once on one SQLite file would interleave their studies: the second
    stops with one line naming the first, before it fits or writes anything."""
    from tests.conftest import assert_one_line_error, run_kit

    cfg, oof, root = stage
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom kit.studies import exclusive_studies\n"
         f"with exclusive_studies({cfg.calibrate.storage!r}, ['calibrate/v'], command='kit calibrate --variant v'):\n"
         "    print('held', flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in (root / "oof").iterdir())
        for command in (["calibrate", "--oof", root / "oof" / "v.npz"], ["blend", "--variants", "v", "--name", "second"]):
            code, _, err = run_kit(["--config", root / "competition.toml", *command], capsys)
            assert_one_line_error(code, err, cfg.calibrate.storage, f"pid {holder.pid}")
        assert sorted(p.name for p in (root / "oof").iterdir()) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
