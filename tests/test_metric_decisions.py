"""One decision per metric kind, chosen by nested CV on small synthetic OOF, and the metric's direction honoured
wherever scores are compared (selection, blend weights, studies)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from kit.config import CalibrateConfig
from kit.decision.candidates import FitContext, candidates_for, fit
from kit.decision.metrics import build_metric
from kit.decision.nested import NestedScore, choose
from kit.decision.record import study_summary, write_study
from kit.decision.rules import Decision
from kit.decision.select import select_decision
from kit.ensemble.pipeline import Member
from kit.ensemble.select import blend_rules, blend_weightings, select_blend
from tests.conftest import simulated_oof, stratified_folds

LOG_LOSS = build_metric({"name": "log_loss"})
AUC = build_metric({"name": "roc_auc"})
KAPPA = build_metric({"name": "quadratic_weighted_kappa"})


def _context(task, classes, metric, train_prior):
    return FitContext(task, tuple(classes), metric, np.asarray(train_prior, dtype=np.float64), CalibrateConfig())


def _multi_label_oof(n=600, c=3, seed=0, signal=1.5, member_noise=1.0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < [0.1, 0.3, 0.5][:c]).astype(np.uint8)
    score = signal * y + rng.normal(size=(n, c))  # what every member sees
    members = [score + member_noise * rng.normal(size=(n, c)) for _ in range(3)]
    fold = stratified_folds(y[:, 0], 3, rng)
    return [m.astype(np.float32) for m in members], y, fold


def test_choose_honours_a_lower_is_better_metric():
    scores = {"a": NestedScore((0.50, 0.52, 0.51)), "b": NestedScore((0.30, 0.31, 0.29)), "c": NestedScore((0.31, 0.30, 0.30))}
    lower = choose(scores, ["a", "b", "c"], "best", direction="minimize")
    assert lower.best == lower.chosen == "b"
    assert lower.delta["a"] > 0  # the difference to the best is written in the metric's units
    assert choose(scores, ["a", "b", "c"], "best").best == "a"  # the same numbers, higher is better
    assert choose(scores, ["c", "b", "a"], "one_se", direction="minimize").chosen == "c"  # simplest within one SE of the lowest


def test_log_loss_decision_by_nested_cv_beats_raw_softmax_of_a_sampler_trained_model():
    logits, labels, fold, q = simulated_oof(n=900, seed=3)  # trained under a uniform sampler, true prior (0.7, 0.2, 0.07, 0.03)
    cands = candidates_for("multi-class", LOG_LOSS)
    assert [c.name for c in cands] == ["trivial", "raw", "temperature", "prior", "temperature_alpha", "bias"]
    sel = select_decision(logits, labels, fold, _context("multi-class", "abcd", LOG_LOSS, q), cands)
    raw, chosen = sel.scores["raw"].mean, sel.scores[sel.choice.chosen].mean
    assert sel.choice.chosen not in ("trivial", "raw")
    assert sel.choice.best == min(sel.scores, key=lambda k: sel.scores[k].mean)  # lowest log-loss is the best
    assert chosen <= 0.9 * raw  # at least 10% below the raw softmax's nested-CV log-loss
    probs = sel.decision.predict(logits)
    assert probs.dtype == np.float64 and np.allclose(probs.sum(axis=1), 1.0) and (probs > 0).all()
    trivial = sel.scores["trivial"].mean
    assert abs(trivial - LOG_LOSS.score(labels, np.tile(labels.mean(axis=0), (len(labels), 1)))) < 0.02  # the prior everywhere
    assert chosen < trivial


def test_log_loss_bias_and_multi_label_candidates_fit():
    members, y, fold = _multi_label_oof(seed=1)
    prior = np.full(3, 0.5)  # trained under balanced positives
    context = _context("multi-label", "xyz", LOG_LOSS, prior)
    sel = select_decision(members[0], y, fold, context, candidates_for("multi-label", LOG_LOSS))
    assert sel.scores[sel.choice.chosen].mean < sel.scores["raw"].mean
    biased = sel.final["bias"]
    assert biased.bias is not None and biased.bias.shape == (3,)
    again = Decision.from_dict(biased.to_dict())
    assert np.allclose(again.predict(members[0]), biased.predict(members[0]))


def test_ranking_metric_keeps_the_scores_since_monotone_transforms_cannot_change_them():
    members, y, fold = _multi_label_oof(seed=2)
    cands = candidates_for("multi-label", AUC)
    assert [c.name for c in cands] == ["trivial", "scores", "calibrated"]
    sel = select_decision(members[0], y, fold, _context("multi-label", "xyz", AUC, np.full(3, 0.3)), cands)
    assert sel.scores["scores"].per_fold == pytest.approx(sel.scores["calibrated"].per_fold, abs=1e-12)  # T, α: per-class monotone
    assert sel.choice.chosen == "scores"
    assert sel.scores["trivial"].mean == pytest.approx(0.5)


def _ordinal_oof(n=800, c=5, seed=0):
    """Grades 0..4 with a latent score: logits of a model that sees the grade with noise, overconfident in the middle."""
    rng = np.random.default_rng(seed)
    grade = rng.choice(c, size=n, p=[0.4, 0.25, 0.15, 0.12, 0.08])
    latent = grade + rng.normal(scale=0.8, size=n)
    logits = -0.8 * (latent[:, None] - np.arange(c)[None, :]) ** 2
    return logits.astype(np.float32), np.eye(c, dtype=np.uint8)[grade], stratified_folds(grade, 3, rng)


def test_kappa_rounder_is_a_candidate_and_beats_the_trivial_baseline():
    logits, labels, fold = _ordinal_oof()
    cands = candidates_for("multi-class", KAPPA)
    sel = select_decision(logits, labels, fold, _context("multi-class", "01234", KAPPA, labels.mean(axis=0)), cands)
    rounder = sel.final["rounder"]
    assert rounder.cuts is not None and (np.diff(rounder.cuts) >= 0).all()
    assert sel.scores["rounder"].mean > sel.scores["trivial"].mean + 0.3
    assert sel.scores["rounder"].mean >= sel.scores["argmax"].mean - 0.02
    again = Decision.from_dict(rounder.to_dict())
    assert (again.predict(logits) == rounder.predict(logits)).all()


@pytest.mark.parametrize("metric", [AUC, LOG_LOSS])
def test_blend_for_probability_and_ranking_metrics(metric):
    members, y, fold = _multi_label_oof(seed=4, member_noise=1.5)
    ms = [Member(f"m{i}", z, np.stack([z[:50]] * 3), np.full(3, 0.3)) for i, z in enumerate(members)]
    context = _context("multi-label", "xyz", metric, np.full(3, 1 / 3))
    rules = [c for c in candidates_for("multi-label", metric) if c.name in blend_rules("multi-label", metric.kind)]
    weightings = blend_weightings(metric.kind)
    assert ("rank_average" in weightings) == (metric.kind == "ranking")
    sel = select_blend(ms, y, fold, context, weightings, rules)
    singles = [select_decision(z, y, fold, context, [c for c in candidates_for("multi-label", metric) if c.name == rules[0].name]) for z in members]
    best_single = max(s.scores[rules[0].name].mean * metric.sign for s in singles) * metric.sign
    chosen = sel.scores[sel.chosen].mean
    assert metric.sign * chosen >= metric.sign * best_single  # three noisy views of one signal: the blend is better
    assert metric.better(chosen, sel.trivial.mean)
    pred = sel.final.predict([m.logits for m in ms])
    assert pred.dtype == np.float64 and ((pred >= 0) & (pred <= 1)).all()


def test_study_of_a_lower_is_better_metric_is_minimised(tmp_path):
    logits, labels, fold, q = simulated_oof(n=400, seed=5)
    sel = select_decision(logits, labels, fold, _context("multi-class", "abcd", LOG_LOSS, q), candidates_for("multi-class", LOG_LOSS))
    from kit.decision.record import selection_trials

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    write_study(storage, "calibrate/x", selection_trials(sel), study_summary(sel.choice, sel.scores["trivial"], metric="log_loss"),
                direction=LOG_LOSS.direction)
    study = optuna.load_study(study_name="calibrate/x", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.best_trial.params["candidate"] == sel.choice.best


def test_fit_by_name_uses_the_metric_kind():
    logits, labels, _, q = simulated_oof(n=300, seed=6)
    d = fit("raw", logits, labels, _context("multi-class", "abcd", LOG_LOSS, q))
    assert d.rule == "raw" and np.allclose(d.predict(logits).sum(axis=1), 1.0)


def test_report_overview_says_lower_is_better_and_counts_the_gain_downwards():
    from types import SimpleNamespace

    from kit.stages.report import _overview

    report = SimpleNamespace(target="v", chosen="prior", chosen_nested_cv=0.30, trivial_baseline=SimpleNamespace(nested_cv=0.45), task="multi-class",
                             row=lambda key: SimpleNamespace(se=0.01))
    overview = _overview([SimpleNamespace(report=report, fresh=True)], [], sign=-1.0)
    assert overview["rows"][0]["gain"] == pytest.approx(0.15)  # the gain over the trivial baseline: 0.45 − 0.30 for a lower-is-better metric
    assert _overview([SimpleNamespace(report=report, fresh=True)], [])["rows"][0]["gain"] == pytest.approx(-0.15)  # higher is better


def test_binary_blend_with_the_stacker_for_auc():
    """Two classes (a binary `target`): the stacker's binary regression gives one log-odds column, stacked as two."""
    rng = np.random.default_rng(7)
    n = 300
    y = (rng.random(n) < 0.2).astype(int)
    y[:6] = [0, 1, 0, 1, 0, 1]
    labels = np.eye(2, dtype=np.uint8)[y]
    logits = [np.stack([np.zeros(n), 1.5 * y + rng.normal(size=n)], axis=1).astype(np.float32) for _ in range(2)]
    fold = stratified_folds(y, 3, rng)
    ms = [Member(f"m{i}", z, z[None], np.array([0.7, 0.3])) for i, z in enumerate(logits)]
    context = _context("multi-class", "01", AUC, np.full(2, 0.5))
    rules = [c for c in candidates_for("multi-class", AUC) if c.name in blend_rules("multi-class", "ranking")]
    sel = select_blend(ms, labels, fold, context, ["equal", "rank_average", "stack"], rules)
    assert {p[0] for p in sel.scores} == {"equal", "rank_average", "stack"}
    assert all(s.mean > 0.6 for s in sel.scores.values())
    assert np.allclose(sel.final.predict([m.logits for m in ms]).sum(axis=1), 1.0)
