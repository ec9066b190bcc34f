"""Stage `kit calibrate`: choose each target's decision rule by nested cross-validation.

For one OOF (logits, labels, fold, train_prior) every candidate rule is fitted on K−1 folds and
scored on the held-out fold (nested CV, averaged over folds), with its in-sample score beside it:

- multi-class: trivial baseline, argmax, prior-corrected argmax, the Bayes rule with a fitted
  temperature (closed form, DESIGN §2), and the Bayes rule plus per-class offsets tuned by Optuna;
- multi-label: trivial baseline (all negative), threshold 0.5, the cost rule p >= b/(a+b+w) with a
  fitted temperature (closed form), and per-class thresholds fitted by `calibrate.threshold_method`.

The rule with the best nested-CV score wins; the closed-form rule is kept unless tuning beats it
there. The winner is refitted on all folds and saved as `oof/<name>.decision.json`.

Optuna runs each study in memory (fast, seeded, reproducible) and then copies its trials into
`calibrate.storage` (any SQLAlchemy URL) under "<name>/offsets/all" and "<name>/offsets/outer-k";
a re-run replaces those studies, so the storage always shows the latest run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from rich.console import Console
from rich.table import Table

from kit.artifacts import check_against_folds, load_oof
from kit.config import CalibrateConfig, CompetitionConfig, MetricConfig
from kit.decision.metrics import competition_score, per_class_scores, score_from_indices, trivial_baseline
from kit.decision.rules import (
    Decision,
    class_prior,
    closed_form_decision,
    fit_temperature,
    fit_thresholds,
    rule_predictor,
)
from kit.errors import KitError
from kit.files import write_json
from kit.progress import make_progress

MULTI_CLASS_RULES = {
    "argmax": "argmax (plain logits)",
    "prior_argmax": "prior-corrected argmax",
    "bayes": "Bayes rule, fitted temperature (closed form)",
    "bayes_offsets": "Bayes rule + Optuna offsets",
}
# keep the closed-form rule on ties; tuned offsets must win strictly
_TIE_PREFERENCE = ["bayes", "prior_argmax", "argmax", "bayes_offsets", "closed_form", "threshold_0.5", "fitted"]


@dataclass
class RuleResult:
    """One row of the calibration table."""

    key: str
    label: str
    nested_cv: float
    in_sample: float
    per_fold: list[float] = field(default_factory=list)
    decision: Decision | None = None  # refitted on all folds (None for the trivial baseline)
    fitted_per_fold: list[dict] = field(default_factory=list)  # what each outer fold's fit chose (T, offsets, thresholds)


# --- Optuna ------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_optuna():
    """Silence Optuna's one-line-per-trial log for the duration; the progress bar replaces it."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def make_sampler(settings: CalibrateConfig, seed: int, param_names: list[str]) -> optuna.samplers.BaseSampler:
    if settings.sampler == "cmaes":
        # the search box is symmetric, so CMA-ES starts from its centre: zero offsets, the closed-form rule
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def prepare_storage(url: str) -> str:
    """Create the parent folder of a SQLite file (other SQLAlchemy URLs are used as given)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix):] not in ("", ":memory:"):
        Path(url[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
    return url


def open_storage(url: str) -> str:
    """Check that the Optuna storage opens (before any long computation); KitError naming the key if not."""
    try:
        with quiet_optuna():
            optuna.storages.RDBStorage(prepare_storage(url))
    except Exception as exc:  # noqa: BLE001 - any driver or URL problem becomes one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KitError(
            f"calibrate.storage = '{url}': cannot open it ({first}); use a SQLAlchemy URL such as sqlite:///oof/optuna.db"
        ) from None
    return url


def offset_param_names(classes: list[str]) -> list[str]:
    return [f"offset[{c}]" for c in classes]


def tune_offsets(
    score_fn: Callable[[np.ndarray], float],
    classes: list[str],
    settings: CalibrateConfig,
    seed: int,
    study_name: str,
    rule: str,
    held_out_fn: Callable[[np.ndarray], float] | None = None,
    on_trial: Callable[[], None] | None = None,
) -> tuple[np.ndarray, float, optuna.Study]:
    """Per-class offsets maximizing `score_fn`, searched by Optuna from the closed-form solution (zeros).

    Define-by-run objective with one float per class in [-offset_range, offset_range]. The first
    trial is the closed-form rule itself, so the result is never worse in-sample than zero offsets.
    `held_out_fn`, when given, scores each trial on the outer held-out fold for the record only
    (a user attribute); it never influences the search.
    """
    names = offset_param_names(classes)
    r = settings.offset_range
    with quiet_optuna():
        study = optuna.create_study(direction="maximize", sampler=make_sampler(settings, seed, names), study_name=study_name)
    study.enqueue_trial({p: 0.0 for p in names})

    def objective(trial: optuna.Trial) -> float:
        offsets = np.array([trial.suggest_float(p, -r, r) for p in names])
        trial.set_user_attr("rule", rule)
        if held_out_fn is not None:
            trial.set_user_attr("held_out_score", float(held_out_fn(offsets)))
        return float(score_fn(offsets))

    callbacks = [lambda study, trial: on_trial()] if on_trial else []
    with quiet_optuna():
        study.optimize(objective, n_trials=settings.trials, callbacks=callbacks)
    best = study.best_trial
    return np.array([best.params[p] for p in names]), float(best.value), study


def store_study(study_name: str, trials: list, storage: str, user_attrs: dict) -> None:
    """Write an in-memory study's trials into `storage`, replacing a study of the same name (re-runs reproduce)."""
    with quiet_optuna():
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=study_name, storage=storage)
        stored = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
        for key, value in user_attrs.items():
            stored.set_user_attr(key, value)
        try:
            _bulk_insert_trials(stored, trials)
        except Exception:  # noqa: BLE001 - schema or backend we do not know: the slow public path (same result)
            stored.add_trials(trials)


