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
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup
from rich.console import Console

from kit.artifacts import load_oof, oof_fingerprint
from kit.config import CompetitionConfig
from kit.decision.metrics import build_metric
from kit.decision.names import degenerate_notes, display_name
from kit.errors import KitError, scrub_secrets
from kit.files import write_text
from kit.leaderboard.ledger import number, read_ledger
from kit.owned import check_output
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
    out = check_output(out if out is not None else report_html(cfg), "--out", cfg, stage="kit report", suffixes=(".html", ".htm"),
                       example=str(report_html(cfg)))
    metric = build_metric(cfg.metric)
    targets = [_target(path) for path in calibration_reports(cfg)]
    blends = [_Blend(path.stem, b) for path in provenance_jsons(cfg) if (b := read_blend_provenance(path)) is not None]
    if not targets and not blends:
        raise KitError(f"{cfg.paths.oof}, {cfg.paths.submissions}: nothing to report yet; run `kit calibrate` or `kit blend` first")
    ledger = read_ledger(ledger_csv(cfg.paths.submissions))
    text = _template().render(
        title=f"kit report: {cfg.source_file.name if cfg.source_file else 'competition'}", css=Markup(CSS), metric=metric.describe(), task=cfg.task,
        overview=_overview(targets, blends, metric.sign), recall=_recall(cfg, targets, blends), targets=_candidates(targets), blends=_blend_tables(blends),
        ledger=_ledger(ledger),
    )
    write_text(out, scrub_secrets(text))  # ledger cells and messages of older kits may hold a credential: never in the report
    console.print(f"wrote {out} ({len(targets)} calibrated targets, {len(blends)} blends, {int((ledger['public_score'] != '').sum())} "
                  "ledger rows with a public score); open it in a browser", soft_wrap=True, highlight=False)
    return out


