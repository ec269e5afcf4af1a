"""Progress bars for long operations (`trainlab data fetch`, experiments, export): one rich display on
stderr, and nothing at all when it is not wanted.

    with progress_bar(total_bytes, "t10k-images-idx3-ubyte.gz", enabled=progress, as_bytes=True) as advance:
        for chunk in chunks:
            advance(len(chunk))

    for model in track(families, "onnxruntime check", enabled=progress):
        ...

A bar is drawn only when `enabled` (the CLI's `--quiet` turns it off) and its console, stderr by default,
is a terminal: piped output, CI logs and pytest's captured streams get no bar, and stdout, where results
go, is never touched. rich's own switches apply: TTY_COMPATIBLE=1 (or FORCE_COLOR, force-color.org)
draws bars where stderr is not a terminal, TTY_COMPATIBLE=0 never does.

rich draws one live display at a time, so a bar opened while another is showing becomes a second row
of that display (a training run inside an experiment), removed when it finishes; the outermost bar stays
on screen as the record of what ran.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["progress_bar", "track"]

T = TypeVar("T")
Advance = Callable[..., None]  # advance(n=1): n more steps (bytes with as_bytes) done

_display: Progress | None = None  # the display being drawn, if any
REFRESH_SECONDS = 0.1


def advancer(display: Progress, task: int) -> Advance:
    """advance(n) for `task`, redrawing at most every REFRESH_SECONDS. The display has no refresh thread
    of its own (auto_refresh=False): on a loaded 2-core machine rich's 10 Hz thread competed with the
    training's threads, and an experiment took 48 s with bars against 25-31 s without."""
    last = [0.0]

    def advance(n: float = 1) -> None:
        display.advance(task, n)
        now = time.monotonic()
        if now - last[0] >= REFRESH_SECONDS:
            last[0] = now
            display.refresh()

    return advance


def skip(n: float = 1) -> None:
    """The advance of a bar that is not drawn."""


@contextlib.contextmanager
def progress_bar(
    total: float | None,
    description: str,
    enabled: bool = True,
    *,
    as_bytes: bool = False,
    console: Console | None = None,
) -> Iterator[Advance]:
    """A bar from 0 to `total` steps (None: unknown, the bar pulses), yielding `advance(n=1)`.
    `as_bytes` shows sizes and a transfer rate instead of counts."""
    global _display
    if not enabled:
        yield skip
        return
    if _display is not None:
        display = _display
        task = display.add_task(description, total=total)
        try:
            yield advancer(display, task)
        finally:
            display.remove_task(task)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield skip
        return
    counts = (DownloadColumn(), TransferSpeedColumn()) if as_bytes else (MofNCompleteColumn(),)
    # markup off: a label such as "[init] training run 3" is text, not a rich style tag
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), *counts, TimeElapsedColumn())
    # stdout is left alone (rich would route it through this stderr console); stderr lines, such as an
    # experiment's log, print above the bar
    with Progress(
        *columns, TimeRemainingColumn(), console=console, redirect_stdout=False, auto_refresh=False
    ) as display:
        _display = display
        try:
            task = display.add_task(description, total=total)
            yield advancer(display, task)
        finally:
            _display = None


def track(
    items: Iterable[T],
    description: str,
    enabled: bool = True,
    *,
    total: int | None = None,
    console: Console | None = None,
) -> Iterator[T]:
    """`items`, advancing a bar by one after each (total: len(items) when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with progress_bar(total, description, enabled, console=console) as advance:
        for item in items:
            yield item
            advance()
