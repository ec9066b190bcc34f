"""Decision rules on OOF drawn from known models: prior correction, temperature, the Bayes rule, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit, log_softmax, softmax

from kit.config import MetricConfig
from kit.decision.metrics import competition_score
from kit.decision.rules import (
    Decision,
    calibrated_log_probs,
    closed_form_decision,
    fit_temperature,
    fit_thresholds,
    rule_predictor,
)
from kit.errors import KitError

W = MetricConfig()


def draw_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per row drawn from each row's distribution (inverse CDF)."""
    u = rng.random((len(probs), 1))
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)


def skewed_prior(c: int) -> np.ndarray:
    pi = 0.5 ** np.arange(c)  # 0.5, 0.25, ... : a head class and a thin tail
    return pi / pi.sum()


def test_prior_correction_undoes_a_known_shift_multiclass():
    rng = np.random.default_rng(0)
    c, n = 6, 2000
    pi = skewed_prior(c)
    q = np.full(c, 1 / c)  # a balanced sampler
    evidence = rng.normal(0, 1.5, size=(n, c))
    true_log_post = log_softmax(evidence + np.log(pi), axis=1)  # posterior under the true prior
    model_logits = evidence + np.log(q) + rng.normal(0, 3, size=(n, 1))  # what a model trained under q outputs (+ row constant)
    corrected = calibrated_log_probs(model_logits, 1.0, q, pi, "multi-class")
    np.testing.assert_allclose(corrected, true_log_post, atol=1e-10)
    # and on labels drawn from the true model, the corrected probabilities have the lower NLL
    y = draw_labels(np.exp(true_log_post), rng)
    nll = lambda lp: -lp[np.arange(n), y].mean()  # noqa: E731
    assert nll(corrected) < nll(log_softmax(model_logits, axis=1)) - 0.05


def test_prior_correction_multilabel_per_class():
    rng = np.random.default_rng(1)
    pi, q = np.array([0.02, 0.1, 0.4]), np.array([0.3, 0.5, 0.5])
    true_logit = rng.normal(0, 2, size=(500, 3)) + np.log(pi / (1 - pi))
    model_logit = true_logit - np.log(pi / (1 - pi)) + np.log(q / (1 - q))
    got = calibrated_log_probs(model_logit, 1.0, q, pi, "multi-label")
    np.testing.assert_allclose(np.exp(got), expit(true_logit), atol=1e-10)


@pytest.mark.parametrize("t_true", [0.5, 2.0])
def test_fit_temperature_recovers_the_true_temperature(t_true):
    rng = np.random.default_rng(2)
    scores = rng.normal(0, 2, size=(6000, 5))
    y = draw_labels(softmax(scores, axis=1), rng)
    labels = np.eye(5, dtype=np.uint8)[y]
    # a model whose logits are the calibrated scores multiplied by t_true needs T = t_true
    assert fit_temperature(scores * t_true, labels) == pytest.approx(t_true, rel=0.1)
    ml_labels = (rng.random(scores.shape) < expit(scores)).astype(np.uint8)
    assert fit_temperature(scores * t_true, ml_labels, task="multi-label") == pytest.approx(t_true, rel=0.1)


def test_bayes_rule_is_the_expected_score_optimum_and_beats_argmax():
    """Calibrated posteriors from a known model: the closed-form rule equals the per-image decision that
    maximizes the expected metric (computed independently from the gain matrix), and beats argmax."""
    rng = np.random.default_rng(3)
    c, n = 5, 4000
    pi = skewed_prior(c)
    probs = softmax(rng.normal(0, 1.2, size=(n, c)) + np.log(pi), axis=1)  # calibrated posteriors
    expected_counts = probs.sum(axis=0)  # N_k estimated from the (known) distribution
    target = expected_counts / n
    # gain[k, y]: the change in the summed per-class score when predicting k for an image of class y
    gain = np.array([[(W.a if k == y else -W.b) / expected_counts[k] - (0 if k == y else W.w / expected_counts[y])
                      for y in range(c)] for k in range(c)])
    optimal = (probs @ gain.T).argmax(axis=1)
    decision = closed_form_decision("multi-class", list("abcde"), target, target, W)
    np.testing.assert_array_equal(decision.predict_indices(np.log(probs)), optimal)

    bayes, argmax = [], []
    for _ in range(10):  # realized scores over label draws from the same model
        labels = np.eye(c, dtype=np.uint8)[draw_labels(probs, rng)]
        bayes.append(competition_score(labels, decision.predict(np.log(probs)), W))
        argmax.append(competition_score(labels, np.eye(c, dtype=np.uint8)[probs.argmax(axis=1)], W))
    assert np.mean(bayes) > np.mean(argmax) + 0.1
    assert min(b - a for b, a in zip(bayes, argmax)) > 0


