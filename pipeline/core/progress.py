"""Progress bars for long stages (rich), shared by the CLI verbs and the demo."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True)


@contextmanager
def counting_progress(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: stages report items done; rich draws the bar.

    The bar starts on the first ``advance``, so a stage that rejects its input up front
    leaves stderr with nothing but its one-line error.
    """
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    ]
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task(label, total=total, rate="", start=False)

    def advance(n: int) -> None:
        if not progress.live.is_started:
            progress.start()
            progress.start_task(task)
        progress.advance(task, n)
        state = progress.tasks[task]
        if state.elapsed:
            progress.update(task, rate=f"{state.completed / state.elapsed:,.0f}/s")

    try:
        yield advance
    finally:
        if progress.live.is_started:
            progress.stop()
