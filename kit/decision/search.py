"""Per-class offsets searched against the metric by coordinate ascent on a grid.

TPE in 20 dimensions from the Bayes rule did not recover argmax on real outputs (docs/decision.md); a
coordinate ascent does what the problem asks for: one class at a time, every grid value of its offset
is scored exactly (all values in one bincount), the best is kept, and a few sweeps over the classes
follow. It is deterministic, needs no trial budget, and costs about C × grid confusion matrices per
sweep. A class with few fitting images must not swing the rule: its offset range is shrunk toward
zero by N_c / (N_c + shrinkage).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kit.decision.metrics import Metric


@dataclass(frozen=True)
class SearchResult:
    offsets: np.ndarray  # (C,)
    score: float  # in-sample score on the rows searched
    start_score: float  # the same rule with zero offsets
    history: list[dict] = field(default_factory=list)  # accepted moves: sweep, class, offset, score


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
) -> SearchResult:
    """Offsets o maximizing the metric of `decide_indices(lp, o, bayes_weights)` on these rows.

    The class scores are argmax-type ``lp_k + o_k`` or Bayes-type ``u_k·p_k·e^{o_k} + v_k``; moving o_c
    only changes column c, so each grid value's predictions come from the row's best other class.
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
            if values[g] > best_score + 1e-12:
                best_score, offsets[k], moved = float(values[g]), float(grid[k, g]), True
                scores[:, k] = candidates[g]
                history.append({"sweep": sweep, "class": k, "offset": offsets[k], "score": best_score})
        if not moved:
            break
    return SearchResult(offsets, float(best_score), float(start), history)


def _score_of(pred: np.ndarray, y_idx: np.ndarray, metric: Metric, c: int) -> np.ndarray:
    """(G,) metric of each row of (G, n) predicted indices: all confusion matrices in one bincount."""
    g = pred.shape[0]
    flat = (np.arange(g, dtype=np.int64)[:, None] * (c * c) + y_idx[None, :] * c + pred).ravel()
    cm = np.bincount(flat, minlength=g * c * c).reshape(g, c, c)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    per_class = metric.per_class_from_counts(tp, cm.sum(axis=1) - tp, cm.sum(axis=2) - tp)  # (G, C)
    present = ~np.isnan(per_class)
    return np.where(present, per_class, 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
