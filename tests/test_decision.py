"""The decision engine on OOF drawn from known models: calibration (T, α, prior correction), the Bayes
rule, thresholds, the offsets search, the candidate registry, nested CV and the one-SE choice, and the
decision file's validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit, log_softmax, softmax

from kit.config import CalibrateConfig
from kit.decision.calibration import calibrated_logits, fit_temperature, fit_temperature_and_alpha, log_probs, prior_shift
from kit.decision.candidates import CANDIDATES, FitContext, candidates_for, fit, fit_all
from kit.decision.metrics import BalancedAccuracy, LinearCountMetric, MacroF1, QuadraticWeightedKappa
from kit.decision.nested import NestedScore, choose, nested_cv
from kit.decision.rules import Decision, closed_form_decision, decide_indices, fit_thresholds
from kit.decision.search import coordinate_ascent, offset_grid, sampled_search, search_offsets
from kit.decision.select import select_decision
from kit.errors import KitError

W = LinearCountMetric()


def draw_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per row drawn from each row's distribution (inverse CDF)."""
    u = rng.random((len(probs), 1))
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)


def skewed_prior(c: int) -> np.ndarray:
    pi = 0.5 ** np.arange(c)  # 0.5, 0.25, ... : a head class and a thin tail
    return pi / pi.sum()


def context(classes, train_prior, metric=W, **settings) -> FitContext:
    return FitContext("multi-class", tuple(classes), metric, np.asarray(train_prior, dtype=float), CalibrateConfig(**settings))


def test_prior_correction_undoes_a_known_shift_multiclass():
    rng = np.random.default_rng(0)
    c, n = 6, 2000
    pi = skewed_prior(c)
    q = np.full(c, 1 / c)  # a balanced sampler
    evidence = rng.normal(0, 1.5, size=(n, c))
    true_log_post = log_softmax(evidence + np.log(pi), axis=1)
    model_logits = evidence + np.log(q) + rng.normal(0, 3, size=(n, 1))  # trained under q (+ a row constant)
    corrected = log_probs(calibrated_logits(model_logits, 1.0, 1.0, prior_shift(q, pi, "multi-class")), "multi-class")
    np.testing.assert_allclose(corrected, true_log_post, atol=1e-10)


def test_prior_correction_multilabel_per_class():
    rng = np.random.default_rng(1)
    pi, q = np.array([0.02, 0.1, 0.4]), np.array([0.3, 0.5, 0.5])
    true_logit = rng.normal(0, 2, size=(500, 3)) + np.log(pi / (1 - pi))
    model_logit = true_logit - np.log(pi / (1 - pi)) + np.log(q / (1 - q))
    got = log_probs(calibrated_logits(model_logit, 1.0, 1.0, prior_shift(q, pi, "multi-label")), "multi-label")
    np.testing.assert_allclose(np.exp(got), expit(true_logit), atol=1e-10)


@pytest.mark.parametrize("t_true", [0.5, 2.0])
def test_fit_temperature_recovers_the_true_temperature(t_true):
    rng = np.random.default_rng(2)
    scores = rng.normal(0, 2, size=(6000, 5))
    labels = np.eye(5, dtype=np.uint8)[draw_labels(softmax(scores, axis=1), rng)]
    assert fit_temperature(scores * t_true, labels) == pytest.approx(t_true, rel=0.1)
    ml_labels = (rng.random(scores.shape) < expit(scores)).astype(np.uint8)
    assert fit_temperature(scores * t_true, ml_labels, task="multi-label") == pytest.approx(t_true, rel=0.1)


@pytest.mark.parametrize("alpha_true", [0.5, 1.0])
def test_fit_temperature_and_alpha_recovers_a_partial_prior_correction(alpha_true):
    """A model that undid only part of its sampler's shift (α ≈ 0.5 on the demo, docs/decision.md)."""
    rng = np.random.default_rng(3)
    c, n = 5, 20000
    pi = skewed_prior(c)
    q = np.sqrt(pi) / np.sqrt(pi).sum()
    shift = np.log(pi) - np.log(q)
    evidence = rng.normal(0, 1.5, size=(n, c))
    labels = np.eye(c, dtype=np.uint8)[draw_labels(softmax(evidence + np.log(pi), axis=1), rng)]
    logits = 1.5 * (evidence + np.log(pi) - alpha_true * shift)  # over-confident by 1.5, prior moved part of the way
    t, alpha = fit_temperature_and_alpha(logits, labels, shift)
    assert t == pytest.approx(1.5, rel=0.05)
    assert alpha == pytest.approx(alpha_true, abs=0.08)


