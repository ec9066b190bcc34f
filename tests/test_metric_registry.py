"""Every metric of the registry against scikit-learn, on random and edge inputs, to 1e-9."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, average_precision_score, cohen_kappa_score, log_loss, roc_auc_score

from kit.config import CompetitionConfig, MetricConfig
from kit.decision.metrics import METRICS, build_metric, trivial_baseline

TOL = 1e-9


def _one_hot(idx: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c, dtype=np.uint8)[idx]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _multi_class(seed: int, n: int = 300, c: int = 4):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c, n)
    idx[:c] = np.arange(c)  # every class present
    probs = _softmax(rng.normal(size=(n, c)) + 1.5 * np.eye(c)[idx])
    return idx, _one_hot(idx, c), probs


def _multi_label(seed: int, n: int = 300, c: int = 5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < [0.05, 0.2, 0.5, 0.1, 0.3][:c]).astype(np.uint8)
    return y, 1 / (1 + np.exp(-(rng.normal(size=(n, c)) + 1.2 * y)))


def test_registry_names_every_metric_with_its_kind_and_direction():
    assert METRICS.names() == ["linear", "macro_f1", "balanced_accuracy", "accuracy", "quadratic_weighted_kappa", "roc_auc",
                               "mean_average_precision", "log_loss"]
    kinds = {name: build_metric({"name": name}).kind for name in METRICS}
    assert kinds["log_loss"] == "probability" and kinds["roc_auc"] == kinds["mean_average_precision"] == "ranking"
    assert {kinds[n] for n in ("linear", "macro_f1", "balanced_accuracy", "accuracy", "quadratic_weighted_kappa")} == {"label"}
    directions = {name: build_metric({"name": name}).direction for name in METRICS}
    assert [n for n, d in directions.items() if d == "minimize"] == ["log_loss"]
    ll = build_metric({"name": "log_loss"})
    assert ll.better(0.2, 0.3) and not ll.better(0.3, 0.2) and "lower is better" in ll.describe()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn(seed):
    metric = build_metric({"name": "roc_auc"})
    idx, y, probs = _multi_class(seed)
    assert abs(metric.score(y, probs) - roc_auc_score(idx, probs, multi_class="ovr", average="macro")) < TOL
    # binary: two classes, the positive column (Kaggle's `target`)
    yb = (np.random.default_rng(seed).random(200) < 0.3).astype(int)
    pb = np.round(np.random.default_rng(seed + 9).random(200) * 0.5 + 0.3 * yb, 2)  # rounded: ties
    two = np.stack([1 - pb, pb], axis=1)
    assert abs(metric.score(_one_hot(yb, 2), two) - roc_auc_score(yb, pb)) < TOL
    assert abs(metric.score(yb[:, None], pb[:, None]) - roc_auc_score(yb, pb)) < TOL  # binary as one label column
    # multi-label: mean over the classes that have both labels
    yl, pl = _multi_label(seed)
    yl[:, 0] = 0  # a class with no positive: left out
    want = np.mean([roc_auc_score(yl[:, c], pl[:, c]) for c in range(1, yl.shape[1])])
    assert abs(metric.score(yl, pl) - want) < TOL


def test_roc_auc_edges_ties_and_constants():
    metric = build_metric({"name": "roc_auc"})
    yl, _ = _multi_label(3)
    assert abs(metric.score(yl, np.full(yl.shape, 0.3)) - 0.5) < TOL  # constant prediction: 0.5
    assert abs(trivial_baseline(yl, metric, task="multi-label") - 0.5) < TOL
    coarse = np.round(_multi_label(4)[1], 1)  # heavy ties
    want = np.mean([roc_auc_score(yl[:, c], coarse[:, c]) for c in range(yl.shape[1])])
    assert abs(metric.score(yl, coarse) - want) < TOL
    # a per-class monotone transform changes nothing
    assert abs(metric.score(yl, coarse) - metric.score(yl, np.log(coarse + 1e-3) * 3 + 7)) < TOL


@pytest.mark.parametrize("seed", [0, 1])
def test_log_loss_matches_sklearn(seed):
    metric = build_metric({"name": "log_loss"})
    idx, y, probs = _multi_class(seed)
    assert abs(metric.score(y, probs) - log_loss(idx, probs)) < TOL
    unnormalised = probs * np.random.default_rng(seed).uniform(0.5, 2.0, size=(len(probs), 1))  # rows rescaled as Kaggle does
    assert abs(metric.score(y, unnormalised) - log_loss(idx, probs)) < TOL
    yl, pl = _multi_label(seed)
    assert abs(metric.score(yl, pl) - np.mean([log_loss(yl[:, c], pl[:, c], labels=[0, 1]) for c in range(yl.shape[1])])) < TOL
    # per-class weights: multi-class, the weighted mean of the classes' means (sample weight w_y / N_y)
    w = np.array([1.0, 2.0, 0.5, 3.0])
    weighted = build_metric(MetricConfig(name="log_loss", weights=list(w)))
    counts = y.sum(axis=0)
    assert abs(weighted.score(y, probs) - log_loss(idx, probs, sample_weight=(w / counts)[idx])) < TOL
    wl = np.array([1.0, 1.0, 2.0, 1.0, 0.5])
    want = np.sum(wl * [log_loss(yl[:, c], pl[:, c], labels=[0, 1]) for c in range(5)]) / wl.sum()
    assert abs(build_metric({"name": "log_loss", "weights": list(wl)}).score(yl, pl) - want) < TOL


def test_log_loss_clips_as_kaggle_and_prior_is_the_baseline():
    metric = build_metric({"name": "log_loss"})
    y = _one_hot(np.array([0, 1, 1]), 2)
    hard = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])  # row 0 puts 0 on its true class
    assert abs(metric.score(y, hard) - (-np.log(1e-15) - 2 * np.log(1 - 1e-15)) / 3) < TOL
    idx, y, _ = _multi_class(5)
    prior = y.mean(axis=0)
    assert abs(trivial_baseline(y, metric, task="multi-class") - log_loss(idx, np.tile(prior, (len(y), 1)))) < TOL
    train_prior = np.array([0.4, 0.3, 0.2, 0.1])
    assert abs(trivial_baseline(y, metric, task="multi-class", prior=train_prior) - log_loss(idx, np.tile(train_prior, (len(y), 1)))) < TOL


@pytest.mark.parametrize("seed", [0, 1])
def test_mean_average_precision_matches_sklearn(seed):
    metric = build_metric({"name": "mean_average_precision"})
    yl, pl = _multi_label(seed)
    yl[:, 3] = 0  # no positive: left out
    pl = np.round(pl, 2)  # ties
    want = np.mean([average_precision_score(yl[:, c], pl[:, c]) for c in (0, 1, 2, 4)])
    assert abs(metric.score(yl, pl) - want) < TOL
    const = np.full(yl.shape, 0.5)
    assert abs(metric.score(yl, const) - np.mean([yl[:, c].mean() for c in (0, 1, 2, 4)])) < TOL  # constant: the prevalence


@pytest.mark.parametrize("seed", [0, 1])
def test_kappa_and_accuracy_match_sklearn(seed):
    idx, y, probs = _multi_class(seed, c=5)
    pred = probs.argmax(axis=1)
    kappa, acc = build_metric({"name": "quadratic_weighted_kappa"}), build_metric({"name": "accuracy"})
    assert abs(kappa.score(y, _one_hot(pred, 5)) - cohen_kappa_score(idx, pred, weights="quadratic")) < TOL
    assert abs(kappa.score_from_indices(idx, pred, 5) - cohen_kappa_score(idx, pred, weights="quadratic")) < TOL
    assert abs(acc.score(y, _one_hot(pred, 5)) - accuracy_score(idx, pred)) < TOL
    assert abs(acc.score_from_indices(idx, pred, 5) - accuracy_score(idx, pred)) < TOL
    constant = np.zeros_like(pred)
    assert abs(kappa.score_from_indices(idx, constant, 5) - cohen_kappa_score(idx, constant, weights="quadratic")) < TOL
    cms = np.stack([np.bincount(idx * 5 + p, minlength=25).reshape(5, 5) for p in (pred, constant)])
    assert np.allclose(kappa.scores_from_confusions(cms), [cohen_kappa_score(idx, p, weights="quadratic") for p in (pred, constant)], atol=TOL)


def test_config_validates_the_name_against_the_registry():
    with pytest.raises(ValidationError, match="unknown metric 'auc'.*roc_auc"):
        MetricConfig(name="auc")
    with pytest.raises(ValidationError, match="belong to the 'log_loss'"):
        MetricConfig(name="roc_auc", weights=[1.0])
    with pytest.raises(ValidationError, match="for multi-class"):
        CompetitionConfig(task="multi-label", metric=MetricConfig(name="quadratic_weighted_kappa"))
    for name in METRICS:
        assert build_metric(build_metric({"name": name}).params()) == build_metric({"name": name})
