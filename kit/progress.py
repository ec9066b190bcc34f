"""One look for every long-running step: a rich progress bar with counts, rate and time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second ("312 images/s"), from rich's own moving estimate of the task's speed."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def make_progress(console: Console | None = None, *extra_columns, refresh_per_second: float = 10) -> Progress:
    """A Progress with the kit's standard columns; pass extra columns (e.g. loss, images/s) to add them.
    A lower `refresh_per_second` leaves more CPU to a tight loop (drawing a bar costs a few ms)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        refresh_per_second=refresh_per_second,
    )
