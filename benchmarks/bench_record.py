"""What recording the calibrate studies costs at the competition's size (51,043 × 20 simulated OOF, 5 folds).

`kit calibrate` writes one study of its candidates and one per offsets search (2 starts × (5 folds + refit),
each holding every proposal the coordinate ascent scored, 20 offsets as params). Measured in one run, on the
same selection, into a fresh SQLite file each time:
- the decision itself: `select_decision` with the default settings (study recording off);
- the studies written as `kit calibrate` writes them (kit.decision.record: bulk inserts in one transaction);
- the same studies through Optuna's `Study.add_trials` (a few statements per parameter row, a commit per
  trial: what calibrate did before), for the ratio.
Reported: seconds and (decision + recording) / decision, recording on vs off.

Run: `.venv/bin/python -m benchmarks bench_record`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

import kit.decision.record as record
from benchmarks.simulate import sampler_model_oof
from kit.config import CalibrateConfig
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import LinearCountMetric
from kit.decision.select import select_decision
from kit.studies import open_storage


def write_all(selection, url: str) -> float:
    """Seconds to write the selection's studies as the calibrate stage does."""
    storage = open_storage(url)
    t0 = time.perf_counter()
    record.write_study(storage, "calibrate/bench", record.selection_trials(selection),
                       record.study_summary(selection.choice, selection.scores["trivial"], target="bench"))
    record.write_search_studies(storage, "calibrate/bench", record.search_studies(selection))
    return time.perf_counter() - t0


def write_all_add_trials(selection, url: str) -> float:
    """The same studies with `Study.add_trials` on the SQL storage (the bulk path switched off)."""
    original = record.bulk_add_trials

    def through_add_trials(storage, study_id, trials, study_attrs=None):
        study = optuna.load_study(study_name=storage.get_study_name_from_id(study_id), storage=storage)
        for key, value in (study_attrs or {}).items():
            study.set_user_attr(key, value)
        study.add_trials(trials)

    record.bulk_add_trials = through_add_trials
    try:
        return write_all(selection, url)
    finally:
        record.bulk_add_trials = original


def main() -> dict:
    logits, labels, fold, q = sampler_model_oof()
    n, c = labels.shape
    metric = LinearCountMetric()
    context = FitContext("multi-class", tuple(str(i) for i in range(c)), metric, q, CalibrateConfig())
    t0 = time.perf_counter()
    selection = select_decision(logits, labels, fold, context, candidates_for("multi-class", metric))
    decision_s = time.perf_counter() - t0
    searches = record.search_studies(selection)
    n_trials = len(selection.candidates) + sum(len(trials) for trials, _ in searches.values())
    n_params = sum(len(t.params) for trials, _ in searches.values() for t in trials) + len(selection.candidates)
    with tempfile.TemporaryDirectory() as tmp:
        bulk_s = [write_all(selection, f"sqlite:///{Path(tmp) / 'a.db'}")]
        add_trials_s = write_all_add_trials(selection, f"sqlite:///{Path(tmp) / 'b.db'}")
        bulk_s.append(write_all(selection, f"sqlite:///{Path(tmp) / 'c.db'}"))
    bulk = min(bulk_s)
    result = {
        "n": int(n), "classes": int(c), "folds": int(len(set(fold.tolist()))), "studies": 1 + len(searches),
        "trials": n_trials, "param_rows": n_params,
        "decision_s": round(decision_s, 2), "record_bulk_s": [round(s, 2) for s in bulk_s], "record_add_trials_s": round(add_trials_s, 2),
        "ratio_recording_on_vs_off": round((decision_s + bulk) / decision_s, 3),
        "ratio_recording_on_vs_off_add_trials": round((decision_s + add_trials_s) / decision_s, 3),
        "speedup_bulk_vs_add_trials": round(add_trials_s / bulk, 1),
    }
    table = Table(title=f"calibrate's study recording on {n:,} × {c} simulated OOF ({result['studies']} studies, "
                        f"{n_trials} trials, {n_params} param rows; SQLite)")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_column("(decision + recording) / decision", justify="right")
    table.add_row("the decision (select_decision, recording off)", f"{decision_s:.1f}", "1.00")
    table.add_row("studies written as calibrate writes them (bulk)", f"{bulk:.1f}", f"{result['ratio_recording_on_vs_off']:.2f}")
    table.add_row("the same through Study.add_trials (before)", f"{add_trials_s:.1f}", f"{result['ratio_recording_on_vs_off_add_trials']:.2f}")
    Console().print(table)
    return result


if __name__ == "__main__":
    main()
