"""The decision layer at the competition's size (51,043 × 20 OOF, 5 folds), against a baseline in the same run.

Simulated model: trained under a sqrt sampler, over-confident, small per-class biases (benchmarks/simulate.py).
Measured:
- one metric evaluation (indicator arrays, and the bincount path of the searches), median of many;
- `kit calibrate`'s selection with the default settings: every candidate by nested CV, refits, the Optuna
  study written (SQLite), wall-clock seconds, and each candidate's nested score ± SE;
- the baseline the engine replaced: per-class offsets searched by Optuna's TPE from the Bayes rule,
  300 trials per fit, the same nested CV — its seconds and its nested score;
- the offsets candidate under each `calibrate.search` ("coordinate", "cmaes", "tpe"): nested score ± SE,
  in-sample score and seconds, side by side (`compare_searches`, also on any OOF:
  `python -m benchmarks.bench_decision --oof oof/<variant>.npz [--config configs/competition.toml]`).

Run: `.venv/bin/python -m benchmarks bench_decision`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from rich.console import Console
from rich.table import Table

from benchmarks.simulate import sampler_model_oof
from kit.config import CalibrateConfig
from kit.decision.calibration import class_prior, fit_temperature, prior_shift
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import LinearCountMetric, confusion_from_indices
from kit.decision.names import display_name
from kit.decision.nested import nested_cv
from kit.decision.record import selection_trials, write_study
from kit.decision.rules import closed_form_decision, decide_indices
from kit.decision.select import select_decision
from kit.studies import quiet_optuna

TPE_TRIALS = 300


def compare_searches(logits, labels, fold, q, classes: tuple[str, ...], metric, title: str) -> dict:
    """The offsets candidate by nested CV under each offsets search: (nested mean, SE, in-sample, seconds)."""
    from kit.decision.search import SEARCHES

    out = {}
    for search in SEARCHES:
        context = FitContext("multi-class", classes, metric, q, CalibrateConfig(search=search))
        t0 = time.perf_counter()
        selection = select_decision(logits, labels, fold, context, candidates_for("multi-class", metric, ["argmax", "offsets"]))
        seconds = time.perf_counter() - t0
        s = selection.scores["offsets"]
        trials = sum(len(t) for t in selection.final["offsets"].extra["_search_trials"].values())
        out[search] = {"nested_cv": round(s.mean, 4), "se": round(s.se, 4), "in_sample": round(selection.in_sample["offsets"], 4),
                       "seconds": round(seconds, 1), "trials_in_refit": trials, "argmax_nested_cv": round(selection.scores["argmax"].mean, 4),
                       "per_fold": [round(x, 4) for x in s.per_fold]}
        print(json.dumps({search: out[search]}), flush=True)  # each search as it finishes (the slow ones may be stopped)
    table = Table(title=f"offsets search: {title} (nested CV; seconds for argmax + offsets over all folds and the refit)")
    for column in ("calibrate.search", "nested CV ± SE", "in-sample", "seconds", "proposals scored (refit, both starts)"):
        table.add_column(column, justify="left" if column.startswith("calibrate") else "right")
    for search, r in out.items():
        table.add_row(search, f"{r['nested_cv']:+.4f} ± {r['se']:.4f}", f"{r['in_sample']:+.4f}", f"{r['seconds']:.1f}", str(r["trials_in_refit"]))
    Console().print(table)
    return out


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def tpe_offsets_nested(logits, labels, fold, q, metric) -> float:
    """The replaced search: TPE over 20 offsets in [-3, 3] from the Bayes rule (enqueued), 300 trials per outer fold."""
    c = labels.shape[1]
    classes = tuple(str(i) for i in range(c))

    def fit(rows):
        target = class_prior(labels[rows])
        t = fit_temperature(logits[rows], labels[rows], prior_shift(q, target, "multi-class"))
        decision = closed_form_decision("multi-class", classes, q, target, metric, temperature=t)
        lp, y = decision.log_probs(logits[rows]), labels[rows].argmax(axis=1)
        weights = metric.bayes_weights(target)
        with quiet_optuna():
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
            study.enqueue_trial({f"o{k}": 0.0 for k in range(c)})
            study.optimize(lambda trial: metric.score_from_indices(
                y, decide_indices(lp, np.array([trial.suggest_float(f"o{k}", -3, 3) for k in range(c)]), weights), c), n_trials=TPE_TRIALS)
        return decision.with_(offsets=np.array([study.best_params[f"o{k}"] for k in range(c)]))

    scores = nested_cv(fit, lambda d, held: {"tpe": metric.score(labels[held], d.predict(logits[held]))}, fold)
    return scores["tpe"].mean


def main() -> dict:
    console = Console()
    logits, labels, fold, q = sampler_model_oof()
    n, c = labels.shape
    metric = LinearCountMetric()
    rng = np.random.default_rng(1)
    pred = np.eye(c, dtype=np.uint8)[rng.integers(0, c, n)]
    metric_ms = median_ms(lambda: metric.score(labels, pred), 100)
    y_idx, p_idx = labels.argmax(axis=1), pred.argmax(axis=1)
    bincount_ms = median_ms(lambda: confusion_from_indices(y_idx, p_idx, c), 100)

    settings = CalibrateConfig()
    context = FitContext("multi-class", tuple(str(i) for i in range(c)), metric, q, settings)
    candidates = candidates_for("multi-class", metric)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        selection = select_decision(logits, labels, fold, context, candidates)
        write_study(f"sqlite:///{Path(tmp) / 'optuna.db'}", "calibrate/bench", selection_trials(selection), {})
        engine_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tpe_nested = tpe_offsets_nested(logits, labels, fold, q, metric)
    tpe_s = time.perf_counter() - t0

    scores = selection.scores
    result = {
        "n": int(n), "classes": int(c), "folds": int(len(np.unique(fold))),
        "metric_eval_ms_indicator": round(metric_ms, 3), "metric_eval_ms_bincount": round(bincount_ms, 3),
        "calibrate_default_s": round(engine_s, 2), "tpe_offsets_baseline_s": round(tpe_s, 2),
        "speed_ratio_engine_vs_tpe": round(tpe_s / engine_s, 2),
        "nested_cv": {k: round(s.mean, 4) for k, s in scores.items()}, "se": {k: round(s.se, 4) for k, s in scores.items()},
        "in_sample": {k: round(v, 4) for k, v in selection.in_sample.items()},
        "chosen": selection.choice.chosen, "best": selection.choice.best,
        "tpe_offsets_from_bayes_nested_cv": round(tpe_nested, 4),
        "offsets_search": compare_searches(logits, labels, fold, q, context.classes, metric, f"{n:,} × {c} simulated OOF"),
    }
    table = Table(title=f"decision layer on {n:,} × {c} simulated OOF (sqrt-sampler model, {result['folds']} folds)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("one metric evaluation (indicator arrays), median", f"{metric_ms:.2f} ms")
    table.add_row("one confusion matrix from indices (search loop), median", f"{bincount_ms:.3f} ms")
    table.add_row("kit calibrate selection, default settings (6 candidates × 6 fits, study written)", f"{engine_s:.1f} s")
    table.add_row(f"baseline: TPE offsets from the Bayes rule, {TPE_TRIALS} trials × 5 outer fits", f"{tpe_s:.1f} s")
    for cand in candidates:
        s = scores[cand.name]
        table.add_row(f"{display_name(cand.name)}: nested CV ± SE (in-sample {selection.in_sample[cand.name]:+.4f})", f"{s.mean:+.4f} ± {s.se:.4f}")
    table.add_row("baseline: TPE offsets from the Bayes rule, nested CV", f"{tpe_nested:+.4f}")
    table.add_row(f"[bold]chosen ({selection.choice.rule})", f"[bold]{selection.choice.chosen}")
    console.print(table)
    return result


def oof_main(oof_path: str, config: str) -> dict:
    """compare_searches on a trained variant's OOF (labels from the config's data source)."""
    from kit.artifacts import load_oof
    from kit.config import load_competition
    from kit.data.sources import open_source
    from kit.decision.metrics import build_metric

    cfg = load_competition(config)
    oof = load_oof(Path(oof_path))
    labels = open_source(cfg).train_labels_for(oof.ids, oof_path)
    classes = tuple(oof.classes.astype(str).tolist())
    title = f"{Path(oof_path).stem}, {len(labels):,} × {len(classes)} OOF"
    return compare_searches(oof.logits.astype(np.float64), labels, oof.fold, oof.train_prior, classes, build_metric(cfg.metric), title)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--oof")
    parser.add_argument("--config", default="configs/competition.toml")
    parser.add_argument("--searches-only", action="store_true", help="only the offsets searches on the simulated OOF")
    args = parser.parse_args()
    if args.oof:
        print(json.dumps(oof_main(args.oof, args.config), indent=2))
    elif args.searches_only:
        logits, labels, fold, q = sampler_model_oof()
        classes = tuple(str(i) for i in range(labels.shape[1]))
        print(json.dumps(compare_searches(logits, labels, fold, q, classes, LinearCountMetric(), f"{len(labels):,} × {len(classes)} simulated OOF"), indent=2))
    else:
        main()