def _bulk_insert_trials(stored: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Insert finished trials into an RDB study in one transaction (about 20× faster than `add_trials`,
    which opens an ORM session per trial: 300 trials × 20 params take 5 s that way). Uses Optuna's
    table definitions; on any error the transaction rolls back and the caller falls back to add_trials."""
    import datetime
    import json

    from optuna.storages._rdb import models
    from sqlalchemy import insert, select

    backend = getattr(stored._storage, "_backend", stored._storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        raise TypeError("not an RDB storage")
    study_id = stored._study_id
    trial_table = models.TrialModel.__table__

    def utc(dt):  # RDBStorage stores naive UTC; FrozenTrial holds naive local time
        return None if dt is None else dt.astimezone(datetime.UTC).replace(tzinfo=None)

    with backend.engine.begin() as conn:
        conn.execute(insert(trial_table), [
            {"number": t.number, "study_id": study_id, "state": t.state.name,
             "datetime_start": utc(t.datetime_start), "datetime_complete": utc(t.datetime_complete)}
            for t in trials
        ])
        trial_id = dict(conn.execute(select(trial_table.c.number, trial_table.c.trial_id).where(trial_table.c.study_id == study_id)).all())
        params, values, attrs = [], [], []
        for t in trials:
            tid = trial_id[t.number]
            for name, value in t.params.items():
                dist = t.distributions[name]
                params.append({"trial_id": tid, "param_name": name, "param_value": dist.to_internal_repr(value),
                               "distribution_json": optuna.distributions.distribution_to_json(dist)})
            if t.value is not None:
                stored_value, kind = models.TrialValueModel.value_to_stored_repr(t.value)
                values.append({"trial_id": tid, "objective": 0, "value": stored_value, "value_type": kind.name})
            attrs += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in t.user_attrs.items()]
        for model, rows in ((models.TrialParamModel, params), (models.TrialValueModel, values), (models.TrialUserAttributeModel, attrs)):
            if rows:
                conn.execute(insert(model.__table__), rows)


# --- one target --------------------------------------------------------------------------------


def _check_inputs(logits: np.ndarray, labels: np.ndarray, fold: np.ndarray, classes: list[str], task: str, name: str) -> None:
    n, c = logits.shape
    if labels.shape != (n, c):
        raise KitError(f"{name}: labels have shape {labels.shape} but logits {logits.shape}; the OOF and the data disagree")
    if fold.shape != (n,):
        raise KitError(f"{name}: fold has shape {fold.shape}, expected ({n},)")
    if not np.isfinite(logits).all():
        raise KitError(f"{name}: logits contain NaN or infinite values; retrain that variant")
    if task == "multi-class":
        bad = np.flatnonzero(labels.sum(axis=1) != 1)
        if bad.size:
            raise KitError(f"{name}: {bad.size} label rows do not have exactly one class (first row {int(bad[0])}); check the task")
    folds = np.unique(fold)
    if folds.size < 2:
        raise KitError(f"{name}: nested CV needs at least 2 folds, found {folds.size}; run `kit folds` with n_folds >= 2")
    for k in folds.tolist():
        present = labels[fold == k].sum(axis=0) > 0
        if not present.all():
            missing = [classes[j] for j in np.flatnonzero(~present)]
            raise KitError(
                f"{name}: class '{missing[0]}' has no image in the held-out set of fold {k}"
                + (f" (also {', '.join(missing[1:4])}{'…' if len(missing) > 4 else ''})" if len(missing) > 1 else "")
                + "; its per-fold score is undefined: use fewer folds (folds.n_folds) or more data"
            )


def _score_indices(y_idx: np.ndarray, c: int, weights: MetricConfig) -> Callable[[np.ndarray], float]:
    """pred indices -> competition score over the classes present (one bincount)."""
    return lambda pred: score_from_indices(y_idx, pred, c, weights)


class _MultiClassFitter:
    """Fits each multi-class rule on a subset of the OOF; `fit(rule, rows, ...)` returns a Decision.

    The Optuna searches (one per outer fold and one on all folds) run first, in `tune_all`, so they
    can run in parallel processes; `fit("bayes_offsets", ...)` then only reads their result.
    """

    def __init__(self, logits, labels, train_prior, classes, cfg: CompetitionConfig, name: str, on_trial):
        self.logits, self.labels, self.train_prior = logits, labels, np.asarray(train_prior, dtype=np.float64)
        self.classes, self.cfg, self.name, self.on_trial = classes, cfg, name, on_trial
        self.y_idx = labels.argmax(axis=1)
        self.c = len(classes)
        self.studies: list[tuple[str, list, dict]] = []  # (study name, trials, study user attributes)
        self._temperature: dict[str, float] = {}
        self._offsets: dict[str, np.ndarray] = {}

    def _bayes(self, rows: np.ndarray, tag: str) -> Decision:
        labels = self.labels[rows]
        target = class_prior(labels)
        if tag not in self._temperature:  # the same fit serves the Bayes rule and its tuned variant
            self._temperature[tag] = fit_temperature(self.logits[rows], labels, self.train_prior, target, "multi-class")
        return closed_form_decision("multi-class", self.classes, self.train_prior, target, self.cfg.metric, self._temperature[tag])

    def fit(self, rule: str, rows: np.ndarray, held: np.ndarray | None, tag: str) -> Decision:
        if rule == "argmax":  # plain logits: no temperature, no prior change
            base = closed_form_decision("multi-class", self.classes, self.train_prior, self.train_prior, self.cfg.metric)
            return base.with_(rule="argmax")
        if rule == "prior_argmax":
            base = closed_form_decision("multi-class", self.classes, self.train_prior, class_prior(self.labels[rows]), self.cfg.metric)
            return base.with_(rule="prior_argmax")
        decision = self._bayes(rows, tag)
        if rule == "bayes":
            return decision
        return decision.with_(rule="bayes_offsets", offsets=self._offsets[tag])

    def tune_all(self, jobs: list[tuple[np.ndarray, np.ndarray | None, str]], workers: int) -> None:
        """Run the offset search for each (fit rows, held rows, tag); in `workers` processes when > 1."""
        specs = []
        for rows, held, tag in jobs:
            decision = self._bayes(rows, tag)
            specs.append({
                "fit_lp": decision.log_probs(self.logits[rows]), "fit_y": self.y_idx[rows],
                "held_lp": None if held is None else decision.log_probs(self.logits[held]),
                "held_y": None if held is None else self.y_idx[held],
                "target": decision.target_prior, "weights": self.cfg.metric, "settings": self.cfg.calibrate,
                "seed": self.cfg.seed, "classes": self.classes, "study_name": f"{self.name}/offsets/{tag}",
            })
        results = _run_jobs(specs, workers, self.on_trial)
        for (_, _, tag), (offsets, trials) in zip(jobs, results):
            self._offsets[tag] = offsets
            attrs = {"target": self.name, "rule": "bayes_offsets", "fit_on": tag, "temperature": self._temperature[tag]}
            self.studies.append((f"{self.name}/offsets/{tag}", trials, attrs))


def _offset_job(spec: dict, on_trial: Callable[[], None] | None = None) -> tuple[np.ndarray, list]:
    """One Optuna offset search (top level, so a worker process can run it); returns offsets and trials."""
    c = len(spec["classes"])
    predictor = rule_predictor(spec["fit_lp"], "bayes", spec["target"], spec["weights"])
    score = _score_indices(spec["fit_y"], c, spec["weights"])
    held_fn = None
    if spec["held_lp"] is not None:
        held_predictor = rule_predictor(spec["held_lp"], "bayes", spec["target"], spec["weights"])
        held_score = _score_indices(spec["held_y"], c, spec["weights"])
        held_fn = lambda o: held_score(held_predictor(o))  # noqa: E731
    if on_trial is None and _WORKER_QUEUE is not None:
        on_trial = lambda: _WORKER_QUEUE.put(1)  # noqa: E731
    offsets, _, study = tune_offsets(
        lambda o: score(predictor(o)), spec["classes"], spec["settings"], spec["seed"],
        spec["study_name"], "bayes_offsets", held_fn, on_trial,
    )
    return offsets, study.trials


_WORKER_QUEUE = None


def _init_worker(queue) -> None:
    global _WORKER_QUEUE
    _WORKER_QUEUE = queue


def _run_jobs(specs: list[dict], workers: int, on_trial: Callable[[], None]) -> list[tuple[np.ndarray, list]]:
    """Each search is seeded and independent, so serial and parallel runs give identical results."""
    if workers <= 1 or len(specs) <= 1:
        return [_offset_job(spec, on_trial) for spec in specs]
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import ProcessPoolExecutor

    # fork starts at once and needs no importable __main__; the children only compute and put to the queue
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    progress_queue = ctx.Queue()
    with ProcessPoolExecutor(max_workers=min(workers, len(specs)), mp_context=ctx,
                             initializer=_init_worker, initargs=(progress_queue,)) as pool:
        futures = [pool.submit(_offset_job, spec) for spec in specs]
        while not all(f.done() for f in futures):
            try:
                progress_queue.get(timeout=0.1)
                on_trial()
            except queue_module.Empty:
                pass
        results = [f.result() for f in futures]
    while True:
        try:
            progress_queue.get_nowait()
            on_trial()
        except queue_module.Empty:
            break
    return results


def auto_workers(settings: CalibrateConfig, n_studies: int) -> int:
    """`calibrate.workers`, or with 0: one process per core when the searches are long enough to pay
    for starting processes (each TPE trial costs ~20 ms, whatever the data size)."""
    if settings.workers:
        return settings.workers
    return min(os.cpu_count() or 1, n_studies) if settings.trials >= 100 else 1


class _MultiLabelFitter:
    """Fits each multi-label threshold rule on a subset of the OOF."""

    def __init__(self, logits, labels, train_prior, classes, cfg: CompetitionConfig, name: str, on_trial):
        self.logits, self.labels, self.train_prior = logits, labels, np.asarray(train_prior, dtype=np.float64)
        self.classes, self.cfg, self.name = classes, cfg, name
        self.studies: list[tuple[str, list, dict]] = []

    def fit(self, rule: str, rows: np.ndarray, held: np.ndarray | None, tag: str) -> Decision:
        logits, labels = self.logits[rows], self.labels[rows]
        target = class_prior(labels)
        base = closed_form_decision("multi-label", self.classes, self.train_prior, target, self.cfg.metric)
        if rule == "threshold_0.5":
            return base.with_(target_prior=self.train_prior.copy(), thresholds=np.full(len(self.classes), 0.5))
        t = fit_temperature(logits, labels, self.train_prior, target, "multi-label")
        decision = base.with_(temperature=t)
        if rule == "closed_form":
            return decision
        probs = np.exp(decision.log_probs(logits))
        return decision.with_(thresholds=fit_thresholds(probs, labels, self.cfg.calibrate.threshold_method, self.cfg.metric))


def calibrate_logits(
    logits: np.ndarray,
    labels: np.ndarray,
    fold: np.ndarray,
    train_prior: np.ndarray,
    cfg: CompetitionConfig,
    name: str,
    classes: list[str] | None = None,
    console: Console | None = None,
) -> tuple[Decision, dict]:
    """Nested-CV comparison of the candidate rules for one target; returns the chosen decision (refitted
    on all folds) and a report dict (rows, chosen rule, scores, temperature).

    Raises KitError before any study is written when the inputs cannot give a defined per-fold score.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.uint8)
    fold = np.asarray(fold, dtype=np.int64)
    task = cfg.task
    classes = [str(c) for c in (classes if classes is not None else range(logits.shape[1]))]
    _check_inputs(logits, labels, fold, classes, task, name)
    weights = cfg.metric
    folds = np.unique(fold).tolist()
    multi_class = task == "multi-class"
    tuned = multi_class and cfg.calibrate.trials > 0
    if multi_class:
        rules = dict(MULTI_CLASS_RULES)
        if not tuned:
            rules.pop("bayes_offsets")
        fitter_cls = _MultiClassFitter
    else:
        rules = {
            "threshold_0.5": "threshold 0.5 (plain sigmoid)",
            "closed_form": "cost rule p >= b/(a+b+w), fitted temperature (closed form)",
            "fitted": f"per-class thresholds ({cfg.calibrate.threshold_method}), fitted temperature",
        }
        fitter_cls = _MultiLabelFitter

    if tuned:
        open_storage(cfg.calibrate.storage)
    console = console or Console()
    n_trials = cfg.calibrate.trials * (len(folds) + 1) if tuned else 0
    with make_progress(console) as progress:
        bar = progress.add_task(f"calibrate {name}", total=(len(folds) + 1) * len(rules) + n_trials)
        fitter = fitter_cls(logits, labels, train_prior, classes, cfg, name, lambda: progress.advance(bar))

        # trivial baseline: the majority class of the fitting folds everywhere (multi-label: all negative)
        def trivial(rows_fit, rows_eval):
            majority = int(labels[rows_fit].sum(axis=0).argmax()) if multi_class else None
            return trivial_baseline(labels[rows_eval], weights, task, majority)

        every = np.ones(len(fold), dtype=bool)
        trivial_folds = [trivial(fold != k, fold == k) for k in folds]
        trivial_row = RuleResult(
            "trivial", "trivial baseline" + (" (majority class everywhere)" if multi_class else " (all negative)"),
            nested_cv=float(np.mean(trivial_folds)), in_sample=trivial(every, every), per_fold=trivial_folds,
        )
        if tuned:
            jobs = [(fold != k, fold == k, f"outer-{k}") for k in folds] + [(every, None, "all")]
            fitter.tune_all(jobs, auto_workers(cfg.calibrate, len(jobs)))
        results: list[RuleResult] = []
        for key, label in rules.items():
            per_fold, fitted = [], []
            for k in folds:
                fit_rows, held = fold != k, fold == k
                decision = fitter.fit(key, fit_rows, held, f"outer-{k}")
                per_fold.append(competition_score(labels[held], decision.predict(logits[held]), weights))
                fitted.append({"fold": k, **_fitted_parameters(decision)})
                progress.advance(bar)
            final = fitter.fit(key, every, None, "all")
            progress.advance(bar)
            in_sample = competition_score(labels, final.predict(logits), weights)
            results.append(RuleResult(key, label, float(np.mean(per_fold)), float(in_sample), per_fold, final, fitted))

    chosen = choose(results, multi_class)
    nested = {r.key: r.nested_cv for r in results}
    report = {
        "target": name,
        "task": task,
        "n_folds": len(folds),
        "trials": cfg.calibrate.trials if tuned else 0,
        "sampler": cfg.calibrate.sampler if tuned else None,
        "rows": [
            {"rule": r.key, "label": r.label, "nested_cv": r.nested_cv, "in_sample": r.in_sample, "per_fold": r.per_fold,
             "fitted_per_fold": r.fitted_per_fold}
            for r in [trivial_row, *results]
        ],
        "nested_cv": nested,
        "in_sample": {r.key: r.in_sample for r in results},
        "trivial_baseline": {"nested_cv": trivial_row.nested_cv, "in_sample": trivial_row.in_sample},
        "chosen": chosen.key,
        "chosen_nested_cv": chosen.nested_cv,
        "chosen_in_sample": chosen.in_sample,
        "temperature": chosen.decision.temperature,
        "storage": cfg.calibrate.storage if tuned else None,
        "studies": [study_name for study_name, _, _ in fitter.studies],
    }
    if fitter.studies:
        storage = cfg.calibrate.storage
        for study_name, trials, attrs in fitter.studies:
            best = max(trials, key=lambda t: t.value)
            if attrs["fit_on"] == "all":  # the refitted offsets: their rule's nested-CV score is now known
                best.set_user_attr("nested_cv_score", nested["bayes_offsets"])
                extra = {"nested_cv": nested, "chosen": chosen.key}
            else:
                extra = {"outer_fold": int(attrs["fit_on"].split("-")[1]), "held_out_score_of_best": best.user_attrs.get("held_out_score")}
            store_study(study_name, trials, storage, {**attrs, **extra})
    print_table(console, name, trivial_row, results, chosen, len(folds))
    return chosen.decision, report