def test_bayes_rule_is_the_expected_score_optimum_and_beats_argmax():
    rng = np.random.default_rng(3)
    c, n = 5, 4000
    pi = skewed_prior(c)
    probs = softmax(rng.normal(0, 1.2, size=(n, c)) + np.log(pi), axis=1)  # calibrated posteriors
    target = probs.sum(axis=0) / n
    counts = probs.sum(axis=0)
    gain = np.array([[(1 if k == y else -1) / counts[k] - (0 if k == y else 5 / counts[y]) for y in range(c)] for k in range(c)])
    optimal = (probs @ gain.T).argmax(axis=1)
    decision = closed_form_decision("multi-class", list("abcde"), target, target, W)
    np.testing.assert_array_equal(decision.predict_indices(np.log(probs)), optimal)
    bayes, argmax = [], []
    for _ in range(10):
        labels = np.eye(c, dtype=np.uint8)[draw_labels(probs, rng)]
        bayes.append(W.score(labels, decision.predict(np.log(probs))))
        argmax.append(W.score(labels, np.eye(c, dtype=np.uint8)[probs.argmax(axis=1)]))
    assert min(b - a for b, a in zip(bayes, argmax)) > 0 and np.mean(bayes) > np.mean(argmax) + 0.1


def test_macro_f1_has_no_bayes_rule_so_the_closed_form_is_argmax():
    d = closed_form_decision("multi-class", list("abc"), [0.6, 0.3, 0.1], [0.6, 0.3, 0.1], MacroF1())
    assert not d.bayes
    logits = np.random.default_rng(4).normal(size=(50, 3))
    np.testing.assert_array_equal(d.predict_indices(logits), (logits - np.log([0.6, 0.3, 0.1]) + np.log([0.6, 0.3, 0.1])).argmax(axis=1))


def test_decide_indices_offsets_move_predictions_and_zero_offsets_are_the_rule():
    rng = np.random.default_rng(5)
    lp = log_softmax(rng.normal(size=(500, 4)), axis=1)
    prior = np.array([0.7, 0.2, 0.07, 0.03])
    weights = W.bayes_weights(prior)
    base = decide_indices(lp, np.zeros(4), weights)
    np.testing.assert_array_equal(base, np.argmax(np.exp(lp) * weights[0] + weights[1], axis=1))
    pushed = decide_indices(lp, np.array([0.0, 0.0, 0.0, 2.0]), weights)
    assert (pushed == 3).sum() > (base == 3).sum()
    np.testing.assert_array_equal(decide_indices(lp, np.zeros(4), None), lp.argmax(axis=1))


def test_thresholds_metric_f1_youden_and_calibrated_cost_threshold():
    rng = np.random.default_rng(6)
    y = (rng.random((400, 3)) < 0.3).astype(np.uint8)
    y[:, 2] = 0  # a class without positives keeps the closed-form threshold
    p = np.where(y == 1, rng.uniform(0.6, 1, y.shape), rng.uniform(0, 0.4, y.shape))
    for method in ("metric", "f1", "youden"):
        t = fit_thresholds(p, y, method, W)
        np.testing.assert_array_equal((p >= t)[:, :2], y[:, :2].astype(bool))
        assert t[2] == pytest.approx(1 / 7)
    probs = rng.uniform(0, 1, size=(40000, 1))
    labels = (rng.random((40000, 1)) < probs).astype(np.uint8)
    assert fit_thresholds(probs, labels, "metric", W)[0] == pytest.approx(1 / 7, abs=0.03)  # b / (a + b + w)
    with pytest.raises(ValueError):
        fit_thresholds(probs, labels, "magic", W)


