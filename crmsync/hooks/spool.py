"""The spool: events the receiver accepted, until a sync has taken them into account.

An SQLite file in the state folder (`hooks.sqlite3`), not the DuckDB file: the sync holds
DuckDB's one writer for minutes, and the receiver must answer Keap within a second
meanwhile. SQLite in WAL mode lets the receiver append while a sync (in this process or
another) reads; every append is one transaction, on disk before the receiver answers 200
(`synchronous=FULL`: fsync'ed). A row is an event key, an id and when it came, nothing
else (a hook carries no record data anyway).

`take` gives a run what it must act on (the deletions to confirm, per resource, at most
`limit` each) and the sequence number it covers; `consume` drops what a run covered, once
that run read Keap after the events came.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from crmsync.hooks import resource_of

_SCHEMA = """
create table if not exists events (
    seq          integer primary key autoincrement,
    received_at  real    not null,   -- seconds since the epoch, the receiver's clock
    event_key    text    not null,
    object_id    text    not null
);
create table if not exists marks (name text primary key, value integer not null);
"""


@dataclass(frozen=True)
class Pending:
    events: int
    first_at: float  # when the oldest pending event came
    last_at: float  # ... and the newest
    last_seq: int


@dataclass
class Batch:
    """What one run takes: the events up to `upto`, the deletions among them per resource."""

    upto: int
    events: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    deletions: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        """`3 events (contact.edit 2, contact.delete 1)`."""
        kinds = ", ".join(f"{k} {n}" for k, n in self.by_key.most_common())
        return f"{self.events} event{'s' if self.events != 1 else ''}" + (f" ({kinds})" if kinds else "")


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # its -wal and -shm follow its mode
        self.lock = threading.Lock()  # one connection, shared by the receiver's and the trigger's threads
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=full")
        self.db.executescript(_SCHEMA)

    @staticmethod
    def exists(path: Path) -> bool:
        return Path(path).is_file()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def append(self, event_key: str, ids: list[str], received_at: float) -> int:
        """One delivery, in one transaction, durable when this returns."""
        if not ids:
            return 0
        with self.lock:
            self.db.execute("begin immediate")
            try:
                self.db.executemany(
                    "insert into events (received_at, event_key, object_id) values (?, ?, ?)",
                    [(received_at, event_key, i) for i in ids],
                )
                self.db.execute("commit")
            except BaseException:
                self.db.execute("rollback")
                raise
        return len(ids)

    def _consumed(self) -> int:
        row = self.db.execute("select value from marks where name = 'consumed'").fetchone()
        return int(row[0]) if row else 0

    def pending(self) -> Pending | None:
        with self.lock:
            row = self.db.execute(
                "select count(*), min(received_at), max(received_at), max(seq) from events where seq > ?",
                (self._consumed(),),
            ).fetchone()
        if not row or not row[0]:
            return None
        return Pending(int(row[0]), float(row[1]), float(row[2]), int(row[3]))

    def take(self, limit: int) -> Batch:
        """The pending events in order, up to the first deletion that would put more than
        `limit` ids of one resource in the batch (those wait for the next run)."""
        with self.lock:
            consumed = self._consumed()
            rows = self.db.execute(
                "select seq, event_key, object_id from events where seq > ? order by seq", (consumed,)
            ).fetchall()
        batch = Batch(upto=consumed)
        seen: dict[str, set[str]] = {}
        for seq, event_key, object_id in rows:
            resource = resource_of(event_key)
            if resource and event_key.endswith(".delete"):
                ids = seen.setdefault(resource, set())
                if object_id not in ids and len(ids) >= limit:
                    break
                if object_id not in ids:
                    ids.add(object_id)
                    batch.deletions.setdefault(resource, []).append(object_id)
            batch.upto, batch.events = seq, batch.events + 1
            batch.by_key[event_key] += 1
        return batch

    def consume(self, upto: int) -> None:
        """The events up to `upto` were taken into account: drop them."""
        with self.lock:
            self.db.execute("begin immediate")
            try:
                self.db.execute(
                    "insert into marks values ('consumed', ?) on conflict(name) do update "
                    "set value = max(value, excluded.value)",
                    (upto,),
                )
                self.db.execute("delete from events where seq <= ?", (upto,))
                self.db.execute("commit")
            except BaseException:
                self.db.execute("rollback")
                raise
