"""The Customcrm sandbox's data: one SQLite file; records, external refs, idempotency keys."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.timefmt import MonotonicClock

RESOURCES = {"customers": "cus", "contacts": "con", "orders": "ord", "products": "prd"}

_SCHEMA = """
create table if not exists records (
    resource    text    not null,
    id          text    not null,
    created_us  integer not null,
    updated_us  integer not null,
    version     integer not null,
    deleted_us  integer,
    unique_key  text,      -- contacts: lower(Email), products: Sku; live records only
    doc         text    not null,
    primary key (resource, id)
);
create index if not exists records_by_update on records (resource, updated_us, id);
create index if not exists records_unique on records (resource, unique_key) where deleted_us is null;
create table if not exists refs (
    resource text not null, system text not null, value text not null, id text not null
);
create index if not exists refs_lookup on refs (resource, system, value);
create index if not exists refs_by_id on refs (resource, id);
create table if not exists idempotency (
    scope text not null, key text not null, body_hash text not null, status integer not null,
    response text not null, created_us integer not null, primary key (scope, key)
);
"""

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(us: int, randomness: bytes) -> str:
    """A ULID-shaped id: 48 bits of milliseconds, 80 bits of randomness, Crockford base32."""
    value = ((us // 1000) << 80) | int.from_bytes(randomness[:10], "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


@dataclass
class Row:
    id: str
    created_us: int
    updated_us: int
    version: int
    deleted_us: int | None
    doc: dict[str, Any]


class CustomcrmStore:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=normal")
        self.db.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self.clock = MonotonicClock()
        self.stamp_lag_us = 0
        latest = self.db.execute("select max(updated_us) from records").fetchone()[0]
        if latest:  # UpdatedAt never goes back, even across restarts
            self.clock._last = max(self.clock._last, int(latest))

    def new_id(self, resource: str, us: int, randomness: bytes | None = None) -> str:
        return f"{RESOURCES[resource]}_{ulid(us, randomness or secrets.token_bytes(10))}"

    @staticmethod
    def unique_key(resource: str, doc: dict[str, Any]) -> str | None:
        if resource == "contacts" and doc.get("Email"):
            return str(doc["Email"]).lower()
        if resource == "products" and doc.get("Sku"):
            return str(doc["Sku"])
        return None

    # --- reads ------------------------------------------------------------------
    def get(self, resource: str, record_id: str) -> Row | None:
        row = self.db.execute(
            "select id, created_us, updated_us, version, deleted_us, doc from records "
            "where resource = ? and id = ?",
            (resource, record_id),
        ).fetchone()
        return Row(row[0], row[1], row[2], row[3], row[4], json.loads(row[5])) if row else None

    def live_id_with_key(self, resource: str, key: str) -> str | None:
        row = self.db.execute(
            "select id from records where resource = ? and unique_key = ? and deleted_us is null",
            (resource, key),
        ).fetchone()
        return row[0] if row else None

    def page(
        self,
        resource: str,
        *,
        after: tuple[int, str] | None,
        updated_since_us: int | None,
        include_deleted: bool,
        external_ref: tuple[str, str] | None,
        limit: int,
    ) -> list[Row]:
        clauses: list[str] = ["r.resource = ?"]
        params: list[Any] = [resource]
        join = ""
        if external_ref is not None:
            join = " inner join refs x on x.resource = r.resource and x.id = r.id"
            clauses.append("x.system = ? and x.value = ?")
            params += list(external_ref)
        if after is not None:
            clauses.append("(r.updated_us > ? or (r.updated_us = ? and r.id > ?))")
            params += [after[0], after[0], after[1]]
        if updated_since_us is not None:
            clauses.append("r.updated_us >= ?")
            params.append(updated_since_us)
        if not include_deleted:
            clauses.append("r.deleted_us is null")
        rows = self.db.execute(
            "select r.id, r.created_us, r.updated_us, r.version, r.deleted_us, r.doc "
            f"from records r{join} where {' and '.join(clauses)} "
            "order by r.updated_us, r.id limit ?",
            [*params, limit],
        ).fetchall()
        return [Row(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    # --- writes --------------------------------------------------------------------
    def _write_refs(self, resource: str, record_id: str, refs: dict[str, str]) -> None:
        self.db.execute("delete from refs where resource = ? and id = ?", (resource, record_id))
        self.db.executemany(
            "insert into refs values (?, ?, ?, ?)",
            [(resource, system, value, record_id) for system, value in refs.items()],
        )

    def stamp_now(self) -> int:
        """When a write is stamped: now, or (`stamp_lag_us`, a sandbox setting) when its
        transaction began, so that it becomes visible after lists already read past it."""
        return self.clock.now_us() - self.stamp_lag_us

    def insert(
        self, resource: str, doc: dict[str, Any], record_id: str | None = None, at_us: int | None = None
    ) -> Row:
        with self.lock:
            now = at_us or self.stamp_now()
            record_id = record_id or self.new_id(resource, now)
            self.db.execute(
                "insert into records values (?, ?, ?, ?, 1, null, ?, ?)",
                (resource, record_id, now, now, self.unique_key(resource, doc), json.dumps(doc)),
            )
            self._write_refs(resource, record_id, doc.get("ExternalRefs") or {})
            return Row(record_id, now, now, 1, None, doc)

    def insert_many(self, resource: str, rows: Iterable[tuple[str, int, dict[str, Any]]]) -> int:
        """Bulk load for the demo generator: (id, timestamp_us, doc)."""
        batch = list(rows)
        with self.lock:
            self.db.execute("begin")
            try:
                self.db.executemany(
                    "insert into records values (?, ?, ?, ?, 1, null, ?, ?)",
                    [
                        (resource, rid, ts, ts, self.unique_key(resource, doc), json.dumps(doc))
                        for rid, ts, doc in batch
                    ],
                )
                self.db.executemany(
                    "insert into refs values (?, ?, ?, ?)",
                    [
                        (resource, system, value, rid)
                        for rid, _, doc in batch
                        for system, value in (doc.get("ExternalRefs") or {}).items()
                    ],
                )
                self.db.execute("commit")
            except BaseException:
                self.db.execute("rollback")
                raise
            if batch:
                self.clock._last = max(self.clock._last, max(ts for _, ts, _ in batch))
        return len(batch)

    def update(self, resource: str, row: Row, doc: dict[str, Any]) -> Row:
        with self.lock:
            now = self.stamp_now()
            self.db.execute(
                "update records set doc = ?, unique_key = ?, updated_us = ?, version = version + 1 "
                "where resource = ? and id = ?",
                (json.dumps(doc), self.unique_key(resource, doc), now, resource, row.id),
            )
            self._write_refs(resource, row.id, doc.get("ExternalRefs") or {})
            return Row(row.id, row.created_us, now, row.version + 1, None, doc)

    def soft_delete(self, resource: str, row: Row) -> None:
        with self.lock:
            now = self.stamp_now()
            self.db.execute(
                "update records set deleted_us = ?, updated_us = ?, version = version + 1 "
                "where resource = ? and id = ?",
                (now, now, resource, row.id),
            )

    # --- idempotency -------------------------------------------------------------------
    def idempotent(self, scope: str, key: str) -> tuple[str, int, dict[str, Any]] | None:
        day_ago = self.clock.now_us() - 24 * 3600 * 10**6
        row = self.db.execute(
            "select body_hash, status, response from idempotency "
            "where scope = ? and key = ? and created_us > ?",
            (scope, key, day_ago),
        ).fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    def remember(self, scope: str, key: str, body_hash: str, status: int, response: dict[str, Any]) -> None:
        with self.lock:
            self.db.execute(
                "insert or replace into idempotency values (?, ?, ?, ?, ?, ?)",
                (scope, key, body_hash, status, json.dumps(response), self.clock.now_us()),
            )

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for resource in RESOURCES:
            live, deleted = self.db.execute(
                "select count(*) filter (where deleted_us is null), "
                "count(*) filter (where deleted_us is not null) from records where resource = ?",
                (resource,),
            ).fetchone()
            out[resource] = {"live": live, "deleted": deleted}
        return out

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The writes inside commit together: a batch request is one transaction, as a
        database-backed API would make it, and each of its operations a savepoint
        (`operation`). Held under the store's lock, so nothing else writes meanwhile."""
        with self.lock:
            self.db.execute("begin immediate")
            try:
                yield
            except BaseException:
                self.db.execute("rollback")
                raise
            self.db.execute("commit")

    @contextmanager
    def operation(self) -> Iterator[None]:
        """One operation of a batch, inside `transaction`: all of its writes (the record, its
        references, its idempotency key) or none of them; a refused operation leaves
        nothing behind and the others go on."""
        self.db.execute("savepoint operation")
        try:
            yield
        except BaseException:
            self.db.execute("rollback to operation")
            self.db.execute("release operation")
            raise
        self.db.execute("release operation")

    def close(self) -> None:
        self.db.close()
