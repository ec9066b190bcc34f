"""Stage `kit report`: one static HTML file per competition config, to look at rather than read.

It gathers what the other stages wrote (docs/files.md) — `oof/<target>.calibration.json` and the OOF it
was made on, each blend's provenance `submissions/<name>.json`, the ledger — and shows, beside the trivial
baseline every time: each target's nested-CV score ± SE, per-class recall of each chosen decision on the
OOF, each target's candidate table and choice, the blend tables, and the ledger's public score against
nested CV. Pictures are PNGs embedded as base64 and the CSS is inline: the file opens in any browser with
no server and fetches nothing.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from kit.artifacts import load_oof, oof_fingerprint
from kit.config import CompetitionConfig
from kit.decision.metrics import build_metric
from kit.decision.names import degenerate_notes, display_name
from kit.errors import KitError
from kit.files import write_text
from kit.leaderboard.ledger import read_ledger
from kit.paths import (
    blend_decision_json,
    blend_oof_npz,
    calibration_reports,
    calibration_target,
    decision_json,
    ledger_csv,
    oof_of_calibration,
    provenance_jsons,
    report_html,
)
from kit.records import BlendProvenance, CalibrationReport, ScoreRow, read_blend_provenance

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1250px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.92em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.chosen td{background:#e6f4e6;font-weight:600}tr.trivial td{color:#777}
.note{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px;margin:.5em 0}.sub{color:#666;font-size:.9em}
img{max-width:100%;border:1px solid #eee}.stale{color:#b00}
"""


def report(cfg: CompetitionConfig, out: Path | None = None, console: Console | None = None) -> Path:
    """Write the HTML report of everything calibrate, blend and submit left for this config; return its path."""
    console = console or Console()
    out = Path(out) if out is not None else report_html(cfg)
    metric = build_metric(cfg.metric)
    targets = [_target(path) for path in calibration_reports(cfg)]
    blends = [_Blend(path.stem, b) for path in provenance_jsons(cfg) if (b := read_blend_provenance(path)) is not None]
    if not targets and not blends:
        raise KitError(f"{cfg.paths.oof}, {cfg.paths.submissions}: nothing to report yet; run `kit calibrate` or `kit blend` first")
    ledger = read_ledger(ledger_csv(cfg.paths.submissions))
    title = f"kit report: {cfg.source_file.name if cfg.source_file else 'competition'}"
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class='sub'>metric {_e(metric.describe())}; task {_e(cfg.task)}; every score is a nested-CV mean ± standard error over "
             f"the outer folds, beside the trivial baseline, unless it says otherwise.</p>"]
    parts += _overview(targets, blends)
    parts += _recall(cfg, targets, blends)
    parts += _candidates(targets)
    parts += _blend_tables(blends)
    parts += _ledger(ledger)
    text = "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>" + _e(title) + "</title><style>" + CSS + "</style></head><body>\n"
    text += "\n".join(parts) + "\n</body></html>\n"
    write_text(out, text)
    console.print(f"wrote {out} ({len(targets)} calibrated targets, {len(blends)} blends, {int((ledger['public_score'] != '').sum())} "
                  "ledger rows with a public score); open it in a browser", soft_wrap=True, highlight=False)
    return out


@dataclass(frozen=True)
class _Target:
    """One calibration report, the OOF beside it, and whether the report was made on that very OOF."""

    report: CalibrationReport
    oof_path: Path
    fresh: bool


@dataclass(frozen=True)
class _Blend:
    name: str  # the submission's file stem
    meta: BlendProvenance


def _target(path: Path) -> _Target:
    report = CalibrationReport.read(path)
    oof_path = oof_of_calibration(path, report.target or calibration_target(path))
    fresh = oof_path.is_file() and report.fitted_on == oof_fingerprint(load_oof(oof_path))
    return _Target(report, oof_path, fresh)