def test_prior_correction_plus_bayes_beats_argmax_under_an_inverse_frequency_sampler():
    rng = np.random.default_rng(4)
    c, n = 5, 4000
    pi = skewed_prior(c)
    q = (1 / pi) / (1 / pi).sum()
    evidence = rng.normal(0, 1.0, size=(n, c))
    y = draw_labels(softmax(evidence + np.log(pi), axis=1), rng)
    labels = np.eye(c, dtype=np.uint8)[y]
    logits = evidence + np.log(q)  # the sampler-trained model
    decision = closed_form_decision("multi-class", list("abcde"), q, pi, W)
    argmax_score = competition_score(labels, np.eye(c, dtype=np.uint8)[logits.argmax(axis=1)], W)
    assert competition_score(labels, decision.predict(logits), W) > argmax_score + 1.0


def test_zero_offsets_are_the_closed_form_rule_and_offsets_move_predictions():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(500, 4))
    prior = np.array([0.7, 0.2, 0.07, 0.03])
    d = closed_form_decision("multi-class", list("abcd"), prior, prior, W, temperature=1.3)
    tuned = d.with_(rule="bayes_offsets", offsets=np.zeros(4))
    np.testing.assert_array_equal(d.predict(logits), tuned.predict(logits))
    pushed = d.with_(rule="bayes_offsets", offsets=np.array([0.0, 0.0, 0.0, 2.0]))
    assert pushed.predict(logits)[:, 3].sum() > d.predict(logits)[:, 3].sum()
    lp = d.log_probs(logits)
    np.testing.assert_array_equal(rule_predictor(lp, "argmax", prior, W)(np.zeros(4)), lp.argmax(axis=1))
    with pytest.raises(ValueError):
        rule_predictor(lp, "thresholds", prior, W)


def test_thresholds_youden_f1_cost():
    rng = np.random.default_rng(6)
    d = closed_form_decision("multi-label", list("xyz"), np.full(3, 0.2), np.full(3, 0.2), W)
    np.testing.assert_allclose(d.thresholds, 1 / 7)  # b / (a + b + w)
    # separable class 0: positives score in [0.6, 1], negatives in [0, 0.4]
    y = (rng.random((400, 3)) < 0.3).astype(np.uint8)
    y[:, 2] = 0  # class without positives: keeps the closed-form threshold
    p = np.where(y == 1, rng.uniform(0.6, 1, y.shape), rng.uniform(0, 0.4, y.shape))
    for method in ("youden", "f1", "cost"):
        t = fit_thresholds(p, y, method, W)
        pred = p >= t
        np.testing.assert_array_equal(pred[:, :2], y[:, :2].astype(bool))
        assert t[2] == pytest.approx(1 / 7)
    # calibrated probabilities: the empirical least-cost threshold is near b/(a+b+w)
    probs = rng.uniform(0, 1, size=(40000, 1))
    labels = (rng.random((40000, 1)) < probs).astype(np.uint8)
    assert fit_thresholds(probs, labels, "cost", W)[0] == pytest.approx(1 / 7, abs=0.03)
    with pytest.raises(ValueError):
        fit_thresholds(probs, labels, "magic", W)


def test_decision_json_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(50, 3))
    mc = closed_form_decision("multi-class", ["a", "b", "c"], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1], MetricConfig(a=1, b=2, w=3), 1.7)
    mc = mc.with_(rule="bayes_offsets", offsets=np.array([0.1, -0.2, 0.3]))
    ml = closed_form_decision("multi-label", ["a", "b", "c"], [0.1, 0.3, 0.2], [0.2, 0.3, 0.1], W, 0.8)
    ml = ml.with_(thresholds=np.array([0.2, 0.5, 0.05]))
    for i, d in enumerate((mc, ml)):
        path = tmp_path / f"d{i}.json"
        d.save(path)
        back = Decision.load(path)
        assert back.to_dict() == d.to_dict()
        np.testing.assert_array_equal(back.predict(logits), d.predict(logits))
    assert ml.predict(logits).dtype == np.uint8 and mc.predict(logits).sum(axis=1).tolist() == [1] * 50


def test_decision_load_errors(tmp_path):
    with pytest.raises(KitError, match="not found"):
        Decision.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    d = closed_form_decision("multi-class", ["a", "b"], [0.5, 0.5], [0.5, 0.5], W).to_dict()
    bad.write_text(json.dumps({**d, "offsets": [0.0]}))
    with pytest.raises(KitError, match="bad.json.*offsets"):
        Decision.load(bad)
    bad.write_text(json.dumps({**d, "rule": "vote"}))
    with pytest.raises(KitError, match="unknown rule"):
        Decision.load(bad)
