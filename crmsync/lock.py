"""One crmsync at a time per state file: an OS lock on `<db>.lock` beside the DuckDB file.

`crmsync sync`, `plan`, `extract` and `docs` take it for their whole run; a second one
started meanwhile says in one line who holds it and exits 1, instead of interleaving
with the first until DuckDB refuses one of them half-way. The lock is `fcntl.flock`:
the kernel releases it when its holder ends, however it ends (SIGKILL included), so a
crash never leaves a stale lock behind. The file holds the holder's pid, command and
start time, for the message; it is never deleted (deleting a flock'ed file lets two
processes each lock a different file of the same name).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class StateBusy(Exception):
    """Another crmsync holds the state file's lock."""


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def _describe(holder: dict[str, object]) -> str:
    started = holder.get("started")
    when = ""
    if isinstance(started, str):
        try:
            moment = datetime.fromisoformat(started)
        except ValueError:
            moment = None
        if moment is not None:
            same_day = moment.date() == datetime.now(UTC).date()
            when = ", started " + moment.strftime("%H:%M:%SZ" if same_day else "%Y-%m-%d %H:%M:%SZ")
    return f"pid {holder.get('pid', '?')}, `{holder.get('command', '?')}`{when}"


def _holder(path: Path) -> dict[str, object]:
    """What the holder wrote; it writes right after taking the lock, so give it a moment."""
    for _ in range(20):
        try:
            data = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            return data
        time.sleep(0.05)
    return {}


@contextmanager
def exclusive(db_path: Path, command: str) -> Iterator[None]:
    """Hold the state file's lock for the block, or raise StateBusy naming its holder."""
    path = lock_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateBusy(
                f"another crmsync ({_describe(_holder(path))}) is using {db_path}; try again when it ends"
            ) from None
        started = datetime.now(UTC).replace(microsecond=0).isoformat()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "started": started}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
