"""Decision layer speed and value on OOF of the competition's size (51,043 × 20, DESIGN §4 counts).

The simulated model was trained with a sqrt sampler (prior q ∝ √π), is over-confident (logits × 1.5)
and has small per-class biases, so temperature, prior correction, the Bayes rule and offsets all
have something to do. Measured:
- one metric evaluation (indicator arrays, and the bincount path of the tuning loop), median of many;
- `calibrate_logits` with the default budget (300 trials × (K+1) studies, TPE, SQLite storage);
- a plain TPE search from zero offsets on argmax of the plain log-probabilities (no temperature, no
  prior correction, no Bayes rule) with the same budget, scored by the same nested CV.

Run: `.venv/bin/python -m benchmarks bench_decision`.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.special import log_softmax

from kit.config import CompetitionConfig
from kit.decision.metrics import competition_score, confusion_from_indices, trivial_baseline
from kit.decision.rules import rule_predictor
from kit.stages.calibrate import _score_indices, auto_workers, calibrate_logits, class_prior, tune_offsets

DESIGN_COUNTS = [34097, 3356, 2600, 2300, 1500, 1300, 1100, 1000, 800, 700, 500, 450, 400, 350, 250, 180, 70, 45, 40, 5]


def simulated_oof(seed: int = 0, signal: float = 1.6, overconfidence: float = 1.5, bias_sd: float = 0.3, k: int = 5):
    """(logits, labels, fold, train_prior) of a sqrt-sampler model on the DESIGN §4 class counts."""
    rng = np.random.default_rng(seed)
    c = len(DESIGN_COUNTS)
    y = rng.permutation(np.repeat(np.arange(c), DESIGN_COUNTS))
    n = len(y)
    pi = np.array(DESIGN_COUNTS) / n
    q = np.sqrt(pi) / np.sqrt(pi).sum()
    z = rng.normal(size=(n, c))
    z[np.arange(n), y] += signal
    logits = (signal * z + np.log(q) + rng.normal(0, bias_sd, size=c)) * overconfidence
    fold = np.empty(n, dtype=np.int64)
    for cls in range(c):  # stratified folds
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % k
    return logits.astype(np.float32), np.eye(c, dtype=np.uint8)[y], fold, q


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def plain_tpe_nested(logits, labels, fold, cfg: CompetitionConfig) -> tuple[float, float]:
    """Nested CV of offsets tuned by TPE on argmax of the plain log-probabilities (no closed-form rule)."""
    lp = log_softmax(logits.astype(np.float64), axis=1)
    y = labels.argmax(axis=1)
    c = labels.shape[1]
    classes = [str(i) for i in range(c)]
    scores = []
    for k in np.unique(fold).tolist():
        fit, held = fold != k, fold == k
        predict_fit = rule_predictor(lp[fit], "argmax", class_prior(labels[fit]), cfg.metric)
        score_fit = _score_indices(y[fit], c, cfg.metric)
        offsets, _, _ = tune_offsets(lambda o, s=score_fit, p=predict_fit: s(p(o)), classes, cfg.calibrate, cfg.seed, f"plain/{k}", "argmax_offsets")
        held_pred = rule_predictor(lp[held], "argmax", class_prior(labels[held]), cfg.metric)(offsets)
        scores.append(competition_score(labels[held], np.eye(c, dtype=np.uint8)[held_pred], cfg.metric))
    predict_all = rule_predictor(lp, "argmax", class_prior(labels), cfg.metric)
    _, in_sample, _ = tune_offsets(lambda o: _score_indices(y, c, cfg.metric)(predict_all(o)), classes, cfg.calibrate, cfg.seed,
                                   "plain/all", "argmax_offsets")
    return float(np.mean(scores)), float(in_sample)


def main() -> dict:
    console = Console()
    logits, labels, fold, q = simulated_oof()
    n, c = labels.shape
    with tempfile.TemporaryDirectory() as tmp:
        cfg = CompetitionConfig.model_validate({"calibrate": {"storage": f"sqlite:///{Path(tmp) / 'optuna.db'}"}})
        weights = cfg.metric

        # one metric evaluation
        rng = np.random.default_rng(1)
        pred = np.eye(c, dtype=np.uint8)[rng.integers(0, c, n)]
        metric_ms = median_ms(lambda: competition_score(labels, pred, weights), 200)
        y_idx, p_idx = labels.argmax(axis=1), pred.argmax(axis=1)
        bincount_ms = median_ms(lambda: confusion_from_indices(y_idx, p_idx, c), 200)

        # the default-budget calibration (CPU time counts the worker processes too)
        load_before = os.getloadavg()[0]
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        decision, report = calibrate_logits(logits, labels, fold, q, cfg, "bench", console=console)
        calibrate_s = time.perf_counter() - t0
        calibrate_cpu_s = _cpu_seconds() - cpu0

        # plain TPE on argmax, same budget
        t0 = time.perf_counter()
        plain_nested, plain_in_sample = plain_tpe_nested(logits, labels, fold, cfg)
        plain_s = time.perf_counter() - t0

    result = {
        "n": int(n),
        "classes": int(c),
        "folds": int(len(np.unique(fold))),
        "trials_per_study": cfg.calibrate.trials,
        "studies": len(np.unique(fold)) + 1,
        "metric_eval_ms_indicator": round(metric_ms, 3),
        "metric_eval_ms_bincount": round(bincount_ms, 3),
        "calibrate_default_budget_s": round(calibrate_s, 2),
        "calibrate_cpu_s_all_processes": round(calibrate_cpu_s, 2),
        "calibrate_workers": auto_workers(cfg.calibrate, len(np.unique(fold)) + 1),
        "cpu_cores": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "plain_tpe_s": round(plain_s, 2),
        "trivial_baseline_all_data": trivial_baseline(labels, weights),
        "trivial_nested_cv": report["trivial_baseline"]["nested_cv"],
        "nested_cv": report["nested_cv"],
        "in_sample": report["in_sample"],
        "chosen": report["chosen"],
        "chosen_nested_cv": report["chosen_nested_cv"],
        "temperature": report["temperature"],
        "plain_tpe_argmax_offsets_nested_cv": plain_nested,
        "plain_tpe_argmax_offsets_in_sample": plain_in_sample,
    }
    table = Table(title=f"decision layer on {n:,} × {c} OOF (simulated sqrt-sampler model, {result['folds']} folds)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("one metric evaluation (indicator arrays), median", f"{metric_ms:.2f} ms")
    table.add_row("one confusion matrix from indices (tuning loop), median", f"{bincount_ms:.3f} ms")
    table.add_row(f"calibrate, default budget ({cfg.calibrate.trials} trials × {result['studies']} studies, "
                  f"{result['calibrate_workers']} processes), wall", f"{calibrate_s:.1f} s")
    table.add_row(f"  CPU time of all its processes (load average before: {load_before:.1f} on {os.cpu_count()} cores)",
                  f"{calibrate_cpu_s:.1f} s")
    table.add_row("trivial baseline, nested CV", f"{result['trivial_nested_cv']:+.4f}")
    for rule, score in report["nested_cv"].items():
        table.add_row(f"{rule}, nested CV (in-sample {report['in_sample'][rule]:+.4f})", f"{score:+.4f}")
    table.add_row(f"[bold]calibrate's choice: {report['chosen']}, nested CV", f"[bold]{report['chosen_nested_cv']:+.4f}")
    table.add_row(f"plain TPE offsets on argmax, same budget, nested CV (in-sample {plain_in_sample:+.4f})", f"{plain_nested:+.4f}")
    table.add_row("plain TPE time", f"{plain_s:.1f} s")
    console.print(table)
    return result


if __name__ == "__main__":
    main()