def test_coordinate_ascent_starts_at_the_rule_never_loses_in_sample_and_shrinks_small_classes():
    rng = np.random.default_rng(7)
    c, n = 5, 3000
    pi = skewed_prior(c)
    probs = softmax(rng.normal(0, 1.0, size=(n, c)) + np.log(pi) + rng.normal(0, 0.6, c), axis=1)  # biased per class
    y = draw_labels(softmax(np.log(probs) - rng.normal(0, 0.6, c), axis=1), rng)
    lp = np.log(probs)
    counts = np.bincount(y, minlength=c)
    grid = offset_grid(counts, 2.0, 17, 20.0)
    assert np.abs(grid[-1]).max() < np.abs(grid[0]).max()  # the smallest class may move least
    np.testing.assert_allclose(grid.max(axis=1), 2.0 * counts / (counts + 20.0))
    for weights in (None, W.bayes_weights(counts / n)):
        result = coordinate_ascent(lp, y, W, weights, grid, sweeps=3)
        start = W.score_from_indices(y, decide_indices(lp, np.zeros(c), weights), c)
        assert result.start_score == pytest.approx(start)
        assert result.score >= start
        # the reported score is the score of the decision it returns (exactly, ties included)
        assert W.score_from_indices(y, decide_indices(lp, result.offsets, weights), c) == pytest.approx(result.score)
        assert all(abs(o) <= g + 1e-12 for o, g in zip(np.abs(result.offsets), grid.max(axis=1)))


def test_searches_return_their_real_history_as_optuna_trials():
    """Each search's trials are the proposals it scored: the start first (zero offsets, the start score), then
    the coordinate steps or the sampler's draws, inside the shrunk ranges; the result is the best of them."""
    import optuna

    rng = np.random.default_rng(3)
    c, n = 4, 1500
    pi = skewed_prior(c)
    probs = softmax(rng.normal(0, 1.0, size=(n, c)) + np.log(pi) + rng.normal(0, 0.6, c), axis=1)
    y = draw_labels(softmax(np.log(probs) - rng.normal(0, 0.6, c), axis=1), rng)
    lp, counts, names = np.log(probs), np.bincount(y, minlength=c), [f"offset[{k}]" for k in range(c)]
    grid = offset_grid(counts, 2.0, 9, 20.0)
    coord = coordinate_ascent(lp, y, W, None, grid, sweeps=2, names=names)
    assert coord.trials[0].params == dict.fromkeys(names, 0.0) and coord.trials[0].value == pytest.approx(coord.start_score)
    assert 1 + c <= len(coord.trials) <= 1 + 2 * c and max(t.value for t in coord.trials) == pytest.approx(coord.score)
    assert sum(t.user_attrs.get("accepted", False) for t in coord.trials) == len(coord.history)
    for sampler in ("cmaes", "tpe"):
        found = sampled_search(lp, y, W, None, np.abs(grid).max(axis=1), sampler, n_trials=40, names=names)
        assert len(found.trials) == 40 and all(t.state == optuna.trial.TrialState.COMPLETE for t in found.trials)
        assert found.trials[0].params == dict.fromkeys(names, 0.0) and found.score >= found.start_score
        assert len({tuple(t.params.values()) for t in found.trials}) > 30  # sampled, not replayed
        assert W.score_from_indices(y, decide_indices(lp, found.offsets, None), c) == pytest.approx(found.score)
        assert all(abs(t.params[m]) <= b + 1e-12 for t in found.trials for m, b in zip(names, np.abs(grid).max(axis=1)))
    settings = CalibrateConfig(search="cmaes", search_trials=25, grid_points=9)
    assert len(search_offsets(lp, y, W, None, counts, settings, names=names).trials) == 25
    with pytest.raises(ValueError):
        CalibrateConfig(search="random")


