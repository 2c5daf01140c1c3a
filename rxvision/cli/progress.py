"""The CLI's progress bar: what it does, a bar, done of total, the time so far."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


@contextmanager
def progress_bar(verb: str, console: Console) -> Iterator[tuple[Progress, Any]]:
    """A transient bar on ``console`` and its one task (total unknown until set)."""
    columns = (
        SpinnerColumn(),
        TextColumn(verb),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        yield bar, bar.add_task(verb, total=None)