def _template() -> jinja2.Template:
    """kit/templates/report.html.j2, every value escaped (autoescape) but the inline CSS and the embedded PNGs."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("kit", "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters.update(signed=lambda x: f"{x:+.4f}", fixed=lambda x: f"{x:.4f}", display=display_name)
    return env.get_template("report.html.j2")


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


def _overview(targets: list[_Target], blends: list[_Blend], sign: float = 1.0) -> dict[str, Any]:
    """Every target's chosen score ± SE beside its trivial baseline, as a picture and a table (`sign` -1: lower is better)."""
    rows = [{"name": r.target, "rule": r.chosen, "score": r.chosen_nested_cv, "se": r.row(r.chosen).se, "trivial": r.trivial_baseline.nested_cv,
             "fresh": t.fresh} for t in targets for r in [t.report]]
    rows += [{"name": f"blend {b.name}", "rule": f"{m.weighting} + {m.decision_rule}", "score": m.nested_cv_score, "se": m.nested_cv_se,
              "trivial": m.trivial_baseline, "fresh": True} for b in blends for m in [b.meta]]
    import matplotlib.pyplot as plt

    import kit.plots  # noqa: F401 - the Agg backend

    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    # each bar runs from the target's trivial baseline to its chosen rule's score: its length is the gain
    ax.barh(y, [r["score"] - r["trivial"] for r in rows], left=[r["trivial"] for r in rows], xerr=[r["se"] for r in rows],
            color=["#4c9a52" if r["fresh"] else "#bbb" for r in rows], capsize=3, label="chosen rule, nested CV ± SE (bar: gain over trivial)")
    ax.scatter([r["trivial"] for r in rows], y, marker="|", s=400, color="#c33", zorder=3, label="trivial baseline (nested CV)")
    ax.set_yticks(y, [r["name"] for r in rows])
    lo = min(min(r["trivial"] for r in rows), min(r["score"] - r["se"] for r in rows))
    hi = max(r["score"] + r["se"] for r in rows)
    ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set_xlabel("nested-CV score (higher is better)" if sign > 0 else "nested-CV score (lower is better)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2, fontsize=8)
    for r in rows:
        r["rule"] = display_name(r["rule"])
        r["gain"] = sign * (r["score"] - r["trivial"])
    notes = [f"{t.report.target}: {n}" for t in targets for n in degenerate_notes(t.report.chosen, None, t.report.task)]
    notes += [f"submission {b.name}: {n}" for b in blends for n in b.meta.notes]
    return {"png": _png(fig), "rows": rows, "notes": notes}


def _recall(cfg: CompetitionConfig, targets: list[_Target], blends: list[_Blend]) -> dict[str, str | None]:
    """Per-class recall of each chosen decision refitted on all folds, on its OOF (in-sample for the decision)."""
    from kit.data.sources import open_source
    from kit.decision.rules import Decision

    columns, recalls, classes = [], [], None
    try:
        source = open_source(cfg)
    except KitError as exc:
        return {"error": str(exc), "png": None}
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
        if decision.metric.kind != "label":  # probabilities: no decided class to recall
            continue
        pred = decision.predict(oof.logits)
        recalls.append((pred & labels).sum(axis=0) / np.maximum(labels.sum(axis=0), 1))
        columns.append(name)
        classes = oof.classes.astype(str).tolist()
    if not columns:
        return {"error": None, "png": None}
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
    return {"error": None, "png": _png(fig)}


def _candidates(targets: list[_Target]) -> list[dict[str, Any]]:
    """Each target's candidates: per-fold held-out scores, mean ± SE, and the choice (the table is the template's)."""
    return [{"report": t.report, "png": _score_figure([display_name(r.key) for r in t.report.rows], t.report.rows, t.report.chosen,
                                                       [r.key for r in t.report.rows])} for t in targets]


def _blend_tables(blends: list[_Blend]) -> list[dict[str, Any]]:
    """Each blend's (weighting, rule) pairs: per-fold held-out scores, mean ± SE, and the choice."""
    out = []
    for name, b in ((b.name, b.meta) for b in blends):
        chosen = f"{b.weighting} + {b.decision_rule}"
        weights = ", ".join(f"{m} {w:.2f}" for m, w in b.weights.items()) if b.weights else f"a stacker {b.stacker or ''}"
        png = _score_figure([display_name(r.key) for r in b.nested_cv_table], b.nested_cv_table, chosen, [r.key for r in b.nested_cv_table],
                            trivial=b.trivial_baseline)
        out.append({"name": name, "meta": b, "chosen": chosen, "weights": weights, "png": png})
    return out


def _ledger(ledger) -> dict[str, Any]:
    """Public leaderboard score against the nested-CV score of every scored submission (the picture of `kit submissions`);
    a row whose score is not a number (a ledger re-saved with decimal commas) is named in a note, not drawn."""
    given = ledger[(ledger["public_score"] != "") & (ledger["nested_cv_score"] != "")]
    readable = np.array([number(p) is not None and number(c) is not None for p, c in zip(given["public_score"], given["nested_cv_score"])],
                        dtype=bool)
    scored = given[readable] if len(given) else given
    notes = []
    if len(given) and not readable.all():
        first = given[~readable].iloc[0]
        bad = first["public_score"] if number(first["public_score"]) is None else first["nested_cv_score"]
        comma = " (a decimal comma? the ledger writes numbers with '.')" if "," in str(bad) else ""
        notes.append(f"{int((~readable).sum())} ledger rows have a score that is not a number, e.g. {bad!r} ({Path(first['file']).name}){comma}: not drawn")
    if scored.empty:
        return {"png": None, "rows": [], "notes": notes}
    from kit.leaderboard.ledger import correlation
    from kit.leaderboard.plot import cv_vs_public_figure

    cv = np.array([number(x) for x in scored["nested_cv_score"]], dtype=np.float64)
    public = np.array([number(x) for x in scored["public_score"]], dtype=np.float64)
    se = np.array([number(x) if number(x) is not None else 0.0 for x in scored["nested_cv_se"]], dtype=np.float64)
    trivial = next((number(t) for t in scored["trivial_baseline"][::-1] if number(t) is not None), None)
    fig = cv_vs_public_figure(cv, public, [Path(f).stem for f in scored["file"]], correlation(cv, public), trivial=trivial, se=se)
    rows = [{"file": Path(r["file"]).name, "time": r["time"], "nested_cv_score": r["nested_cv_score"], "public_score": r["public_score"],
             "trivial_baseline": r["trivial_baseline"]} for _, r in scored.iterrows()]
    return {"png": _png(fig), "rows": rows, "notes": notes}


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
    """The figure as a data URI, for an <img> of the report."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"
