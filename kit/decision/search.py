"""Per-class offsets searched against the metric: a coordinate ascent on a grid (default), or an Optuna sampler.

`calibrate.search` picks the search:
- "coordinate": one class at a time, every grid value of its offset is scored exactly (all values in one
  bincount), the best is kept, and a few sweeps over the classes follow. Deterministic, no trial budget,
  about C × grid confusion matrices per sweep.
- "cmaes" / "tpe": Optuna's CMA-ES or TPE sampler over the C offsets, ask-and-tell, `calibrate.search_trials`
  trials, the zero offsets (the start rule) enqueued first.
Either way the search returns its scored proposals as Optuna trials (a coordinate step's best grid value,
or each sampled trial), which kit.decision.record writes as the search's own study, so the dashboard
shows the real search. A class with few fitting images must not swing the rule: its offset range is
shrunk toward zero by N_c / (N_c + shrinkage) in every search. The measured comparison (docs/decision.md)
kept the coordinate ascent as the default.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from kit.decision.metrics import Metric
from kit.decision.rules import decide_indices
from kit.studies import quiet_optuna

SEARCHES = ("coordinate", "cmaes", "tpe")
SEARCH_SEED = 0  # the samplers' seed: the same OOF gives the same decision


@dataclass(frozen=True)
class SearchResult:
    offsets: np.ndarray  # (C,)
    score: float  # in-sample score on the rows searched
    start_score: float  # the same rule with zero offsets
    history: list[dict] = field(default_factory=list)  # accepted moves: sweep, class, offset, score
    trials: list[optuna.trial.FrozenTrial] = field(default_factory=list)  # every scored proposal, in order


def offset_grid(class_counts: np.ndarray, offset_range: float, grid_points: int, shrinkage: float) -> np.ndarray:
    """(C, G) candidate offsets per class: `grid_points` values in ±range·N_c/(N_c + shrinkage), 0 included."""
    base = np.linspace(-1.0, 1.0, grid_points if grid_points % 2 else grid_points + 1)
    n = np.asarray(class_counts, dtype=np.float64)
    scale = offset_range * (n / (n + shrinkage) if shrinkage > 0 else np.ones_like(n))
    return scale[:, None] * base[None, :]


def coordinate_ascent(
    lp: np.ndarray,
    y_idx: np.ndarray,
    metric: Metric,
    bayes_weights: tuple[np.ndarray, np.ndarray] | None,
    grid: np.ndarray,
    sweeps: int,
    *,
    names: list[str] | None = None,
) -> SearchResult:
    """Offsets o maximizing the metric of `decide_indices(lp, o, bayes_weights)` on these rows.

    The class scores are argmax-type ``lp_k + o_k`` or Bayes-type ``u_k·p_k·e^{o_k} + v_k``; moving o_c
    only changes column c, so each grid value's predictions come from the row's best other class.
    With `names` (one param name per class), each coordinate step's best grid value is kept as a trial.
    """
    n, c = lp.shape
    y_idx = np.asarray(y_idx, dtype=np.int64)
    if bayes_weights is None:
        base = np.asarray(lp, dtype=np.float32)

        def column(k: int, values: np.ndarray) -> np.ndarray:  # (G, n)
            return base[:, k][None, :] + values[:, None].astype(np.float32)
    else:
        u, v = (np.asarray(x, dtype=np.float64) for x in bayes_weights)
        p = np.exp(np.asarray(lp, dtype=np.float64)).astype(np.float32)

        def column(k: int, values: np.ndarray) -> np.ndarray:
            return p[:, k][None, :] * (u[k] * np.exp(values))[:, None].astype(np.float32) + np.float32(v[k])

    offsets = np.zeros(c)
    scores = np.stack([column(k, np.zeros(1))[0] for k in range(c)], axis=1)  # (n, C) current class scores
    start = _score_of(np.argmax(scores, axis=1)[None, :], y_idx, metric, c)[0]
    best_score, history = start, []
    record = _Recorder(names, np.abs(grid).max(axis=1)) if names is not None else None
    if record:
        record.add(offsets, start, step=0)
    for sweep in range(sweeps):
        moved = False
        for k in range(c):
            others = scores.copy()
            others[:, k] = -np.inf
            other_arg = np.argmax(others, axis=1)
            other_best = others[np.arange(n), other_arg]
            candidates = column(k, grid[k])  # (G, n)
            # np.argmax keeps the first maximum: class k wins a tie only against a later class
            wins = (candidates > other_best[None, :]) | ((candidates == other_best[None, :]) & (k < other_arg)[None, :])
            pred = np.where(wins, k, other_arg[None, :])
            values = _score_of(pred, y_idx, metric, c)
            g = int(np.argmax(values))
            if record:
                proposal = offsets.copy()
                proposal[k] = grid[k, g]
                record.add(proposal, float(values[g]), sweep=sweep, coordinate=k, accepted=bool(values[g] > best_score + 1e-12))
            if values[g] > best_score + 1e-12:
                best_score, offsets[k], moved = float(values[g]), float(grid[k, g]), True
                scores[:, k] = candidates[g]
                history.append({"sweep": sweep, "class": k, "offset": offsets[k], "score": best_score})
        if not moved:
            break
    return SearchResult(offsets, float(best_score), float(start), history, record.trials if record else [])


def sampled_search(
    lp: np.ndarray,
    y_idx: np.ndarray,
    metric: Metric,
    bayes_weights: tuple[np.ndarray, np.ndarray] | None,
    bounds: np.ndarray,
    sampler: str,
    *,
    n_trials: int,
    names: list[str],
) -> SearchResult:
    """Offsets in ±bounds searched by an Optuna sampler ("cmaes" or "tpe"), ask-and-tell, zero offsets first."""
    c = lp.shape[1]
    y_idx = np.asarray(y_idx, dtype=np.int64)
    dists = _distributions(names, bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        chosen = (optuna.samplers.CmaEsSampler(seed=SEARCH_SEED,  # starts at the centre: zero offsets
                                               warn_independent_sampling=False)
                  if sampler == "cmaes" else optuna.samplers.TPESampler(seed=SEARCH_SEED, multivariate=True))
    with quiet_optuna(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="maximize", sampler=chosen)
        study.enqueue_trial({n: 0.0 for n in names})
        for _ in range(n_trials):
            trial = study.ask(dists)
            offsets = np.array([trial.params[n] for n in names])
            study.tell(trial, metric.score_from_indices(y_idx, decide_indices(lp, offsets, bayes_weights), c))
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial
    offsets = np.array([best.params[n] for n in names])
    return SearchResult(offsets, float(best.value), float(trials[0].value), [], trials)


def search_offsets(
    lp: np.ndarray,
    y_idx: np.ndarray,
    metric: Metric,
    bayes_weights: tuple[np.ndarray, np.ndarray] | None,
    class_counts: np.ndarray,
    settings,
    *,
    names: list[str],
) -> SearchResult:
    """The search `settings.search` names (a kit.config.CalibrateConfig), over the shrunk per-class ranges."""
    grid = offset_grid(class_counts, settings.offset_range, settings.grid_points, settings.shrinkage)
    if settings.search == "coordinate":
        return coordinate_ascent(lp, y_idx, metric, bayes_weights, grid, settings.sweeps, names=names)
    if settings.search in ("cmaes", "tpe"):
        return sampled_search(lp, y_idx, metric, bayes_weights, np.abs(grid).max(axis=1), settings.search, n_trials=settings.search_trials, names=names)
    raise ValueError(f"unknown offsets search {settings.search!r}; use one of {SEARCHES}")


def _distributions(names: list[str], bounds: np.ndarray) -> dict[str, FloatDistribution]:
    return {n: FloatDistribution(-float(b), float(b)) for n, b in zip(names, bounds)}


class _Recorder:
    """The coordinate ascent's proposals as finished Optuna trials (params = all offsets, value = in-sample score)."""

    def __init__(self, names: list[str], bounds: np.ndarray):
        self.names, self.bounds, self.dists = names, bounds, _distributions(names, bounds)
        self.trials: list[optuna.trial.FrozenTrial] = []

    def add(self, offsets: np.ndarray, value: float, **attrs) -> None:
        params = {n: float(np.clip(o, -b, b)) for n, o, b in zip(self.names, offsets, self.bounds)}
        self.trials.append(optuna.trial.create_trial(params=params, distributions=self.dists, value=value, user_attrs=attrs))


def _score_of(pred: np.ndarray, y_idx: np.ndarray, metric: Metric, c: int) -> np.ndarray:
    """(G,) metric of each row of (G, n) predicted indices: all confusion matrices in one bincount."""
    g = pred.shape[0]
    flat = (np.arange(g, dtype=np.int64)[:, None] * (c * c) + y_idx[None, :] * c + pred).ravel()
    cm = np.bincount(flat, minlength=g * c * c).reshape(g, c, c)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    per_class = metric.per_class_from_counts(tp, cm.sum(axis=1) - tp, cm.sum(axis=2) - tp)  # (G, C)
    present = ~np.isnan(per_class)
    return np.where(present, per_class, 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
