"""Live output of a run: one live list on a terminal (a line per resource read, the dbt build,
a line per push target; each line stops, ticked, when its phase ends), plain stamped lines in
logs and CI (crmsync.report.say)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from crmsync.report import say

PHASES = {"dbt": "dbt build (models and their tests)", "read_back": "read back what was written"}


class RunDisplay:
    """The callbacks a run reports to: `extract` (system, resource, pages, records), `push`
    (mapping, target, rows done, rows in all), `phase` (extract, dbt, push, read_back, done)
    and `note` (a line the run says before its push)."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = not quiet and self.stream.isatty()
        self.bars: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.open: list[TaskID] = []  # the tasks of the phase under way
        self.current = ""
        self.round = 0  # push rounds: a round again after parents were created

    def __enter__(self) -> RunDisplay:
        if self.live:
            columns = (
                SpinnerColumn(finished_text="[green]✓"),
                TextColumn("{task.description}"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
            )
            self.bars = Progress(*columns, console=Console(file=self.stream), transient=False)
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish()
        if self.bars is not None:
            self.bars.stop()

    def _finish(self) -> None:
        if self.bars is not None:
            for task in self.open:
                self.bars.update(task, total=1, completed=1)
        self.open = []

    def _task(self, key: str, description: str, detail: str) -> None:
        assert self.bars is not None
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(description, total=None, detail=detail)
            self.open.append(self.tasks[key])
        else:
            self.bars.update(self.tasks[key], detail=detail)

    def phase(self, name: str) -> None:
        if self.quiet or name == self.current:
            return
        self._finish()  # the previous phase is over: its lines stop ticking
        self.current = name
        self.round += name == "push"
        if name in PHASES:
            if self.bars is not None:
                self.tasks.pop(name, None)
                self._task(name, PHASES[name], "")
            else:
                say(PHASES[name], err=True)

    def note(self, line: str) -> None:
        """What the run says to the operator (before it writes, Keap's daily quota too short
        for all of it; a build run again with more memory): shown even with --quiet, on
        stderr, like an error."""
        if self.bars is not None:
            self.bars.console.print(line, markup=False, highlight=False)
        else:
            say(line, err=True)

    def extract(self, system: str, resource: str, pages: int, records: int) -> None:
        if self.quiet:
            return
        if self.bars is None:
            if pages == 1 or pages % 10 == 0:
                say(f"extract {system}.{resource}: page {pages}, {records} records", err=True)
            return
        self._task(
            f"extract {system}.{resource}",
            f"extract {system}.{resource}",
            f"{pages} pages, {records} records",
        )

    def push(self, mapping: str, target: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bars is None:
            say(f"push {mapping} -> {target}: {done}/{total}", err=True)
            return
        again = f" (round {self.round})" if self.round > 1 else ""
        self._task(
            f"push {mapping} -> {target}{again}", f"push {mapping} -> {target}{again}", f"{done}/{total}"
        )


@contextmanager
def extract_progress(quiet: bool = False, stream: TextIO | None = None) -> Iterator[RunDisplay]:
    """`crmsync extract`: the extract's lines alone."""
    with RunDisplay(quiet, stream) as display:
        yield display
