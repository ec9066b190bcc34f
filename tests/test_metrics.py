"""The competition metric: hand cases, the trivial score of README.md, and agreement with sklearn's confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, multilabel_confusion_matrix, roc_auc_score

from kit.config import MetricConfig
from kit.data.synth import COMPETITION_COUNTS
from kit.decision.metrics import (
    BalancedAccuracy,
    LinearCountMetric,
    MacroF1,
    accuracy,
    build_metric,
    confusion_counts,
    confusion_from_indices,
    macro_auc,
    macro_f1,
    per_class_auc,
    trivial_baseline,
)

W = LinearCountMetric()  # a=1, b=1, w=5: the competition's weights


def competition_score(y_true, y_pred, metric):
    return metric.score(y_true, y_pred)


def per_class_scores(y_true, y_pred, metric):
    return metric.per_class(y_true, y_pred)


def one_hot(idx, c: int) -> np.ndarray:
    return np.eye(c, dtype=np.uint8)[np.asarray(idx)]


def test_hand_case_three_classes():
    # true: 0 0 0 1 1 2 ; pred: 0 0 1 1 0 0
    y = one_hot([0, 0, 0, 1, 1, 2], 3)
    p = one_hot([0, 0, 1, 1, 0, 0], 3)
    # class 0: TP=2 FP=2 FN=1 N=3 -> (2-2-5)/3 ; class 1: TP=1 FP=1 FN=1 N=2 -> (1-1-5)/2 ; class 2: TP=0 FP=0 FN=1 -> -5
    expected = np.array([-5 / 3, -5 / 2, -5.0])
    np.testing.assert_allclose(per_class_scores(y, p, W), expected)
    assert competition_score(y, p, W) == pytest.approx(expected.mean())
    weighted = LinearCountMetric(a=2.0, b=0.5, w=1.0)
    expected_w = np.array([(4 - 1 - 1) / 3, (2 - 0.5 - 1) / 2, -1.0])
    np.testing.assert_allclose(per_class_scores(y, p, weighted), expected_w)


def test_perfect_predictions_score_one():
    y = one_hot(np.arange(40) % 7, 7)
    assert competition_score(y, y, W) == 1.0
    assert macro_f1(y, y) == 1.0
    assert accuracy(y, y) == 1.0


def test_all_no_finding_on_design_counts_is_minus_4_72():
    y = one_hot(np.repeat(np.arange(20), list(COMPETITION_COUNTS.values())), 20)
    assert len(y) == 51043
    expected = ((34097 - (51043 - 34097)) / 34097 - 19 * 5) / 20
    assert trivial_baseline(y, W) == pytest.approx(expected)
    assert trivial_baseline(y, W) == pytest.approx(-4.72, abs=0.01)
    # the same number by hand through competition_score
    assert competition_score(y, one_hot(np.zeros(len(y), int), 20), W) == pytest.approx(expected)


def test_absent_class_is_nan_and_not_averaged():
    y = one_hot([0, 0, 1, 1], 3)  # class 2 has no true image
    p = one_hot([0, 2, 1, 1], 3)
    scores = per_class_scores(y, p, W)
    assert np.isnan(scores[2])
    assert competition_score(y, p, W) == pytest.approx(np.mean([(1 - 0 - 5) / 2, 1.0]))


def test_trivial_baseline_majority_argument_and_multilabel():
    y = one_hot([0, 0, 0, 1, 2], 3)
    assert trivial_baseline(y, W) == pytest.approx(np.mean([1.0 - 2 / 3, -5, -5]))
    # majority from the training data (class 1) may differ from y_true's
    assert trivial_baseline(y, W, majority=1) == pytest.approx(np.mean([-5, (1 - 4) / 1, -5]))
    ml = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=np.uint8)
    assert trivial_baseline(ml, W, task="multi-label") == pytest.approx(-5.0)  # all negative: every class −w


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_equals_sklearn_confusion_matrix(seed):
    rng = np.random.default_rng(seed)
    c, n = 6, 300
    t, p = rng.integers(0, c, n), rng.integers(0, c, n)
    t[:c] = np.arange(c)  # every class present
    weights = LinearCountMetric(a=float(rng.uniform(0.5, 2)), b=float(rng.uniform(0, 2)), w=float(rng.uniform(0, 6)))
    cm = confusion_matrix(t, p, labels=range(c))
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    expected = (weights.a * tp - weights.b * fp - weights.w * fn) / cm.sum(1)
    np.testing.assert_allclose(per_class_scores(one_hot(t, c), one_hot(p, c), weights), expected)
    np.testing.assert_array_equal(confusion_from_indices(t, p, c), cm)
    assert weights.score_from_confusion(cm) == pytest.approx(expected.mean())
    assert competition_score(one_hot(t, c), one_hot(p, c), weights) == pytest.approx(expected.mean())
    assert accuracy(one_hot(t, c), one_hot(p, c)) == pytest.approx(np.mean(t == p))


@pytest.mark.parametrize("seed", range(5))
def test_multilabel_equals_sklearn_multilabel_confusion_matrix(seed):
    rng = np.random.default_rng(100 + seed)
    y = (rng.random((200, 7)) < 0.3).astype(np.uint8)
    p = (rng.random((200, 7)) < 0.4).astype(bool)  # bool input works too
    y[0] = 1
    mcm = multilabel_confusion_matrix(y, p)  # (C, 2, 2): [[tn, fp], [fn, tp]]
    tp, fp, fn = mcm[:, 1, 1], mcm[:, 0, 1], mcm[:, 1, 0]
    got = confusion_counts(y, p)
    for a, b in zip(got, (tp, fp, fn)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(per_class_scores(y, p, W), (tp - fp - 5 * fn) / (tp + fn))
    assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))
    assert accuracy(y, p, task="multi-label") == pytest.approx(np.mean(y == p))


def test_auc_matches_sklearn_and_skips_single_valued_classes():
    rng = np.random.default_rng(3)
    y = (rng.random((120, 4)) < 0.4).astype(np.uint8)
    y[:, 3] = 0  # no positive: AUC undefined
    s = rng.random((120, 4)) + 0.5 * y
    auc = per_class_auc(y, s)
    for c in range(3):
        assert auc[c] == pytest.approx(roc_auc_score(y[:, c], s[:, c]))
    assert np.isnan(auc[3])
    assert macro_auc(y, s) == pytest.approx(np.mean(auc[:3]))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        competition_score(np.zeros((3, 2)), np.zeros((3, 3)), W)


def test_any_integer_dtype_gives_the_same_score():
    """One-hot arrays read with pandas are int64; the metric must accept them unchanged."""
    rng = np.random.default_rng(3)
    y_true = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 200)]
    y_pred = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 200)]
    expected = competition_score(y_true, y_pred, W)
    for dtype in (np.int64, np.int32, np.bool_, np.float32):
        assert competition_score(y_true.astype(dtype), y_pred.astype(dtype), W) == expected


def test_score_from_indices_equals_the_indicator_path():
    rng = np.random.default_rng(5)
    true_idx, pred_idx = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    expected = competition_score(one_hot(true_idx, 6), one_hot(pred_idx, 6), W)
    assert W.score_from_indices(true_idx, pred_idx, 6) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(3))
def test_macro_f1_and_balanced_accuracy_equal_sklearn(seed):
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(50 + seed)
    c, n = 5, 400
    t, p = rng.integers(0, c, n), rng.integers(0, c, n)
    t[:c] = np.arange(c)
    assert MacroF1().score(one_hot(t, c), one_hot(p, c)) == pytest.approx(f1_score(t, p, average="macro"))
    assert BalancedAccuracy().score(one_hot(t, c), one_hot(p, c)) == pytest.approx(balanced_accuracy_score(t, p))


def test_metric_identity_score_is_6_bacc_minus_5_minus_mean_fp_rate():
    """docs/decision.md: with a = b = 1, w = 5 the score is 6·bAcc − 5 − mean_c FP_c/N_c."""
    rng = np.random.default_rng(8)
    c, n = 6, 600
    t, p = rng.integers(0, c, n), rng.integers(0, c, n)
    y, q = one_hot(t, c), one_hot(p, c)
    tp, fp, fn = confusion_counts(y, q)
    expected = 6 * BalancedAccuracy().score(y, q) - 5 - np.mean(fp / (tp + fn))
    assert W.score(y, q) == pytest.approx(expected)


@pytest.mark.parametrize("metric", [LinearCountMetric(), LinearCountMetric(a=2, b=0.5, w=3), BalancedAccuracy()])
def test_bayes_weights_maximize_the_expected_score_of_one_more_row(metric):
    """Adding one row of known posterior p to fixed counts: the class the Bayes weights pick has the highest
    expected per-class-mean score among all C choices (computed by brute force from the counts)."""
    rng = np.random.default_rng(9)
    c = 4
    counts = np.array([400, 120, 40, 10])
    prior = counts / counts.sum()
    for _ in range(20):
        p = rng.dirichlet(np.ones(c))
        u, v = metric.bayes_weights(prior)
        pick = int(np.argmax(u * p + v))
        expected = []
        for k in range(c):  # predict k; the true class is y with probability p_y
            gain = 0.0
            for y in range(c):
                tp, fp, fn = np.zeros(c), np.zeros(c), np.zeros(c)
                if k == y:
                    tp[y] = 1
                else:
                    fp[k], fn[y] = 1, 1
                gain += p[y] * _marginal(metric, tp, fp, fn, counts.astype(float)).sum()
            expected.append(gain)
        assert np.isclose(expected[pick], max(expected), rtol=1e-9, atol=1e-12)


def _marginal(metric, tp, fp, fn, n):
    """Change of the summed per-class score when one row adds (tp, fp, fn) to classes of size n (the N_c are
    the estimated class sizes, held fixed as the Bayes rule assumes)."""
    if isinstance(metric, LinearCountMetric):
        return (metric.a * tp - metric.b * fp - metric.w * fn) / n
    return tp / n  # recall: a miss adds nothing, a hit adds 1/N


def test_build_metric_from_config_and_params_round_trip():
    assert build_metric(MetricConfig()) == LinearCountMetric(1.0, 1.0, 5.0)
    assert isinstance(build_metric(MetricConfig(name="macro_f1")), MacroF1)
    m = LinearCountMetric(2.0, 0.5, 3.0)
    assert build_metric(m.params()) == m
    assert m.threshold() == pytest.approx(0.5 / 5.5)
    assert MacroF1().bayes_weights(np.ones(3) / 3) is None and MacroF1().threshold() is None


@pytest.mark.parametrize("bad", [{"w": -5}, {"a": 0, "b": 0, "w": 0}, {"a": float("nan")}, {"b": float("inf")}, {"name": "macro_f1", "w": 3}])
def test_invalid_metric_weights_are_refused(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        MetricConfig(**bad)
