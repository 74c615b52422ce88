"""What both sources share: the row shape of a raw table, timestamps, rejections.

Every raw table holds one row per record: its `id`, the record exactly as the
API sent it in `payload` (JSON text, nested arrays intact, no key added or lost), the API's own update
timestamp as text, that timestamp parsed to UTC in `_cursor`, and when it was
extracted. Records that cannot be loaded (no id, an unparseable timestamp) go
to `ingest_rejections` with the resource, the page and the field, and the run
goes on. NUL characters are dropped from the payload (`payload_text`): PostgreSQL
cannot hold them; the run names the records and fields that had one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dlt

from connectors.errors import ApiError, ProtocolError
from support.times import parse_time

RAW_COLUMNS: dict[str, Any] = {
    "id": {"data_type": "text", "nullable": False, "primary_key": True},
    "updated_at": {"data_type": "text", "nullable": True},
    # a record read twice in one load (read, edited, read again) keeps its latest version
    "_cursor": {"data_type": "timestamp", "nullable": True, "timezone": True, "dedup_sort": "desc"},
    # the record as sent, as JSON text: a JSON-typed column would go through DuckDB's
    # JSON reader, which unifies keys across rows and adds nulls the API never sent
    "payload": {"data_type": "text", "nullable": False},
    "_extracted_at": {"data_type": "timestamp", "nullable": False, "timezone": True},
}
REJECTION_COLUMNS: dict[str, Any] = {
    "id": {"data_type": "text"},  # the record's id when it has one, else where it stood
    "resource": {"data_type": "text"},
    "page": {"data_type": "bigint"},
    "field": {"data_type": "text"},
    "reason": {"data_type": "text"},
    "record": {"data_type": "text"},
    "rejected_at": {"data_type": "timestamp", "timezone": True},
}


@dataclass
class Page:
    number: int  # 1-based; 0 for the closing marker
    items: list[dict[str, Any]]
    complete: bool  # True on the marker after the walk reached its end


@dataclass
class ResourceReport:
    resource: str
    pages: int = 0
    records: int = 0
    rejected: int = 0
    deleted: int = 0
    error: str | None = None
    cleaned: int = 0  # records loaded without the NUL characters they had (see payload_text)
    cleaned_fields: list[str] = field(default_factory=list)  # `id: field, field`, the first few


@dataclass
class ExtractReport:
    system: str
    resources: dict[str, ResourceReport] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    full_pass: bool = False

    def resource(self, name: str) -> ResourceReport:
        return self.resources.setdefault(name, ResourceReport(name))

    @property
    def errors(self) -> list[str]:
        return [f"{self.system}.{r.resource}: {r.error}" for r in self.resources.values() if r.error]


class Cursor:
    """A resource's incremental position, kept in dlt resource state (committed with the load).

    `value` is the server's own time when the last complete walk began (the `Date` of its
    first answer): whatever changed while the walk went on, or carries a future update
    time (a bad clock, bad data), is read again by the next run, never passed over. Reads
    start `overlap` earlier, for records stamped before they became visible (a server that
    stamps when a transaction starts, not when it commits); the records already loaded in
    that window at the same update time (`seen`: id -> update time as sent) are not loaded
    again, so an idle run loads nothing.

    A walk by id that stops part-way (an error, the daily quota, the run's deadline) leaves
    `walk` behind: where it started (`since`), the last id it reached and when it began;
    the next run resumes it there instead of starting over.
    """

    def __init__(self, state: dict[str, Any], overlap: timedelta) -> None:
        self.state = state
        self.overlap = overlap
        self.value = parse_time(state.get("cursor"))
        self.seen: dict[str, str] = dict(state.get("seen") or {})
        walk = state.get("walk") or {}
        self.began: datetime | None = parse_time(walk.get("began"))
        self.resume_since: datetime | None = parse_time(walk.get("since"))
        self.resume_after: int | None = walk.get("after_id")
        self.newest: datetime | None = None
        self.loaded: dict[str, tuple[str, datetime]] = {}

    @property
    def since(self) -> datetime | None:
        """Where this run's walk starts: a resumed walk's start, else the cursor less the overlap."""
        if self.resume_after is not None:
            return self.resume_since
        return self.value - self.overlap if self.value is not None else None

    def already_loaded(self, record_id: str, stamp: Any) -> bool:
        return stamp is not None and self.seen.get(record_id) == stamp

    def begin(self, server_time: datetime | None) -> None:
        """The walk's first answer: its server time bounds the cursor (kept when resuming)."""
        if self.began is None:
            self.began = server_time or datetime.now(UTC)

    def observe(self, record_id: str, stamp_text: str | None, stamp: datetime | None) -> None:
        if stamp is None or stamp_text is None:
            return
        self.loaded[record_id] = (stamp_text, stamp)
        if self.newest is None or stamp > self.newest:
            self.newest = stamp

    def progress(self, last_id: int) -> None:
        """A walk by id got this far: a run that stops now resumes after `last_id`."""
        began = self.began or datetime.now(UTC)
        self.state["walk"] = {
            "since": self.since.isoformat() if self.since else None,
            "after_id": last_id,
            "began": began.isoformat(),
        }

    def commit(self) -> None:
        """The walk is complete: the cursor moves to when it began (call only then)."""
        self.value = self.began or datetime.now(UTC)  # earlier than before (a clock set back) is safe
        self.state["cursor"] = self.value.isoformat()
        self.state.pop("walk", None)
        self._keep_seen(self.state["cursor"])

    def _keep_seen(self, cursor: str | None) -> None:
        """Remember the versions loaded at or after the next read's start."""
        value = parse_time(cursor)
        floor = value - self.overlap if value is not None else None
        kept = {
            record_id: text
            for record_id, text in {**self.seen, **{k: t for k, (t, _) in self.loaded.items()}}.items()
            if floor is None or (parse_time(text) or floor) >= floor
        }
        self.state["seen"] = kept


ProgressCallback = Callable[[str, str, int, int], None]
"""(system, resource, pages so far, records so far)"""


NUL = "\x00"
CLEANED_SHOWN = 5  # records named per resource in a run's note


def without_nul(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """The value with every NUL character dropped from its strings (keys too), and where
    there were some (`field`, `addresses.0.line1`). Both APIs may send one (JSON's
    `\\u0000`); PostgreSQL cannot hold it in text, nor turn that escape into text, so a
    record carrying one would stop every build there. It is dropped on either engine, so
    the two read the same, and the run says where."""
    if isinstance(value, str):
        return (value.replace(NUL, ""), [path or "(value)"]) if NUL in value else (value, [])
    if isinstance(value, dict):
        found: list[str] = []
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            name = key.replace(NUL, "") if isinstance(key, str) else key
            if name != key:
                found.append(f"{path}.{name}" if path else str(name))
            cleaned[name], inner = without_nul(item, f"{path}.{name}" if path else str(name))
            found += inner
        return (cleaned, found) if found else (value, [])
    if isinstance(value, list):
        found = []
        items = []
        for index, item in enumerate(value):
            item, inner = without_nul(item, f"{path}.{index}" if path else str(index))
            items.append(item)
            found += inner
        return (items, found) if found else (value, [])
    return value, []


def payload_text(record: dict[str, Any]) -> tuple[str, list[str]]:
    """The record as JSON text for `payload`, without NUL characters, and the fields that had one."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" not in text:  # json.dumps always escapes a NUL: the common case is one scan
        return text, []
    cleaned, fields = without_nul(record)
    if not fields:  # the six characters `\u0000` typed as text, not a NUL
        return text, []
    return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")), fields


def raw_row(
    record: dict[str, Any],
    id_field: str,
    cursor_field: str | None,
    extracted_at: datetime,
    counts: ResourceReport | None = None,
) -> dict[str, Any]:
    stamp = record.get(cursor_field) if cursor_field else None
    payload, cleaned = payload_text(record)
    if cleaned and counts is not None:
        counts.cleaned += 1
        if len(counts.cleaned_fields) < CLEANED_SHOWN:
            counts.cleaned_fields.append(f"{record[id_field]}: {', '.join(dict.fromkeys(cleaned))}")
    return {
        "id": str(record[id_field]),
        "updated_at": stamp,
        "_cursor": parse_time(stamp),
        "payload": payload,
        "_extracted_at": extracted_at,
    }


def check_record(record: Any, id_field: str, cursor_field: str | None) -> tuple[str, str] | None:
    """(field, reason) when the record cannot be loaded."""
    if not isinstance(record, dict):
        return "(record)", f"not an object: {type(record).__name__}"
    if record.get(id_field) in (None, ""):
        return id_field, "missing id"
    if NUL in str(record[id_field]):
        return id_field, "a NUL character in the id"
    if cursor_field and record.get(cursor_field) and parse_time(record[cursor_field]) is None:
        return cursor_field, f"unparseable timestamp {record[cursor_field]!r}"
    return None


# One dlt resource per API resource yields to several tables (its records, and
# rejections or tombstones). Each item therefore carries its table's whole hints
# as a table variant, and the resource itself declares none: dlt variants inherit
# the resource's hints, and a NOT NULL payload must not reach the side tables.


def to_table(
    table: str, rows: Any, columns: dict[str, Any], primary_key: str | list[str] | None = None
) -> Any:
    """Rows (or one row) bound for `table`, with that table's whole hints: merged on the
    primary key, else appended."""
    hints = dlt.mark.make_hints(
        table_name=table,
        write_disposition="merge" if primary_key else "append",
        primary_key=primary_key,
        columns=columns,
    )
    return dlt.mark.with_hints(rows, hints, create_table_variant=True)


def raw_rows(table: str, rows: list[dict[str, Any]]) -> Any:
    return to_table(table, rows, RAW_COLUMNS, "id")


def rejection(
    resource: str, page: int, index: int, field_name: str, reason: str, record: Any, at: datetime
) -> Any:
    record_id = record.get("id") or record.get("Id") if isinstance(record, dict) else None
    row = {
        # as repr writes a NUL (`\x00`): PostgreSQL's text cannot hold one
        "id": str(record_id or f"{resource}/page {page}/item {index}").replace(NUL, "\\x00"),
        "resource": resource,
        "page": page,
        "field": field_name,
        "reason": reason,
        "record": repr(record)[:2000],
        "rejected_at": at,
    }
    return to_table("ingest_rejections", row, REJECTION_COLUMNS)


@dataclass
class PageRecord:
    item: dict[str, Any]  # the record as the API sent it
    row: dict[str, Any]  # its raw row
    is_new: bool  # a version not loaded before (the cursor has observed it)


def read_page(
    resource: str,
    items: list[Any],
    page: int,
    counts: ResourceReport,
    cursor: Cursor,
    id_field: str,
    cursor_field: str | None,
    extracted_at: datetime,
) -> tuple[list[Any], list[PageRecord]]:
    """One page of a walk, as both sources read it: the records that cannot be loaded
    (rejections, counted) and the others, each marked new unless this version was
    loaded before (an overlap, a page read twice)."""
    rejected, found = [], []
    for index, item in enumerate(items):
        problem = check_record(item, id_field, cursor_field)
        if problem is not None:
            counts.rejected += 1
            rejected.append(rejection(resource, page, index, *problem, item, extracted_at))
            continue
        is_new = not cursor.already_loaded(
            str(item[id_field]), item.get(cursor_field) if cursor_field else None
        )
        row = raw_row(item, id_field, cursor_field, extracted_at, counts if is_new else None)
        if is_new:
            cursor.observe(row["id"], row["updated_at"], row["_cursor"])
        found.append(PageRecord(item, row, is_new))
    return rejected, found


def walk_failed(resource: str, counts: ResourceReport, exc: ApiError, extracted_at: datetime) -> Any | None:
    """An API error ends a walk: what was read is kept and the cursor stays put. A page
    the API answered with something unreadable is also recorded as a rejection (returned)."""
    counts.error = str(exc)
    if not isinstance(exc, ProtocolError):
        return None
    counts.rejected += 1
    return rejection(resource, counts.pages + 1, 0, "(page)", str(exc), None, extracted_at)
