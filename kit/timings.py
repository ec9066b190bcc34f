"""Each kit command's wall time, one JSON line per finished command in `<paths.runs>/timings.jsonl`, so a
slower stage shows up where it happened (`make demo` prints the table at its end: `kit timings`).

A line: {"stage": "calibrate", "command": "calibrate --variant all", "seconds": 12.3, "finished": ISO time};
`kit train` adds one line per variant ("stage": "train <variant>", the sum of its jobs' wall times).
`kit timings --reset` starts a new log (the demo does it first). The log is an aid, not an artifact:
a command never fails because its time could not be written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

TIMINGS_FILE = "timings.jsonl"


def timings_path(runs: Path) -> Path:
    return Path(runs) / TIMINGS_FILE


def record(runs: Path, stage: str, seconds: float, command: str = "") -> None:
    """Append one finished stage's wall time (best effort: an unwritable folder costs the line, not the command)."""
    line = {"stage": stage, "command": command or stage, "seconds": round(float(seconds), 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path = timings_path(runs)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass


def read(runs: Path) -> list[dict]:
    """The log's lines in order; a torn or foreign line is skipped."""
    path = timings_path(runs)
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


def reset(runs: Path) -> None:
    timings_path(runs).unlink(missing_ok=True)


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
