"""One crmsync at a time per state file: an OS lock on `<db>.lock` beside the DuckDB file.

Writers (`crmsync sync`, `extract`, `rejections retry|ignore`, `retention --apply`) take it
exclusively for their whole run; a second writer started meanwhile says in one line who
holds it and exits 1, instead of interleaving with the first until DuckDB refuses one of
them half-way. Readers (`status`, `runs`, `sql`, `rejections`, and `plan` and `docs` while
they copy the file) take it shared: any number of them at once, never during a writer, so a
reader never opens the DuckDB file under a running sync (which would make the sync's next
write fail). A reader that finds a writer waits for it a few seconds (CRMSYNC_WAIT_SECONDS),
then says who it is; a writer that finds only readers waits for them as long. The lock is
`fcntl.flock`:
the kernel releases it when its holder ends, however it ends (SIGKILL included), so a
crash never leaves a stale lock behind. The file holds the holder's pid, command and
start time, for the message; it is never deleted (deleting a flock'ed file lets two
processes each lock a different file of the same name).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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


DEFAULT_WAIT_S = 5.0


def _writer(path: Path) -> dict[str, object] | None:
    """The writer that holds the lock, as it described itself; None when only readers do (they
    write nothing: the file is empty between writers)."""
    try:
        data = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextmanager
def exclusive(db_path: Path, command: str, wait_s: float = DEFAULT_WAIT_S) -> Iterator[None]:
    """Hold the state file's lock for the block, or raise StateBusy naming its holder: at once
    when another writer holds it, after `wait_s` seconds when readers still do."""
    path = lock_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _writer(path)
                if holder is None:
                    time.sleep(0.05)  # a writer that has just taken it writes its name at once
                    holder = _writer(path)
                if holder is not None:
                    raise StateBusy(
                        f"another crmsync ({_describe(holder)}) is using {db_path}; try again when it ends"
                    ) from None
                if time.monotonic() >= deadline:
                    raise StateBusy(
                        f"crmsync commands that read {db_path} (status, sql, runs, ...) were still "
                        f"going after {wait_s:g} s (CRMSYNC_WAIT_SECONDS); try again when they end"
                    ) from None
                time.sleep(0.1)
        started = datetime.now(UTC).replace(microsecond=0).isoformat()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "started": started}).encode(), 0)
        try:
            with _warehouse_lock(command, wait_s):
                yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# one writer per PostgreSQL database at a time, whichever machine it runs on
WAREHOUSE_LOCK = "crmsync: one writer at a time"


def _advisory(con: Any, function: str, key: str, wait_s: float) -> bool:
    """`function` (pg_try_advisory_lock, or its _shared form) on `key`, tried for up to `wait_s` s."""
    deadline = time.monotonic() + wait_s
    while True:
        row = con.execute(f"select {function}(hashtext(?))", [key]).fetchone()
        if row and row[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _busy(command: str) -> StateBusy:
    from support import warehouse

    where = warehouse.parts(warehouse.url() or "")
    scope = warehouse.prefix()
    schemas = f" (schemas {scope}*)" if scope else ""
    return StateBusy(
        f"another crmsync is using the PostgreSQL warehouse {where['database']} on {where['host']}:"
        f"{where['port']}{schemas} (its advisory lock is held); `{command}`: try again when it ends"
    )


CHECK_EVERY_S = 1.0  # how often a running writer asks the server whether it still holds its lock


@dataclass
class _Held:
    con: Any  # the connection whose session holds the lock
    key: str
    checked: float = 0.0  # time.monotonic() of the last check
    lost: str | None = None  # why it is no longer held: once lost, lost for the rest of the run
    # the push's lanes ask from several threads; one cursor answers them one at a time
    asking: threading.Lock = field(default_factory=threading.Lock)


_HELD: _Held | None = None  # this process's writer lock on a PostgreSQL warehouse, while held


def lost_writer_lock() -> str | None:
    """Why this process may no longer write to the PostgreSQL warehouse, or None while it
    holds the writers' lock it took (or took none: the DuckDB file's lock is the kernel's,
    held until the process ends). A session lock is lost only with its session: a server
    restart, a terminated backend, a network that dropped the connection. Another crmsync
    may then take it and write beside this run, so the clients ask before each request
    (here at most once a second) and the run asks between its steps."""
    held = _HELD
    if held is None:
        return None
    with held.asking:
        now = time.monotonic()
        if held.lost is None and now - held.checked >= CHECK_EVERY_S:
            held.checked = now
            held.lost = _why_lost(held)
        return held.lost


def _why_lost(held: _Held) -> str | None:
    try:
        # a bigint advisory key is (classid, objid) = (high, low) 32 bits; hashtext is an int4
        row = held.con.execute(
            """select count(*) from pg_locks
               where locktype = 'advisory' and pid = pg_backend_pid() and granted and objsubid = 1
                 and objid::bigint = (hashtext(?)::bigint & 4294967295)""",
            [held.key],
        ).fetchone()
        still = bool(row and row[0])
        why = None if still else "the server no longer lists it"
    except Exception as exc:  # the connection is gone: so is the lock
        why = f"its connection ended: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    if why is None:
        return None
    return (
        f"the PostgreSQL warehouse's writer lock was lost ({why}): another crmsync may be "
        "writing, so this run stopped before its next request; run it again"
    )


@contextmanager
def _warehouse_lock(command: str, wait_s: float = DEFAULT_WAIT_S) -> Iterator[None]:
    """On a PostgreSQL warehouse (CRMSYNC_WAREHOUSE), a writer also holds a session advisory
    lock of its schemas for its whole run, in a connection of its own: crmsync on another
    machine, whose lock file this one cannot see, is refused (after `wait_s` seconds, for a
    plan that copies the schemas meanwhile: warehouse_reading). The server releases the
    lock when the connection ends, however the process ends."""
    from support import warehouse

    url = warehouse.url()
    if url is None:
        yield
        return
    with warehouse.PostgresConnection(url) as con:
        # one per set of schemas: tenants of one warehouse (their own prefixes) do not wait for each other
        key = WAREHOUSE_LOCK + warehouse.prefix()
        if not _advisory(con, "pg_try_advisory_lock", key, wait_s):
            raise _busy(command)
        global _HELD
        _HELD = _Held(con, key, checked=time.monotonic())
        try:
            yield
        finally:
            _HELD = None


def warehouse_reading(con: Any, command: str, wait_s: float = DEFAULT_WAIT_S) -> None:
    """On `con`, the writers' advisory lock of its schemas taken shared, until `con` ends (a
    plan's copy of the schemas: no writer on any machine meanwhile), or StateBusy after
    `wait_s` seconds."""
    from support import warehouse

    if not _advisory(con, "pg_try_advisory_lock_shared", WAREHOUSE_LOCK + warehouse.prefix(), wait_s):
        raise _busy(command)


@contextmanager
def shared(db_path: Path, wait_s: float = DEFAULT_WAIT_S) -> Iterator[None]:
    """Read the state for the block, with no writer at work: wait up to `wait_s` seconds for
    one that is, then raise StateBusy naming it. Readers do not exclude one another."""
    path = lock_path(db_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError:  # a folder this account cannot write: DuckDB's own lock still guards the file
        yield
        return
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StateBusy(
                        f"another crmsync ({_describe(_holder(path))}) is using {db_path} and was still going "
                        f"after {wait_s:g} s (CRMSYNC_WAIT_SECONDS); try again when it ends"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