def _overview(targets: list[_Target], blends: list[_Blend]) -> list[str]:
    """Every target's chosen score ± SE beside its trivial baseline, as a picture and a table."""
    rows = [(r.target, r.chosen, r.chosen_nested_cv, r.row(r.chosen).se, r.trivial_baseline.nested_cv, t.fresh)
            for t in targets for r in [t.report]]
    rows += [(f"blend {b.name}", f"{m.weighting} + {m.decision_rule}", m.nested_cv_score, m.nested_cv_se, m.trivial_baseline, True)
             for b in blends for m in [b.meta]]
    import matplotlib.pyplot as plt

    import kit.plots  # noqa: F401 - the Agg backend

    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    # each bar runs from the target's trivial baseline to its chosen rule's score: its length is the gain
    ax.barh(y, [r[2] - r[4] for r in rows], left=[r[4] for r in rows], xerr=[r[3] for r in rows],
            color=["#4c9a52" if r[5] else "#bbb" for r in rows], capsize=3, label="chosen rule, nested CV ± SE (bar: gain over trivial)")
    ax.scatter([r[4] for r in rows], y, marker="|", s=400, color="#c33", zorder=3, label="trivial baseline (nested CV)")
    ax.set_yticks(y, [r[0] for r in rows])
    lo = min(min(r[4] for r in rows), min(r[2] - r[3] for r in rows))
    hi = max(r[2] + r[3] for r in rows)
    ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set_xlabel("nested-CV score (higher is better)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2, fontsize=8)
    lines = ["<h2>Scores</h2>", _png(fig),
             "<table><tr><th>target</th><th>chosen rule</th><th>nested CV ± SE</th><th>trivial baseline</th><th>gain over trivial</th></tr>"]
    for name, rule, score, se, trivial, fresh in rows:
        stale = "" if fresh else " <span class='stale'>(stale: the OOF changed since; rerun kit calibrate)</span>"
        lines.append(f"<tr><td>{_e(name)}{stale}</td><td>{_e(display_name(rule))}</td><td>{score:+.4f} ± {se:.4f}</td>"
                     f"<td>{trivial:+.4f}</td><td>{score - trivial:+.4f}</td></tr>")
    lines.append("</table>")
    for t in targets:
        lines += [f"<p class='note'>{_e(t.report.target)}: {_e(n)}</p>" for n in degenerate_notes(t.report.chosen, None, t.report.task)]
    for b in blends:
        lines += [f"<p class='note'>submission {_e(b.name)}: {_e(n)}</p>" for n in b.meta.notes]
    return lines


def _recall(cfg: CompetitionConfig, targets: list[_Target], blends: list[_Blend]) -> list[str]:
    """Per-class recall of each chosen decision refitted on all folds, on its OOF (in-sample for the decision)."""
    from kit.data.sources import open_source
    from kit.decision.rules import Decision

    columns, recalls, classes = [], [], None
    try:
        source = open_source(cfg)
    except KitError as exc:
        return ["<h2>Per-class recall</h2>", f"<p class='note'>not shown: {_e(str(exc))}</p>"]
    paths = [(t.report.target, t.oof_path, decision_json(t.oof_path)) for t in targets if t.fresh]
    paths += [(f"blend {b.name}", blend_oof_npz(cfg, b.name), blend_decision_json(cfg, b.name)) for b in blends]
    for name, oof_path, decision_path in paths:
        if not (oof_path.is_file() and decision_path.is_file()):
            continue
        oof = load_oof(oof_path)
        decision = Decision.load(decision_path)
        if decision.fitted_on not in (None, oof_fingerprint(oof)):
            continue
        labels = source.train_labels_for(oof.ids, oof_path)
        pred = decision.predict(oof.logits)
        recalls.append((pred & labels).sum(axis=0) / np.maximum(labels.sum(axis=0), 1))
        columns.append(name)
        classes = oof.classes.astype(str).tolist()
    if not columns:
        return []
    import matplotlib.pyplot as plt

    matrix = np.array(recalls).T  # (C, targets)
    fig, ax = plt.subplots(figsize=(1.3 * len(columns) + 4, 0.32 * len(classes) + 1.5))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=20, ha="right")
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="recall")
    ax.set_title("per-class recall of the chosen decision on the OOF (the trivial baseline: 1 for the majority class, 0 elsewhere)", fontsize=9)
    return ["<h2>Per-class recall</h2>", _png(fig)]


def _candidates(targets: list[_Target]) -> list[str]:
    """Each target's candidates: per-fold held-out scores, mean ± SE, and the choice."""
    lines = ["<h2>Decision rules per target (kit calibrate)</h2>"] if targets else []
    for t in (t.report for t in targets):
        rows = t.rows
        lines.append(f"<h3>{_e(t.target)}</h3><p class='sub'>{_e(t.selection)}; chosen: <b>{_e(display_name(t.chosen))}</b>, "
                     f"temperature {t.temperature:.3f}, α {t.alpha:.3f}; Optuna study '{_e(t.study)}'</p>")
        lines.append(_score_figure([display_name(r.key) for r in rows], rows, t.chosen, [r.key for r in rows]))
        lines.append("<table><tr><th>candidate (simplest first)</th><th>nested CV ± SE</th><th>Δ to best ± SE</th><th>in-sample</th></tr>")
        for r in rows:
            cls = "chosen" if r.key == t.chosen else ("trivial" if r.key == "trivial" else "")
            delta = "best" if r.key == t.best else f"{r.delta_to_best:+.4f} ± {r.delta_se:.4f}"
            lines.append(f"<tr class='{cls}'><td>{_e(display_name(r.key))}</td><td>{r.nested_cv:+.4f} ± {r.se:.4f}</td>"
                         f"<td>{delta}</td><td>{t.in_sample[r.key]:+.4f}</td></tr>")
        lines.append("</table>")
    return lines


