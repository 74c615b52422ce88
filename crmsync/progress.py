"""Live output: progress bars on a terminal, plain lines in logs and CI."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from pipelines.common import ProgressCallback


@contextmanager
def extract_progress(quiet: bool = False, stream: TextIO | None = None) -> Iterator[ProgressCallback]:
    """A callback (system, resource, pages, records) shown as a live line per resource
    on a terminal, or as a plain line every 10 pages otherwise."""
    stream = stream or sys.stderr
    if quiet:
        yield lambda *args: None
        return
    if not stream.isatty():

        def plain(system: str, resource: str, pages: int, records: int) -> None:
            if pages == 1 or pages % 10 == 0:
                click.echo(f"extract {system}.{resource}: page {pages}, {records} records", err=True)

        yield plain
        return
    console = Console(file=stream)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[pages]} pages"),
        TextColumn("{task.completed} records"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        tasks: dict[str, TaskID] = {}

        def live(system: str, resource: str, pages: int, records: int) -> None:
            key = f"{system}.{resource}"
            if key not in tasks:
                tasks[key] = bars.add_task(key, total=None, pages=0)
            bars.update(tasks[key], completed=records, pages=pages)

        yield live


@contextmanager
def push_progress(
    quiet: bool = False, stream: TextIO | None = None
) -> Iterator[Callable[[str, str, int, int], None]]:
    """A callback (mapping, target, rows done, rows in all): a bar per mapping and target on a
    terminal, a plain line per batch otherwise."""
    stream = stream or sys.stderr
    if quiet:
        yield lambda *args: None
        return
    if not stream.isatty():

        def plain(mapping: str, target: str, done: int, total: int) -> None:
            click.echo(f"push {mapping} -> {target}: {done}/{total}", err=True)

        yield plain
        return
    with Progress(*Progress.get_default_columns(), console=Console(file=stream)) as bars:
        tasks: dict[str, TaskID] = {}

        def live(mapping: str, target: str, done: int, total: int) -> None:
            key = f"push {mapping} -> {target}"
            if key not in tasks:
                tasks[key] = bars.add_task(key, total=total)
            bars.update(tasks[key], completed=done, total=total)

        yield live
