"""One look for every long-running step: a rich progress bar with counts, rate and time left."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


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


def track(items: Iterable[T], description: str, total: int | None = None, console: Console | None = None) -> Iterator[T]:
    """Iterate with a progress bar (the kit's replacement for tqdm)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress(console) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
