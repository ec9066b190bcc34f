"""Test-time aggregation on real trained outputs: which way of combining the K fold models' test logits
behaves like the decision that was fitted on single-model OOF?

Needs the demo's outputs (`make demo`, or `make synth folds train`): the config's variants in oof/ and the
synthetic data's solution.csv. For each rule of the blend (argmax, the Bayes rule, offsets) the pipeline is
fitted on all folds (equal weights over the configured variants, and each variant alone), then the test
set is predicted with each aggregation (kit.ensemble.aggregate). Reported per aggregation: the score on
solution.csv beside the OOF score of the same decision, and the total-variation distance between the
predicted class distribution on the test set and on the OOF rows (a decision that transfers predicts
classes as often on test as on OOF).

Run: `.venv/bin/python -m benchmarks bench_aggregation` (KIT_CONFIG picks another config).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from kit.artifacts import load_oof
from kit.config import load_competition
from kit.data.sources import open_source
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import build_metric, trivial_baseline
from kit.ensemble.aggregate import AGGREGATIONS, aggregate_predict
from kit.ensemble.pipeline import Member, fit_blends


def main() -> dict:
    cfg = load_competition(os.environ.get("KIT_CONFIG", "configs/competition.toml"))
    source = open_source(cfg)
    metric = build_metric(cfg.metric)
    oofs = {v: load_oof(cfg.paths.oof / f"{v}.npz") for v in cfg.variants}
    ref = next(iter(oofs.values()))
    classes = ref.classes.astype(str).tolist()
    labels = source.train_labels_for(ref.ids, cfg.paths.oof)
    solution = pd.read_csv(cfg.data.dir / cfg.data.solution_csv, dtype={cfg.data.id_column: str}).set_index(cfg.data.id_column)
    y_test = solution.loc[ref.test_ids.astype(str), classes].to_numpy().astype(np.uint8)
    context = FitContext(cfg.task, tuple(classes), metric, np.ones(len(classes)) / len(classes), cfg.calibrate)
    rows = np.ones(len(labels), dtype=bool)
    groups = {"equal blend": list(oofs)} | {f"{v} alone": [v] for v in oofs}
    result: dict = {"trivial_solution": trivial_baseline(y_test, metric, cfg.task, int(labels.sum(axis=0).argmax())), "runs": {}}
    table = Table(title=f"test-time aggregation on {cfg.data.dir} ({len(y_test)} test rows, {ref.n_folds} fold models per variant)")
    for column in ("members, rule", "OOF score (refit)", *[f"{a}: solution / TV" for a in AGGREGATIONS]):
        table.add_column(column, justify="left" if column.startswith("members") else "right")
    for group, names in groups.items():
        members = [Member(n, oofs[n].logits, oofs[n].test_logits, oofs[n].train_prior) for n in names]
        for rule in candidates_for(cfg.task, metric, ["argmax", "bayes", "offsets"]):
            blend_ = fit_blends(members, labels, rows, ["equal"], [rule], context)[("equal", rule.name)]
            oof_pred = blend_.predict([m.logits for m in members])
            oof_rate = oof_pred.mean(axis=0)
            run = {"oof": metric.score(labels, oof_pred)}
            cells = []
            for how in AGGREGATIONS:
                pred = aggregate_predict(blend_, [m.test_logits for m in members], how)
                tv = 0.5 * float(np.abs(pred.mean(axis=0) - oof_rate).sum())
                run[how] = {"solution": metric.score(y_test, pred), "tv_distance": tv}
                cells.append(f"{run[how]['solution']:+.4f} / {tv:.3f}")
            result["runs"][f"{group}, {rule.name}"] = run
            table.add_row(f"{group}, {rule.name}", f"{run['oof']:+.4f}", *cells)
    wins = {how: sum(max(AGGREGATIONS, key=lambda a, r=r: r[a]["solution"]) == how for r in result["runs"].values()) for how in AGGREGATIONS}
    result["best_on_solution_count"] = wins
    result["mean_solution"] = {how: float(np.mean([r[how]["solution"] for r in result["runs"].values()])) for how in AGGREGATIONS}
    result["mean_tv_distance"] = {how: float(np.mean([r[how]["tv_distance"] for r in result["runs"].values()])) for how in AGGREGATIONS}
    console = Console()
    console.print(table)
    console.print(f"trivial baseline on the solution {result['trivial_solution']:+.4f}; mean over runs: "
                  + ", ".join(f"{a} {result['mean_solution'][a]:+.4f} (TV {result['mean_tv_distance'][a]:.3f}, best in {wins[a]})" for a in AGGREGATIONS))
    return result


if __name__ == "__main__":
    main()
