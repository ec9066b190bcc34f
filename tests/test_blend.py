"""Blend: member calibration, weights and rule fitted inside each outer fold (no leak), test-time aggregation,
and the stage's files."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy.special import log_softmax

from kit.artifacts import OOF, load_oof, save_oof
from kit.config import BlendConfig, CalibrateConfig, MetricConfig
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import LinearCountMetric, build_metric
from kit.decision.nested import nested_cv
from kit.ensemble.aggregate import AGGREGATIONS, TEST_AGGREGATION, aggregate_predict
from kit.ensemble.pipeline import Member, fit_blends, mixture_scorer
from kit.ensemble.select import BLEND_WEIGHTINGS, select_blend
from kit.ensemble.weights import equal, greedy, mix, single_best
from kit.errors import KitError
from kit.stages.blend import blend
from kit.submission import check_submission_file
from tests.conftest import make_layout

WEIGHTS = LinearCountMetric()
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


def _members(zs, train_prior=PRIOR, k=5, m=10):
    return [Member(f"v{i}", z, np.zeros((k, m, z.shape[1]), np.float32), np.asarray(train_prior)) for i, z in enumerate(zs)]


def _context(classes=("a", "b", "c", "d")):
    return FitContext("multi-class", tuple(classes), WEIGHTS, PRIOR, CalibrateConfig())


def _nested_pipeline(zs, labels, fold, weightings, rules, blend_settings=None):
    members, ctx = _members(zs), _context()
    fitted_per_fold = {}

    def fit_rows(rows):
        return fit_blends(members, labels, rows, weightings, candidates_for("multi-class", WEIGHTS, rules), ctx, blend_settings=blend_settings)

    def evaluate(fitted, held):
        return {f"{w} + {r}": WEIGHTS.score(labels[held], b.predict([m.logits[held] for m in members])) for (w, r), b in fitted.items()}

    scores = nested_cv(fit_rows, evaluate, fold, on_fold=lambda k, f: fitted_per_fold.__setitem__(k, f))
    return scores, fitted_per_fold


def test_blend_beats_its_best_member_in_nested_cv():
    labels, fold, zs = complementary()
    scores, per_fold = _nested_pipeline(zs, labels, fold, ["single_best", "greedy"], ["bayes"])
    assert scores["greedy + bayes"].mean >= scores["single_best + bayes"].mean + 0.05
    for fitted in per_fold.values():  # every fold's greedy weights use both members
        w = fitted[("greedy", "bayes")].weights
        assert w.sum() == pytest.approx(1.0) and (w > 0).all()


def test_greedy_selection_never_below_best_single_on_its_rows():
    rng = np.random.default_rng(3)
    labels, _, _ = complementary(400, seed=3)
    zs = [np.log(PRIOR).astype(np.float32) + rng.normal(0, s, labels.shape).astype(np.float32) + labels * g
          for s, g in ((1.0, 1.0), (2.0, 2.0), (0.5, 0.2))]
    score = mixture_scorer(labels, _context())
    w = greedy(zs, score, steps=10)
    assert score(mix(zs, w)) >= max(score(z) for z in zs) - 1e-12
    assert single_best(zs, score).tolist() == np.eye(3)[int(np.argmax([score(z) for z in zs]))].tolist()
    assert equal(zs, score) == pytest.approx(np.full(3, 1 / 3))


def test_nested_blend_never_sees_the_held_out_fold():
    labels, fold, zs = complementary(600, seed=1)
    _, reference = _nested_pipeline(zs, labels, fold, ["greedy"], ["bayes", "offsets"])
    rng = np.random.default_rng(0)
    for k in (0, 3):
        scrambled = labels.copy()
        held = np.flatnonzero(fold == k)
        scrambled[held] = scrambled[rng.permutation(held)][:, ::-1]  # destroy the held-out labels
        _, fitted = _nested_pipeline(zs, scrambled, fold, ["greedy"], ["bayes", "offsets"])
        for key, b in fitted[k].items():
            np.testing.assert_array_equal(b.weights, reference[k][key].weights)
            assert b.decision.to_dict() == reference[k][key].decision.to_dict()
            assert [c.temperature for c in b.calibrations] == [c.temperature for c in reference[k][key].calibrations]


def test_stacker_is_fitted_on_the_outer_training_rows_only():
    """Poisoned held-out labels of fold k leave fold k's stacker (C chosen by inner CV, coefficients) and the rule
    fitted on its output unchanged; class-balanced stacking predicts under a flat prior and says so."""
    labels, fold, zs = complementary(600, seed=1)
    _, reference = _nested_pipeline(zs, labels, fold, ["stack"], ["bayes"])
    rng = np.random.default_rng(0)
    for k in (0, 3):
        scrambled = labels.copy()
        held = np.flatnonzero(fold == k)
        scrambled[held] = scrambled[rng.permutation(held)][:, ::-1]
        _, fitted = _nested_pipeline(zs, scrambled, fold, ["stack"], ["bayes"])
        got, ref = fitted[k][("stack", "bayes")], reference[k][("stack", "bayes")]
        assert got.weights is None and got.stacker.chosen_c == ref.stacker.chosen_c
        assert got.stacker.inner_log_loss == ref.stacker.inner_log_loss and len(got.stacker.inner_log_loss[0]) == 4
        np.testing.assert_array_equal(got.stacker.models[0][-1].coef_, ref.stacker.models[0][-1].coef_)
        assert got.decision.to_dict() == ref.decision.to_dict()
    # the poison does reach the stackers of the folds that train on those rows
    assert not np.array_equal(fitted[1][("stack", "bayes")].stacker.models[0][-1].coef_, reference[1][("stack", "bayes")].stacker.models[0][-1].coef_)
    balanced = fit_blends(_members(zs), labels, np.ones(len(labels), dtype=bool), ["stack"], candidates_for("multi-class", WEIGHTS, ["bayes"]),
                          _context(), blend_settings=BlendConfig(stack_class_weight="balanced"))[("stack", "bayes")]
    assert balanced.stacker.output_prior == pytest.approx(np.full(4, 0.25)) and balanced.stacker.describe()["class_weight"] == "balanced"
    assert balanced.decision.calibrator.train_prior == pytest.approx(np.full(4, 0.25))  # the rule's prior correction undoes it


def test_stack_is_compared_and_chosen_where_members_complement_each_other():
    """Complementary members: a per-class combination beats any one weight per member, and the one-SE choice takes it."""
    labels, fold, zs = complementary(1000)
    rules = candidates_for("multi-class", WEIGHTS, ["argmax", "bayes", "offsets"])
    selection = select_blend(_members(zs), labels, fold, _context(), BLEND_WEIGHTINGS, rules)
    assert [p for p in selection.pairs if p[0] == "stack"] == [("stack", "argmax"), ("stack", "bayes"), ("stack", "offsets")]
    assert selection.pairs[-1] == ("stack", "offsets")  # the most fitted pair is the last in simplicity
    assert selection.chosen[0] == "stack" and selection.final.stacker is not None
    best_weighted = max(s.mean for p, s in selection.scores.items() if p[0] != "stack")
    assert selection.scores[selection.chosen].mean > best_weighted + 0.2
    pred = aggregate_predict(selection.final, [np.stack([z[:50]] * 3) for z in zs])  # the test set through the stacker
    np.testing.assert_array_equal(pred, selection.final.predict([z[:50] for z in zs]))


@pytest.mark.parametrize(
    "line, key",
    [("stack_cs = [0.1, 0.0]", "blend.stack_cs.1"), ("stack_cs = []", "blend.stack_cs"), ("stack_cs = [nan]", "blend.stack_cs.0"),
     ("stack_inner_folds = 1", "blend.stack_inner_folds"), ("stack_max_inner_rows = 10", "blend.stack_max_inner_rows"),
     ('stack_class_weight = "inverse"', "blend.stack_class_weight"), ("stack_c = 1.0", "blend.stack_c")],
)
def test_blend_config_keys_refused_with_one_line(tmp_path, capsys, line, key):
    from tests.conftest import assert_one_line_error, run_kit

    path = tmp_path / "bad.toml"
    path.write_text(f"[blend]\n{line}\n")
    code, _, err = run_kit(["--config", path, "blend"], capsys)
    assert_one_line_error(code, err, str(path), f"'{key}'")


def test_member_calibration_undoes_each_members_own_sampler():
    """The same member, once as is and once as if trained under a flat sampler prior q: after each one's own
    (T, α) the corrected member is as well calibrated as the plain one, and the blend decides the same."""
    labels, fold, zs = complementary(1500, seed=6)
    q = np.full(4, 0.25)
    shifted = [z - np.log(PRIOR).astype(np.float32) + np.log(q).astype(np.float32) for z in zs]
    rows = np.ones(len(labels), dtype=bool)
    rule = candidates_for("multi-class", WEIGHTS, ["bayes"])
    plain = fit_blends(_members(zs), labels, rows, ["equal"], rule, _context())[("equal", "bayes")]
    corrected = fit_blends(_members(shifted, train_prior=q), labels, rows, ["equal"], rule, _context())[("equal", "bayes")]
    y = labels.argmax(axis=1)
    for a, b, z, s in zip(plain.calibrations, corrected.calibrations, zs, shifted):
        nll_plain, nll_corrected = (-lp[np.arange(len(y)), y].mean() for lp in (a.log_probs(z), b.log_probs(s)))
        uncorrected = -log_softmax(s.astype(np.float64), axis=1)[np.arange(len(y)), y].mean()
        assert nll_corrected < uncorrected - 0.03 and nll_corrected <= nll_plain * 1.01
    ignored = fit_blends(_members(shifted), labels, rows, ["equal"], rule, _context())[("equal", "bayes")]  # q not declared

    def agreement(b, member_logits):
        return (plain.predict(zs).argmax(axis=1) == b.predict(member_logits).argmax(axis=1)).mean()

    assert agreement(corrected, shifted) > 0.9 and agreement(corrected, shifted) > agreement(ignored, shifted) + 0.03


def test_test_time_aggregation_methods():
    labels, fold, zs = complementary(400, seed=7)
    rng = np.random.default_rng(1)
    rows = np.ones(len(labels), dtype=bool)
    members = _members(zs)
    blend_ = fit_blends(members, labels, rows, ["equal"], candidates_for("multi-class", WEIGHTS, ["bayes"]), _context())[("equal", "bayes")]
    same = [np.stack([z[:50]] * 3) for z in zs]  # three identical fold models: every aggregation is the same decision
    expected = blend_.predict([z[:50] for z in zs])
    for how in AGGREGATIONS:
        np.testing.assert_array_equal(aggregate_predict(blend_, same, how), expected)
    noisy = [np.stack([z[:50] + rng.normal(0, 1, z[:50].shape).astype(np.float32) for _ in range(3)]) for z in zs]
    for how in AGGREGATIONS:
        pred = aggregate_predict(blend_, noisy, how)
        assert pred.shape == (50, 4) and (pred.sum(axis=1) == 1).all()
    assert TEST_AGGREGATION == "mean_probs"  # the winner of benchmarks/bench_aggregation.py on the demo's outputs
    np.testing.assert_array_equal(aggregate_predict(blend_, noisy), aggregate_predict(blend_, noisy, "mean_probs"))
    assert (aggregate_predict(blend_, noisy, "mean_probs") != aggregate_predict(blend_, noisy, "mean_logits")).any()
    with pytest.raises(ValueError):
        aggregate_predict(blend_, noisy, "median")


# the stage


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
        save_oof(cfg.paths.oof / f"{name}.npz", OOF(np.array(classes), ids, fold, logits, np.array(test_ids), test_logits, train_prior),
                 {"metric": WEIGHTS.params()})
    return cfg, labels


def test_blend_stage_writes_submission_oof_and_pictures(tmp_path, capsys):
    cfg, labels = _stage_setup(tmp_path)
    out = blend(cfg, None, "t")
    assert out == cfg.paths.submissions / "t.csv"
    frame = check_submission_file(out, cfg)
    assert len(frame) == 40
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["variants"] == ["v1", "v2"]
    assert meta["weighting"] == "stack" and meta["weights"] is None  # complementary members: the stacker wins
    assert len(meta["stacker"]["chosen_c"]) == 1 and set(meta["weights_per_fold"]) == {str(k) for k in range(5)}
    assert meta["nested_cv_score"] > meta["trivial_baseline"]
    assert meta["metric"] == WEIGHTS.params() and meta["test_aggregation"] == "mean_probs"
    table = {row["key"]: row for row in meta["nested_cv_table"]}
    assert len(table) == 12 and {"stack + argmax", "stack + bayes", "stack + offsets"} <= set(table)
    assert table[f"{meta['weighting']} + {meta['decision_rule']}"]["chosen"]
    assert meta["nested_cv_score"] == table[f"{meta['weighting']} + {meta['decision_rule']}"]["nested_cv"]
    blended = load_oof(cfg.paths.oof / "blend_t.npz")
    assert blended.logits.shape == (300, 4) and blended.test_logits.shape == (5, 40, 4)
    printed = capsys.readouterr().out
    for suffix in ("confusion", "per_class", "reliability"):
        png = cfg.paths.submissions / f"t_{suffix}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"t_{suffix}.png" in printed
    assert "trivial baseline" in printed and "nested CV" in printed
    study = optuna.load_study(study_name="blend/t", storage=cfg.calibrate.storage)  # one trial per weighting × rule, plus trivial
    assert study.metric_names == ["nested-CV score"] and len(study.trials) == len(table) + 1
    best = max(table.values(), key=lambda r: r["nested_cv"])
    assert study.best_trial.value == pytest.approx(best["nested_cv"])
    chosen = [t for t in study.trials if t.user_attrs["chosen"]]
    assert len(chosen) == 1 and chosen[0].value == pytest.approx(meta["nested_cv_score"])
    assert chosen[0].params == {"weighting": meta["weighting"], "rule": meta["decision_rule"]}
    assert chosen[0].user_attrs["in_sample"] == pytest.approx(meta["in_sample_score"])
    assert set(chosen[0].intermediate_values) == set(range(5)) and "fold0.members" in chosen[0].user_attrs


@pytest.mark.slow
def test_display_names_are_one_vocabulary_in_calibrate_blend_and_studies(tmp_path, capsys):
    """calibrate's report, blend's table and provenance, and both studies name each rule with kit.decision.names."""
    from kit.decision.candidates import CANDIDATES
    from kit.decision.names import DISPLAY_NAMES, display_name
    from kit.ensemble.weights import WEIGHTINGS
    from kit.stages.calibrate import calibrate

    assert {CANDIDATES.get(key).name for key in CANDIDATES} | set(WEIGHTINGS) <= set(DISPLAY_NAMES)
    cfg, _ = _stage_setup(tmp_path)
    calibrate(cfg, [cfg.paths.oof / "v1.npz"])
    blend(cfg, ["v1", "v2"], "names")
    printed = capsys.readouterr().out
    calibration = {r["key"]: r["label"] for r in json.loads((cfg.paths.oof / "v1.calibration.json").read_text())["rows"]}
    meta = json.loads((cfg.paths.submissions / "names.json").read_text())
    blended = {r["key"]: r["label"] for r in meta["nested_cv_table"]}
    for rule in ("argmax", "bayes", "offsets"):
        assert calibration[rule] == display_name(rule)
        assert blended[f"equal + {rule}"] == f"{display_name('equal')} + {calibration[rule]}"
    chosen = json.loads((cfg.paths.oof / "v1.calibration.json").read_text())["chosen"]
    assert f"chosen: {display_name(chosen)} ({chosen})" in printed  # the summary lines are not wrapped, the tables may be
    assert f"({display_name((meta['weighting'], meta['decision_rule']))}, members' T and α fitted inside the blend;" in printed
    study = optuna.load_study(study_name="calibrate/v1", storage=cfg.calibrate.storage)
    assert {t.params["candidate"]: t.user_attrs["label"] for t in study.trials} == calibration
    study = optuna.load_study(study_name="blend/names", storage=cfg.calibrate.storage)
    assert {t.user_attrs["candidate"]: t.user_attrs["label"] for t in study.trials if t.params["rule"] != "trivial"} == blended


def test_degenerate_results_get_a_line_of_their_own():
    from kit.decision.names import degenerate_notes

    one_class = np.eye(3, dtype=np.uint8)[[1, 1, 1]]
    assert degenerate_notes("argmax", one_class, "multi-class", ["a", "b", "c"]) == ["note: every row is predicted as the single class 'b'"]
    assert "trivial baseline" in degenerate_notes("trivial", np.eye(3, dtype=np.uint8), "multi-class")[0]
    assert degenerate_notes(None, np.zeros((4, 3), dtype=np.uint8), "multi-label") == ["note: this multi-label prediction has no positive label in any row"]
    assert degenerate_notes("bayes", np.eye(3, dtype=np.uint8), "multi-class") == []


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


@pytest.mark.slow
def test_blend_reads_no_decision_file_and_shows_fresh_own_scores_only(tmp_path, capsys):
    from kit.stages.calibrate import calibrate

    cfg, _ = _stage_setup(tmp_path)
    blend(cfg, ["v1", "v2"], "before")
    calibrate(cfg, [cfg.paths.oof / "v1.npz"])
    poisoned = json.loads((cfg.paths.oof / "v1.decision.json").read_text())
    (cfg.paths.oof / "v1.decision.json").write_text(json.dumps({**poisoned, "temperature": 50.0}))
    blend(cfg, ["v1", "v2"], "after")
    before, after = (json.loads((cfg.paths.submissions / f"{n}.json").read_text()) for n in ("before", "after"))
    assert before["decision"] == after["decision"] and before["nested_cv_score"] == after["nested_cv_score"]
    own = after["single_variant_own_decision"]
    assert own["v2"] is None and own["v1"]["nested_cv"] == pytest.approx(json.loads((cfg.paths.oof / "v1.calibration.json").read_text())["chosen_nested_cv"])
    v1 = load_oof(cfg.paths.oof / "v1.npz")  # retrained: its calibration report is stale and is not shown
    save_oof(cfg.paths.oof / "v1.npz", OOF(**{**v1.__dict__, "logits": v1.logits + 0.01}), {"metric": WEIGHTS.params()})
    blend(cfg, ["v1", "v2"], "stale")
    assert json.loads((cfg.paths.submissions / "stale.json").read_text())["single_variant_own_decision"]["v1"] is None


def test_blend_refuses_an_oof_made_for_another_metric(tmp_path):
    cfg, _ = _stage_setup(tmp_path)
    v2 = load_oof(cfg.paths.oof / "v2.npz")
    save_oof(cfg.paths.oof / "v2.npz", v2, {"metric": LinearCountMetric(w=3.0).params()})
    with pytest.raises(KitError, match=r"v2.json: made for metric linear\(a=1, b=1, w=3\).*rerun `kit train --variant v2`"):
        blend(cfg, ["v1", "v2"], "x")
    assert not (cfg.paths.submissions / "x.csv").exists()


def test_blend_under_a_metric_without_a_bayes_rule_compares_the_rules_it_supports(tmp_path):
    """macro-F1 has no closed-form Bayes rule: the blend drops that rule instead of stopping."""
    cfg, _ = _stage_setup(tmp_path)
    cfg = cfg.model_copy(update={"metric": MetricConfig(name="macro_f1")})
    for name in ("v1", "v2"):
        save_oof(cfg.paths.oof / f"{name}.npz", load_oof(cfg.paths.oof / f"{name}.npz"), {"metric": build_metric(cfg.metric).params()})
    meta = json.loads(blend(cfg, None, "f1").with_suffix(".json").read_text())
    rules = {row["key"].split(" + ")[1] for row in meta["nested_cv_table"] if " + " in row["key"]}
    assert "bayes" not in rules and {"argmax", "offsets"} <= rules


def test_multi_label_blend_and_score_on_a_medmnist_npz(tmp_path):
    from kit.config import CalibrateConfig, CompetitionConfig, DataConfig, FoldsConfig, PathsConfig
    from kit.data.folds import make_folds
    from kit.data.sources import open_source, test_labels
    from kit.data.synth import generate
    from kit.stages.score import score_file

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
        save_oof(cfg.paths.oof / f"{name}.npz", OOF(np.array(source.classes), source.train.ids, folds, logits, source.test.ids, test, q),
                 {"metric": build_metric(cfg.metric).params()})
    out = blend(cfg, None, "ml")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["decision"]["task"] == "multi-label" and meta["synthetic"] is True
    table = {row["key"]: row["nested_cv"] for row in meta["nested_cv_table"]}
    assert meta["nested_cv_score"] > meta["trivial_baseline"]
    assert table["greedy + thresholds"] > table["single_best + thresholds"]  # complementary members: the blend helps
    assert out.read_text().splitlines()[0] == ",".join(["id", *source.classes])
    check_submission_file(out, cfg)  # no sample: checked against the npz's test ids and classes
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(out.read_text().splitlines()[:-1]) + "\n")  # one test id short
    with pytest.raises(KitError, match=r"59 rows, expected 60 \(one per test id, as in the test ids of the data source\)"):
        check_submission_file(bad, cfg)
    result = score_file(out, None, cfg, compare_argmax=True)  # solution: the npz's test labels
    assert result["score"] > result["trivial_baseline"] == pytest.approx(-cfg.metric.w)
    assert set(result["argmax"]) == {"a", "b"}


def _toml(cfg, path):
    path.write_text(
        f'task = "multi-class"\nvariants = ["v1", "v2"]\n[data]\ndir = "{cfg.data.dir}"\n'
        f'[folds]\npath = "{cfg.folds.path}"\n[calibrate]\nstorage = "{cfg.calibrate.storage}"\n'
        f'[paths]\noof = "{cfg.paths.oof}"\nsubmissions = "{cfg.paths.submissions}"\n'
    )
    return path


@pytest.mark.subprocess
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


def test_cli_blend_oof_files_as_members(tmp_path, capsys):
    """`kit blend --oof FILE` (repeatable), as `kit calibrate --oof`: members named by their file names, read from
    anywhere; --oof with --variants, or two files with one name, is one line and exit code 2."""
    import shutil

    from tests.conftest import assert_one_line_error, run_kit

    cfg, _ = _stage_setup(tmp_path)
    config = _toml(cfg, tmp_path / "c.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for src, dst in (("v1", "first"), ("v2", "second")):
        for suffix in (".npz", ".json"):
            shutil.copy(cfg.paths.oof / f"{src}{suffix}", elsewhere / f"{dst}{suffix}")
    code, out, err = run_kit(["--config", config, "blend", "--oof", elsewhere / "first.npz", "--oof", elsewhere / "second.npz", "--name", "files"], capsys)
    assert code == 0, err
    assert json.loads((cfg.paths.submissions / "files.json").read_text())["variants"] == ["first", "second"]
    assert (cfg.paths.oof / "blend_files.npz").is_file()
    code, _, err = run_kit(["--config", config, "blend", "--oof", elsewhere / "first.npz", "--variants", "v1", "--name", "both"], capsys)
    assert_one_line_error(code, err, "--oof", "--variants", "not both")
    (elsewhere / "sub").mkdir()
    shutil.copy(elsewhere / "first.npz", elsewhere / "sub" / "first.npz")
    code, _, err = run_kit(["--config", config, "blend", "--oof", elsewhere / "first.npz", "--oof", elsewhere / "sub" / "first.npz"], capsys)
    assert_one_line_error(code, err, "two files with one name")
    assert not (cfg.paths.submissions / "both.csv").exists() and not (cfg.paths.submissions / "blend.csv").exists()


def test_reliability_bins_by_hand():
    from kit.plots import reliability_bins

    conf, acc, count, ece = reliability_bins(np.array([0.05, 0.95, 0.95]), np.array([0, 1, 0]), n_bins=10)
    assert count[0] == 1 and count[9] == 2 and count[1:9].sum() == 0
    assert acc[9] == pytest.approx(0.5) and conf[9] == pytest.approx(0.95)
    assert ece == pytest.approx(0.05 / 3 + 2 / 3 * 0.45)


def test_a_blend_worse_than_trivial_in_every_fold_submits_the_trivial_prediction_and_says_so(tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from kit.decision.nested import NestedScore
    from kit.stages import blend as stage

    trivial = NestedScore((-3.0, -3.0))
    def selection(*folds):
        return SimpleNamespace(pairs=[("a", "x"), ("b", "y")], scores={("a", "x"): NestedScore(folds[0]), ("b", "y"): NestedScore(folds[1])},
                               trivial=trivial)
    linear, log_loss = build_metric({"name": "linear"}), build_metric({"name": "log_loss"})
    assert stage._worse_than_trivial_everywhere(selection((-3.5, -3.1), (-4.0, -3.2)), linear)
    assert not stage._worse_than_trivial_everywhere(selection((-3.5, -3.0), (-4.0, -3.2)), linear)  # a tie in one fold is not worse
    assert not stage._worse_than_trivial_everywhere(selection((-3.5, -3.1), (-2.0, -3.2)), linear)  # better in one fold
    assert not stage._worse_than_trivial_everywhere(selection((-3.5, -3.1), (-4.0, -3.2)), log_loss)  # lower is better: all better
    assert stage._worse_than_trivial_everywhere(selection((-2.5, -2.9), (-2.0, -2.8)), log_loss)

    cfg, labels = _stage_setup(tmp_path)
    monkeypatch.setattr(stage, "_worse_than_trivial_everywhere", lambda selection, metric: True)
    out = blend(cfg, None, "anti")
    err = capsys.readouterr().err
    assert "scores below the trivial baseline in every fold" in err and "anti.csv holds the trivial prediction" in err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["decision_rule"] == "trivial" and meta["nested_cv_score"] == meta["trivial_baseline"]
    majority = ["No Finding", "Effusion", "Mass", "Hernia"][int(labels.sum(axis=0).argmax())]
    frame = check_submission_file(out, cfg)
    assert (frame[majority].astype(int) == 1).all() and frame.drop(columns=["id", majority]).astype(int).to_numpy().sum() == 0