def _blend_tables(blends: list[_Blend]) -> list[str]:
    lines = ["<h2>Blends (kit blend)</h2>"] if blends else []
    for name, b in ((b.name, b.meta) for b in blends):
        rows = b.nested_cv_table
        chosen = f"{b.weighting} + {b.decision_rule}"
        weights = ", ".join(f"{m} {w:.2f}" for m, w in b.weights.items()) if b.weights else f"a stacker {b.stacker or ''}"
        lines.append(f"<h3>{_e(name)}</h3><p class='sub'>{_e(b.selection)}; chosen: <b>{_e(display_name(chosen))}</b>, weights {_e(weights)}; "
                     f"each member's T and α are fitted inside the blend, on the fitting folds (its own kit calibrate score may differ)</p>")
        lines.append(_score_figure([display_name(r.key) for r in rows], rows, chosen, [r.key for r in rows], trivial=b.trivial_baseline))
        lines.append("<table><tr><th>weighting + rule</th><th>nested CV ± SE</th><th>Δ to best ± SE</th></tr>")
        lines.append(f"<tr class='trivial'><td>trivial baseline</td><td>{b.trivial_baseline:+.4f}</td><td></td></tr>")
        for r in rows:
            delta = "best" if r.delta_to_best == 0 and r.delta_se == 0 else f"{r.delta_to_best:+.4f} ± {r.delta_se:.4f}"
            lines.append(f"<tr class='{'chosen' if r.key == chosen else ''}'><td>{_e(display_name(r.key))}</td>"
                         f"<td>{r.nested_cv:+.4f} ± {r.se:.4f}</td><td>{delta}</td></tr>")
        lines.append("</table>")
        for variant, own in b.single_variant_own_decision.items():
            if own:
                lines.append(f"<p class='sub'>{_e(variant)} alone, its own decision (kit calibrate): {own.nested_cv:+.4f} "
                             f"({_e(display_name(own.rule))})</p>")
    return lines


def _ledger(ledger) -> list[str]:
    """Public leaderboard score against the nested-CV score of every scored submission."""
    lines = ["<h2>Leaderboard vs nested CV (submissions/ledger.csv)</h2>"]
    scored = ledger[(ledger["public_score"] != "") & (ledger["nested_cv_score"] != "")]
    if scored.empty:
        return lines + ["<p class='sub'>no scored submission in the ledger yet: `kit submit` records each one, "
                        "`kit submissions` fetches their public scores.</p>"]
    import matplotlib.pyplot as plt

    cv = scored["nested_cv_score"].astype(float).to_numpy()
    se = np.nan_to_num(_floats(scored["nested_cv_se"]))
    public = scored["public_score"].astype(float).to_numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.errorbar(cv, public, xerr=se, fmt="o", capsize=3)
    lo, hi = min(cv.min(), public.min()), max(cv.max(), public.max())
    ax.plot([lo, hi], [lo, hi], color="#999", lw=0.8, label="public = nested CV")
    for x, y, f in zip(cv, public, scored["file"]):
        ax.annotate(Path(f).stem, (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("nested-CV score ± SE")
    ax.set_ylabel("public leaderboard score")
    ax.legend(fontsize=8)
    lines.append(_png(fig))
    lines.append("<table><tr><th>file</th><th>time</th><th>nested CV</th><th>public</th><th>trivial baseline</th></tr>")
    for _, r in scored.iterrows():
        lines.append(f"<tr><td>{_e(Path(r['file']).name)}</td><td>{_e(r['time'])}</td><td>{_e(r['nested_cv_score'])}</td>"
                     f"<td>{_e(r['public_score'])}</td><td>{_e(r['trivial_baseline'])}</td></tr>")
    return lines + ["</table>"]


def _floats(column) -> np.ndarray:
    return np.array([float(x) if x not in ("", None) else np.nan for x in column])


def _score_figure(labels: list[str], rows: list[ScoreRow], chosen: str, keys: list[str], trivial: float | None = None) -> str:
    """Per-fold held-out scores (dots) and mean ± SE (bar) of each compared option; the chosen one in green."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.3))
    y = np.arange(len(rows))[::-1]
    for yi, r, key in zip(y, rows, keys):
        color = "#4c9a52" if key == chosen else ("#bbb" if key == "trivial" else "#6a8caf")
        ax.errorbar(r.nested_cv, yi, xerr=r.se, fmt="s", color=color, capsize=4, ms=7)
        ax.scatter(r.per_fold, [yi] * len(r.per_fold), s=10, color=color, alpha=0.5)
    if trivial is not None:
        ax.axvline(trivial, color="#c33", lw=1, label=f"trivial baseline {trivial:+.3f}")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("held-out score per fold (dots), nested-CV mean ± SE (square)")
    return _png(fig)


def _png(fig) -> str:
    """The figure as an embedded base64 PNG."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _e(text: Any) -> str:
    return html.escape(str(text))
