"""What both sources share: the row shape of a raw table, timestamps, rejections.

Every raw table holds one row per record: its `id`, the record exactly as the
API sent it in `payload` (JSON text, nested arrays intact, no key added or lost), the API's own update
timestamp as text, that timestamp parsed to UTC in `_cursor`, and when it was
extracted. Records that cannot be loaded (no id, an unparseable timestamp) go
to `ingest_rejections` with the resource, the page and the field, and the run
goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dlt

from connectors.http import parse_time

RAW_COLUMNS: dict[str, Any] = {
    "id": {"data_type": "text", "nullable": False, "primary_key": True},
    "updated_at": {"data_type": "text", "nullable": True},
    "_cursor": {"data_type": "timestamp", "nullable": True, "timezone": True},
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
    """A resource's incremental position, kept in dlt resource state.

    `value` is the newest update time loaded. Reads start `overlap` earlier so
    records sharing a timestamp are never missed; the records already loaded
    from that window are remembered (`seen`: id -> update time as sent) and not
    loaded again, so an idle run loads nothing.
    """

    def __init__(self, state: dict[str, Any], overlap: timedelta) -> None:
        self.state = state
        self.overlap = overlap
        self.value = parse_time(state.get("cursor"))
        self.seen: dict[str, str] = dict(state.get("seen") or {})
        self.newest = self.value
        self.window: dict[str, tuple[str, datetime]] = {}

    def already_loaded(self, record_id: str, stamp: Any) -> bool:
        return stamp is not None and self.seen.get(record_id) == stamp

    def observe(self, record_id: str, stamp_text: str | None, stamp: datetime | None) -> None:
        if stamp is None or stamp_text is None:
            return
        if self.newest is None or stamp > self.newest:
            self.newest = stamp
            floor = stamp - self.overlap
            self.window = {k: v for k, v in self.window.items() if v[1] >= floor}
        if stamp >= self.newest - self.overlap:
            self.window[record_id] = (stamp_text, stamp)

    def commit(self) -> None:
        """Advance to everything observed (call only when all of it was read)."""
        if self.newest is None:
            return
        floor = self.newest - self.overlap
        kept = {
            k: v for k, v in self.seen.items() if (parse_time(v) or floor) >= floor and k not in self.window
        }
        kept.update({k: text for k, (text, stamp) in self.window.items() if stamp >= floor})
        self.state["cursor"] = self.newest.isoformat()
        self.state["seen"] = kept
        self.value = self.newest


ProgressCallback = Callable[[str, str, int, int], None]
"""(system, resource, pages so far, records so far)"""


def raw_row(
    record: dict[str, Any], id_field: str, cursor_field: str | None, extracted_at: datetime
) -> dict[str, Any]:
    stamp = record.get(cursor_field) if cursor_field else None
    return {
        "id": str(record[id_field]),
        "updated_at": stamp,
        "_cursor": parse_time(stamp),
        "payload": json.dumps(record, ensure_ascii=False, separators=(",", ":")),
        "_extracted_at": extracted_at,
    }


def check_record(record: Any, id_field: str, cursor_field: str | None) -> tuple[str, str] | None:
    """(field, reason) when the record cannot be loaded."""
    if not isinstance(record, dict):
        return "(record)", f"not an object: {type(record).__name__}"
    if record.get(id_field) in (None, ""):
        return id_field, "missing id"
    if cursor_field and record.get(cursor_field) and parse_time(record[cursor_field]) is None:
        return cursor_field, f"unparseable timestamp {record[cursor_field]!r}"
    return None


# One dlt resource per API resource yields to several tables (its records, and
# rejections or tombstones). Each item therefore carries its table's whole hints
# as a table variant, and the resource itself declares none: dlt variants inherit
# the resource's hints, and a NOT NULL payload must not reach the side tables.


def raw_rows(table: str, rows: list[dict[str, Any]]) -> Any:
    hints = dlt.mark.make_hints(
        table_name=table, write_disposition="merge", primary_key="id", columns=RAW_COLUMNS
    )
    return dlt.mark.with_hints(rows, hints, create_table_variant=True)


def rejection(
    resource: str, page: int, index: int, field_name: str, reason: str, record: Any, at: datetime
) -> Any:
    record_id = record.get("id") or record.get("Id") if isinstance(record, dict) else None
    row = {
        "id": str(record_id or f"{resource}/page {page}/item {index}"),
        "resource": resource,
        "page": page,
        "field": field_name,
        "reason": reason,
        "record": repr(record)[:2000],
        "rejected_at": at,
    }
    hints = dlt.mark.make_hints(
        table_name="ingest_rejections", write_disposition="append", columns=REJECTION_COLUMNS
    )
    return dlt.mark.with_hints(row, hints, create_table_variant=True)