def test_candidates_registry_order_and_metric_support():
    names = [c.name for c in candidates_for("multi-class", W)]
    assert names == ["trivial", "argmax", "prior_argmax", "bayes", "bayes_alpha", "offsets"]
    assert [c.name for c in candidates_for("multi-class", MacroF1())] == ["trivial", "argmax", "prior_argmax", "offsets"]
    assert "bayes" in [c.name for c in candidates_for("multi-class", BalancedAccuracy())]
    assert [c.name for c in candidates_for("multi-label", W)] == ["trivial", "threshold_0.5", "closed_form", "closed_form_alpha", "thresholds"]
    assert [c.name for c in candidates_for("multi-label", MacroF1())] == ["trivial", "threshold_0.5", "thresholds"]
    with pytest.raises(ValueError, match="unknown decision candidates"):
        candidates_for("multi-class", W, ["argmax", "magic"])
    assert len([n for n in CANDIDATES if CANDIDATES.get(n).kind == "label"]) == 12  # the 11 above and kappa's rounder
    assert [c.name for c in candidates_for("multi-class", QuadraticWeightedKappa())] == ["trivial", "argmax", "prior_argmax", "offsets", "rounder"]


def test_every_candidate_fits_and_predicts_one_class_per_row(make_oof):
    logits, labels, fold, q = make_oof(seed=1)
    ctx = context("abcd", q)
    fitted = fit_all(candidates_for("multi-class", W), logits, labels, ctx)
    for name, decision in fitted.items():
        pred = decision.predict(logits)
        assert pred.shape == labels.shape and (pred.sum(axis=1) == 1).all(), name
        assert decision.rule == name and decision.metric.params() == W.params()
    assert (fitted["trivial"].predict(logits)[:, 0] == 1).all()  # the majority class everywhere
    np.testing.assert_array_equal(fitted["argmax"].predict_indices(logits), logits.argmax(axis=1))
    assert fitted["offsets"].extra["start"] in ("argmax", "bayes")
    # fit() on one candidate equals the same candidate out of fit_all (shared NLL fits change nothing)
    assert fit("bayes", logits, labels, ctx).to_dict() == fitted["bayes"].to_dict()


def test_nested_cv_never_sees_the_held_out_fold(make_oof):
    """Poison fold 0's labels: everything fitted for outer fold 0 stays the same, while the fits of the
    outer folds that train on fold 0 change (so the check could fail)."""
    logits, labels, fold, q = make_oof(seed=1)
    poisoned = labels.copy()
    rows0 = np.flatnonzero(fold == 0)
    poisoned[rows0] = labels[np.random.default_rng(9).permutation(rows0)]
    assert (poisoned != labels).any()
    ctx = context("abcd", q)
    cands = candidates_for("multi-class", W)
    clean = select_decision(logits, labels, fold, ctx, cands)
    dirty = select_decision(logits, poisoned, fold, ctx, cands)
    for name in clean.per_fold[0]:
        assert clean.per_fold[0][name].to_dict() == dirty.per_fold[0][name].to_dict(), name
    assert clean.per_fold[1]["bayes"].temperature != dirty.per_fold[1]["bayes"].temperature


def test_nested_cv_reports_per_fold_means_and_standard_errors():
    fold = np.repeat([0, 1, 2], 4)
    result = nested_cv(lambda rows: rows.sum(), lambda fitted, held: {"n": float(fitted), "k": float(held.argmax())}, fold)
    assert result["n"].per_fold == (8.0, 8.0, 8.0) and result["n"].se == 0.0
    assert result["k"].per_fold == (0.0, 4.0, 8.0) and result["k"].mean == 4.0
    assert result["k"].se == pytest.approx(np.std([0, 4, 8], ddof=1) / np.sqrt(3))


def test_choose_keeps_the_simplest_within_one_paired_standard_error():
    simplicity = ["argmax", "bayes", "offsets"]
    scores = {
        "argmax": NestedScore((-2.0, -2.2, -2.1)),
        "bayes": NestedScore((-1.90, -2.05, -2.00)),  # +0.117 ± paired SE 0.017 ahead of argmax: a real gain
        "offsets": NestedScore((-1.88, -2.07, -1.98)),  # best mean by 0.007, within one paired SE of it
    }
    choice = choose(scores, simplicity)
    assert choice.best == "offsets" and choice.chosen == "bayes"
    assert choice.delta["argmax"] == pytest.approx(-2.1 - (-1.88 - 2.07 - 1.98) / 3)
    assert choose(scores, simplicity, "best").chosen == "offsets"
    # a consistent small gain on every fold is not within one paired SE: the fitted candidate wins
    steady = {"argmax": NestedScore((-2.0, -2.2, -2.1)), "bayes": NestedScore((-1.99, -2.19, -2.09))}
    assert choose(steady, ["argmax", "bayes"]).chosen == "bayes"


