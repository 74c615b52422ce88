"""The Keap sandbox's data: one SQLite file, one JSON document per record.

Documents are stored in Keap's own response shape, minus what is derived at
read time (timestamps, a contact's company name, an opportunity's contact and
stage, a product's price object). Index columns hold what lists filter and sort
on.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sandbox.timefmt import MonotonicClock

RESOURCES = ("contacts", "companies", "opportunities", "products")

# (name, order, win probability). Two ways of naming the closing stages, as accounts do:
# "Closed Won"/"Closed Lost" (which the sync's stage_status seed names) and "Won"/"Lost"
# (Keap's own examples; the sync maps them by their probability).
DEFAULT_STAGES = [
    ("Lead", 1, 10),
    ("Qualified", 2, 25),
    ("Proposal Sent", 3, 50),
    ("Negotiation", 4, 75),
    ("Closed Won", 5, 100),
    ("Closed Lost", 6, 0),
    ("Won", 7, 100),
    ("Lost", 8, 0),
]

_SCHEMA = """
create table if not exists records (
    resource   text    not null,
    id         integer not null,
    create_us  integer not null,
    update_us  integer not null,
    email      text,            -- contacts: EMAIL1, companies: email, lower-cased
    name       text,            -- contacts: family name, companies: company_name,
                                -- opportunities: title, products: name
    sku        text,
    doc        text    not null,
    primary key (resource, id)
);
create index if not exists records_by_update on records (resource, update_us, id);
create index if not exists records_by_email on records (resource, email);
create index if not exists records_by_sku on records (resource, sku);
create table if not exists sequences (resource text primary key, next_id integer not null);
create table if not exists stages (
    id integer primary key, name text not null, stage_order integer not null,
    probability integer not null, create_us integer not null, update_us integer not null
);
create table if not exists oauth_tokens (
    token text primary key, kind text not null, client_id text not null,
    expires_us integer not null, revoked integer not null default 0
);
"""

# First id per resource: real Keap ids are small integers, each kind its own series.
_FIRST_ID = {"contacts": 1001, "companies": 2001, "opportunities": 3001, "products": 4001}


class KeapStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=normal")
        self.db.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self.clock = MonotonicClock()
        if not self.db.execute("select 1 from stages limit 1").fetchone():
            now = self.clock.now_us()
            self.db.executemany(
                "insert into stages values (?, ?, ?, ?, ?, ?)",
                [(10 + i, n, o, p, now, now) for i, (n, o, p) in enumerate(DEFAULT_STAGES)],
            )

    # --- ids ---------------------------------------------------------------
    def _next_ids(self, resource: str, count: int) -> range:
        row = self.db.execute("select next_id from sequences where resource = ?", (resource,)).fetchone()
        start = row[0] if row else _FIRST_ID[resource]
        self.db.execute(
            "insert into sequences values (?, ?) on conflict(resource) do update set next_id = ?",
            (resource, start + count, start + count),
        )
        return range(start, start + count)

    # --- records -------------------------------------------------------------
    @staticmethod
    def _keys(resource: str, doc: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
        email = name = sku = None
        if resource == "contacts":
            for item in doc.get("email_addresses") or []:
                if item.get("field") == "EMAIL1" and item.get("email"):
                    email = item["email"].lower()
            name = doc.get("family_name")
        elif resource == "companies":
            email = ((doc.get("email_address") or {}).get("email") or "").lower() or None
            name = doc.get("company_name")
        elif resource == "opportunities":
            name = doc.get("opportunity_title")
        elif resource == "products":
            name, sku = doc.get("name"), doc.get("sku")
        return email, name, sku

    def insert_many(
        self, resource: str, docs: Iterable[dict[str, Any]], stamps: Iterable[int] | None = None
    ) -> list[int]:
        """Insert documents (POST, and the demo generator's bulk load with its own timestamps)."""
        batch = list(docs)
        times: list[int | None] = list(stamps) if stamps is not None else [None] * len(batch)
        with self.lock:
            self.db.execute("begin")
            try:
                ids = list(self._next_ids(resource, len(batch)))
                rows = []
                for record_id, doc, stamp in zip(ids, batch, times, strict=True):
                    doc = {**doc, "id": str(record_id)}
                    now = stamp or self.clock.now_us()
                    rows.append((resource, record_id, now, now, *self._keys(resource, doc), json.dumps(doc)))
                self.db.executemany("insert into records values (?,?,?,?,?,?,?,?)", rows)
                self.db.execute("commit")
            except BaseException:
                self.db.execute("rollback")
                raise
        return ids

    def get(self, resource: str, record_id: str) -> tuple[dict[str, Any], int, int] | None:
        if not record_id.isdigit():
            return None
        row = self.db.execute(
            "select doc, create_us, update_us from records where resource = ? and id = ?",
            (resource, int(record_id)),
        ).fetchone()
        return (json.loads(row[0]), row[1], row[2]) if row else None

    def replace(self, resource: str, doc: dict[str, Any], touch: bool = True) -> None:
        with self.lock:
            now = self.clock.now_us()
            email, name, sku = self._keys(resource, doc)
            self.db.execute(
                "update records set doc = ?, email = ?, name = ?, sku = ?"
                + (", update_us = ?" if touch else "")
                + " where resource = ? and id = ?",
                (json.dumps(doc), email, name, sku, *([now] if touch else []), resource, int(doc["id"])),
            )

    def delete(self, resource: str, record_id: str) -> bool:
        if not record_id.isdigit():
            return False
        with self.lock:
            cur = self.db.execute(
                "delete from records where resource = ? and id = ?", (resource, int(record_id))
            )
        return cur.rowcount > 0

    def query(
        self,
        resource: str,
        where: list[tuple[str, list[Any]]],
        order: str,
        offset: int,
        limit: int,
    ) -> list[tuple[dict[str, Any], int, int]]:
        clauses = " and ".join(["resource = ?"] + [c for c, _ in where])
        params: list[Any] = [resource]
        for _, values in where:
            params.extend(values)
        sql = (
            f"select doc, create_us, update_us from records where {clauses} order by {order} limit ? offset ?"
        )
        rows = self.db.execute(sql, [*params, limit, offset]).fetchall()
        return [(json.loads(doc), c, u) for doc, c, u in rows]

    def sort_value(self, resource: str, record_id: str, column: str) -> Any:
        """A record's value of a sort column (a key-paged token resumes after it)."""
        row = self.db.execute(
            f"select {column} from records where resource = ? and id = ?", (resource, int(record_id))
        ).fetchone()
        return row[0] if row else None

    def stamp(self, resource: str, record_id: str, update_us: int) -> bool:
        """Set a record's update time as it is (a bad clock: the sandbox's admin only)."""
        with self.lock:
            cur = self.db.execute(
                "update records set update_us = ? where resource = ? and id = ?",
                (update_us, resource, int(record_id)),
            )
        return cur.rowcount > 0

    def count(self, resource: str) -> int:
        return int(
            self.db.execute("select count(*) from records where resource = ?", (resource,)).fetchone()[0]
        )

    def iter_ids(self, resource: str) -> Iterator[int]:
        for (record_id,) in self.db.execute(
            "select id from records where resource = ? order by id", (resource,)
        ):
            yield record_id

    # --- stages ----------------------------------------------------------------
    def stages(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "select id, name, stage_order, probability, create_us, update_us from stages order by stage_order"
        ).fetchall()
        return [
            {"id": str(r[0]), "name": r[1], "order": r[2], "probability": r[3], "_c": r[4], "_u": r[5]}
            for r in rows
        ]

    def stage(self, stage_id: str) -> dict[str, Any] | None:
        return next((s for s in self.stages() if s["id"] == stage_id), None)

    # --- oauth -------------------------------------------------------------------
    def save_token(self, token: str, kind: str, client_id: str, expires_us: int) -> None:
        with self.lock:
            self.db.execute(
                "insert into oauth_tokens values (?, ?, ?, ?, 0)", (token, kind, client_id, expires_us)
            )

    def token(self, token: str, kind: str) -> tuple[str, int, bool] | None:
        row = self.db.execute(
            "select client_id, expires_us, revoked from oauth_tokens where token = ? and kind = ?",
            (token, kind),
        ).fetchone()
        return (row[0], row[1], bool(row[2])) if row else None

    def revoke(self, token: str) -> None:
        with self.lock:
            self.db.execute("update oauth_tokens set revoked = 1 where token = ?", (token,))

    def expire_access_tokens(self) -> int:
        with self.lock:
            cur = self.db.execute("update oauth_tokens set expires_us = 0 where kind = 'access'")
        return cur.rowcount

    def close(self) -> None:
        self.db.close()