def _fitted_parameters(decision: Decision) -> dict:
    d = decision.to_dict()
    return {k: d[k] for k in ("temperature", "target_prior", "offsets", "thresholds")}


def choose(results: list[RuleResult], multi_class: bool) -> RuleResult:
    """Best nested-CV score; ties go to the closed-form rule, and tuning must beat the closed form strictly."""
    by_key = {r.key: r for r in results}
    best = max(results, key=lambda r: (r.nested_cv, -_TIE_PREFERENCE.index(r.key)))
    closed = by_key.get("bayes" if multi_class else "closed_form")
    if best.key in ("bayes_offsets", "fitted") and closed is not None and best.nested_cv <= closed.nested_cv:
        return closed
    return best


def print_table(console: Console, name: str, trivial_row: RuleResult, results: list[RuleResult], chosen: RuleResult, k: int) -> None:
    table = Table(title=f"{name}: competition score by decision rule (nested CV over {k} folds)")
    table.add_column("rule")
    table.add_column("nested-CV score", justify="right")
    table.add_column("in-sample score", justify="right")
    table.add_row(trivial_row.label, f"{trivial_row.nested_cv:+.4f}", f"{trivial_row.in_sample:+.4f}", style="dim")
    for r in results:
        mark = "[bold green]" if r is chosen else ""
        table.add_row(f"{mark}{r.label}", f"{mark}{r.nested_cv:+.4f}", f"{mark}{r.in_sample:+.4f}")
    console.print(table)
    console.print(
        f"chosen: [bold]{chosen.label}[/] (nested-CV {chosen.nested_cv:+.4f} vs trivial baseline "
        f"{trivial_row.nested_cv:+.4f}; temperature {chosen.decision.temperature:.3f})"
    )