def test_select_decision_on_a_sampler_trained_model(make_oof):
    logits, labels, fold, q = make_oof(n=1500, seed=2)
    selection = select_decision(logits, labels, fold, context("abcd", q), candidates_for("multi-class", W))
    s = {k: v.mean for k, v in selection.scores.items()}
    assert s["bayes"] > s["argmax"] + 0.5 and s["bayes"] > s["trivial"]  # the prior correction rescues the sampler model
    assert selection.choice.chosen != "argmax"
    assert selection.in_sample["offsets"] >= selection.in_sample["bayes_alpha"] - 1e-9 or selection.final["offsets"].extra["start"] == "argmax"
    assert selection.decision is selection.final[selection.choice.chosen]


def test_multilabel_candidates_fit_thresholds(make_oof):
    rng = np.random.default_rng(11)
    n, c = 900, 4
    y = (rng.random((n, c)) < np.array([0.3, 0.1, 0.05, 0.2])).astype(np.uint8)
    logits = (rng.normal(size=(n, c)) + 2.0 * y - 1.0).astype(np.float32)
    fold = np.arange(n) % 3
    ctx = FitContext("multi-label", tuple("wxyz"), W, y.mean(axis=0), CalibrateConfig())
    selection = select_decision(logits, y, fold, ctx, candidates_for("multi-label", W))
    assert set(selection.scores) == {"trivial", "threshold_0.5", "closed_form", "closed_form_alpha", "thresholds"}
    assert selection.scores["closed_form"].mean > selection.scores["trivial"].mean
    assert (selection.final["trivial"].predict(logits) == 0).all()
    assert selection.final["thresholds"].thresholds.shape == (c,)


def test_decision_json_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(50, 3))
    mc = closed_form_decision("multi-class", ["a", "b", "c"], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1], LinearCountMetric(1, 2, 3), temperature=1.7, alpha=0.6)
    mc = mc.with_(rule="offsets", offsets=np.array([0.1, -0.2, 0.3]), fitted_on="abc", extra={"start": "bayes"})
    ml = closed_form_decision("multi-label", ["a", "b", "c"], [0.1, 0.3, 0.2], [0.2, 0.3, 0.1], W, temperature=0.8)
    ml = ml.with_(thresholds=np.array([0.2, 0.5, 0.05]))
    for i, d in enumerate((mc, ml)):
        path = tmp_path / f"d{i}.json"
        d.save(path)
        back = Decision.load(path)
        assert back.to_dict() == d.to_dict()
        np.testing.assert_array_equal(back.predict(logits), d.predict(logits))


@pytest.mark.parametrize("change, pattern", [
    ({"temperature": -1}, "temperature must be a positive"),
    ({"temperature": float("nan")}, "temperature must be a positive"),
    ({"offsets": [0.0]}, "offsets has 1 values"),
    ({"offsets": [0.0, float("inf")]}, "offsets holds NaN"),
    ({"target_prior": [0.5, 0.0]}, "target_prior must be positive"),
    ({"metric": {"name": "linear", "w": -5}}, "w"),
    ({"task": "regression"}, "task"),
])
def test_decision_file_values_are_validated(tmp_path, change, pattern):
    d = closed_form_decision("multi-class", ["a", "b"], [0.5, 0.5], [0.5, 0.5], W).to_dict()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**d, **change}))
    with pytest.raises(KitError, match=f"bad.json: not a valid decision file .*{pattern}") as info:
        Decision.load(bad)
    assert "\n" not in str(info.value)


def test_decision_load_missing_and_garbage(tmp_path):
    with pytest.raises(KitError, match="not found"):
        Decision.load(tmp_path / "missing.json")
    (tmp_path / "g.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(KitError, match="g.json: not a valid decision file"):
        Decision.load(tmp_path / "g.json")
