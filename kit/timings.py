"""Each kit command's wall time, one JSON line per finished command in the file that `KIT_TIMINGS` names,
so a slower stage shows up where it happened. `make demo` sets KIT_TIMINGS=runs/timings.jsonl, starts a new
log (`kit timings --reset`) and prints the table at its end (`kit timings`); without KIT_TIMINGS nothing is
written (a resumed run, for one, leaves runs/ as it was).

A line: {"stage": "calibrate", "command": "calibrate --variant all", "seconds": 12.3, "finished": ISO time};
`kit train` adds one line per variant ("stage": "train <variant>", the sum of its jobs' wall times). The log
is an aid, not an artifact: a command never fails because its time could not be written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ENV = "KIT_TIMINGS"


def log_path() -> Path | None:
    """The timings file KIT_TIMINGS names, or None (record nothing)."""
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


def record(stage: str, seconds: float, command: str = "") -> None:
    """Append one finished stage's wall time to the log, if there is one (best effort: an unwritable file costs
    the line, not the command)."""
    path = log_path()
    if path is None:
        return
    line = {"stage": stage, "command": command or stage, "seconds": round(float(seconds), 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass


def read(path: Path) -> list[dict]:
    """The log's lines in order; a torn or foreign line is skipped."""
    if not path.is_file():
        return []
    rows = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(text)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("seconds"), (int, float)) and isinstance(row.get("stage"), str):
            rows.append(row)
    return rows


def print_table(rows: list[dict], console: Console, title: str) -> None:
    """Stage, command, seconds and share of the total; a variant's train line sits under its `train` command."""
    table = Table(title=title)
    for column in ("stage", "command", "seconds", "share"):
        table.add_column(column, justify="right" if column in ("seconds", "share") else "left")
    total = sum(r["seconds"] for r in rows if " " not in r["stage"])  # per-variant lines are inside their command's
    for r in rows:
        part = " " in r["stage"]
        share = f"{r['seconds'] / total:.0%}" if total > 0 else "-"
        table.add_row(("  " if part else "") + r["stage"], r.get("command", ""), f"{r['seconds']:.1f}", f"[dim]{share}" if part else share)
    table.add_row("[bold]total", "", f"[bold]{total:.1f}", "")
    console.print(table)
