"""The picture of public leaderboard score against the nested-CV score: `kit submissions` saves it as a PNG,
`kit report` embeds the same figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.plots import plt, save_figure


def cv_vs_public_png(
    cv: np.ndarray, public: np.ndarray, names: list[str], path: str | Path, r: float | None, *, trivial: float | None = None, title: str = ""
) -> Path:
    """The figure of `cv_vs_public_figure`, written to `path`."""
    return save_figure(cv_vs_public_figure(cv, public, names, r, trivial=trivial, title=title), path)


def cv_vs_public_figure(
    cv: np.ndarray, public: np.ndarray, names: list[str], r: float | None, *, trivial: float | None = None, title: str = "",
    se: np.ndarray | None = None,
):
    """One point per scored submission (labelled with its file name; with `se`, its nested-CV standard error as a
    horizontal bar), the line y = x and the correlation in the title; the trivial baseline, when known, is in the
    legend and drawn as dotted lines when it is in view."""
    cv = np.asarray(cv, dtype=np.float64)
    public = np.asarray(public, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.0, 5.5))
    values = np.concatenate([cv, public])
    low, high = float(values.min()), float(values.max())
    pad = max(0.1 * (high - low), 0.02)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linewidth=0.8, linestyle="--", label="y = x")
    if se is None:
        ax.scatter(cv, public, zorder=3, label="submission")
    else:
        ax.errorbar(cv, public, xerr=np.asarray(se, dtype=np.float64), fmt="o", capsize=3, zorder=3, label="submission (nested CV ± SE)")
    for x, y, name in zip(cv, public, names):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if trivial is not None:
        ax.axvline(trivial, color="grey", linewidth=0.8, linestyle=":")
        ax.axhline(trivial, color="grey", linewidth=0.8, linestyle=":", label=f"trivial baseline (nested CV) {trivial:+.3f}")
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("nested-CV score (kit blend)")
    ax.set_ylabel("public leaderboard score (Kaggle)")
    corr = f"r = {r:+.3f}" if r is not None else "r: needs 3 or more points that vary"
    ax.set_title(f"{title or 'public vs nested CV'}: {len(cv)} scored, {corr}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return fig