# --- the stage ---------------------------------------------------------------------------------


def find_oof_paths(cfg: CompetitionConfig, oof: list[Path] | None = None, variants: list[str] | None = None) -> list[Path]:
    """--oof files as given; else --variant names (or all of cfg.variants) that have an OOF file."""
    if oof:
        return [Path(p) for p in oof]
    if variants and variants != ["all"]:
        return [cfg.paths.oof / f"{v}.npz" for v in variants]
    found = [cfg.paths.oof / f"{v}.npz" for v in cfg.variants if (cfg.paths.oof / f"{v}.npz").is_file()]
    if not found:
        raise KitError(
            f"{cfg.paths.oof}: no OOF file for the variants {cfg.variants} of {cfg.source_file}; run `kit train` first"
        )
    return found


def calibrate(cfg: CompetitionConfig, oof_paths: list[Path], console: Console | None = None) -> dict[str, Decision]:
    """Stage: for each OOF file, choose and save its decision (`oof/<name>.decision.json`), print the
    nested-CV table and write a per-class score PNG. Every input is checked before anything is written."""
    from kit.data.sources import open_source
    from kit.plots import per_class_png

    console = console or Console()
    source = open_source(cfg)
    if source.task != cfg.task:
        raise KitError(f"{cfg.source_file}: task is '{cfg.task}' but the data source is '{source.task}'")
    targets = []
    for path in oof_paths:
        path = Path(path)
        oof = load_oof(path)
        check_against_folds(oof, cfg.folds.path, path)
        classes = oof.classes.astype(str).tolist()
        if classes != list(source.classes):
            raise KitError(
                f"{path}: classes differ from the data source {cfg.data.dir} ({classes[:3]}… vs {list(source.classes)[:3]}…); "
                "retrain that variant on the current data"
            )
        labels = source.train_labels_for(oof.ids, path)
        _check_inputs(oof.logits, labels, oof.fold, classes, cfg.task, str(path))
        targets.append((path, oof, labels, classes))

    decisions = {}
    for path, oof, labels, classes in targets:
        name = path.stem
        decision, report = calibrate_logits(oof.logits, labels, oof.fold, oof.train_prior, cfg, name, classes, console)
        out = path.with_name(f"{name}.decision.json")
        decision.save(out)
        write_json(path.with_name(f"{name}.calibration.json"), report)
        majority = np.zeros_like(labels)
        if cfg.task == "multi-class":
            majority[:, int(labels.sum(axis=0).argmax())] = 1
        png = per_class_png(
            per_class_scores(labels, decision.predict(oof.logits), cfg.metric),
            per_class_scores(labels, majority, cfg.metric),
            classes,
            path.with_name(f"{name}.per_class.png"),
            title=f"{name}: OOF score per class, rule '{report['chosen']}' (in-sample) vs trivial baseline",
        )
        console.print(f"wrote {out}, {path.with_name(f'{name}.calibration.json')} and {png}")
        if report["studies"]:
            console.print(f"Optuna studies {report['studies'][-1]!r} and outer folds in {cfg.calibrate.storage} (`kit dashboard`)")
        decisions[name] = decision
    return decisions


def dashboard(cfg: CompetitionConfig, host: str = "127.0.0.1", port: int = 8080, console: Console | None = None) -> None:
    """Serve optuna-dashboard on the calibration storage until interrupted."""
    import optuna_dashboard

    console = console or Console()
    storage = prepare_storage(cfg.calibrate.storage)
    console.print(f"optuna-dashboard on {storage}: http://{host}:{port}/  (Ctrl-C stops it)", highlight=False)
    optuna_dashboard.run_server(storage, host=host, port=port)
