"""The Customcrm dlt source: customers, contacts, orders, products.

Lists are read with `updated_since` and `include_deleted=true`, ordered by
(UpdatedAt, Id), from the server's time when the last complete walk began less a short
overlap (a record stamped when its transaction began may become visible a little later;
what was already loaded at the same update time is not loaded again). Live records merge on
`id` into one table per resource; tombstones go to `tombstones` (resource, id,
DeletedAt) so that the record's last known values stay where they were.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dlt

from connectors.customcrm import CustomcrmClient
from connectors.errors import ApiError, FatalError, ProtocolError
from pipelines.common import (
    Cursor,
    ExtractReport,
    ProgressCallback,
    check_record,
    raw_row,
    raw_rows,
    rejection,
)
from pipelines.customcrm.helpers import is_tombstone, read_changes
from pipelines.customcrm.settings import CURSOR_FIELD, ID_FIELD, RESOURCES
from support.times import parse_time

TOMBSTONE_COLUMNS: dict[str, Any] = {
    "resource": {"data_type": "text", "nullable": False, "primary_key": True},
    "id": {"data_type": "text", "nullable": False, "primary_key": True},
    "deleted_at": {"data_type": "timestamp", "timezone": True},
    "updated_at": {"data_type": "timestamp", "timezone": True},
    "external_refs": {"data_type": "text"},  # JSON text, as the payloads
    "_extracted_at": {"data_type": "timestamp", "timezone": True},
}


def _tombstone(resource: str, record: dict[str, Any], extracted_at: datetime) -> Any:
    row = {
        "resource": resource,
        "id": str(record[ID_FIELD]),
        "deleted_at": parse_time(record.get("DeletedAt")),
        "updated_at": parse_time(record.get(CURSOR_FIELD)),
        "external_refs": json.dumps(record.get("ExternalRefs") or {}, ensure_ascii=False),
        "_extracted_at": extracted_at,
    }
    hints = dlt.mark.make_hints(
        table_name="tombstones",
        write_disposition="merge",
        primary_key=["resource", "id"],
        columns=TOMBSTONE_COLUMNS,
    )
    return dlt.mark.with_hints(row, hints, create_table_variant=True)


def _records(
    client: CustomcrmClient,
    resource: str,
    overlap: timedelta,
    report: ExtractReport,
    progress: ProgressCallback | None,
) -> Any:
    @dlt.resource(name=resource)  # hints travel with each item: see pipelines.common
    def records() -> Iterator[Any]:
        cursor = Cursor(dlt.current.resource_state(), overlap)
        counts = report.resource(resource)
        extracted_at = datetime.now(UTC)
        try:
            for number, page in enumerate(read_changes(client, resource, cursor.since), start=1):
                cursor.begin(page.server_time)
                counts.pages += 1
                rows = []
                for index, item in enumerate(page.items):
                    problem = check_record(item, ID_FIELD, CURSOR_FIELD)
                    if problem is not None:
                        counts.rejected += 1
                        yield rejection(resource, number, index, *problem, item, extracted_at)
                        continue
                    record_id, stamp_text = str(item[ID_FIELD]), item.get(CURSOR_FIELD)
                    if cursor.already_loaded(record_id, stamp_text):
                        continue
                    cursor.observe(record_id, stamp_text, parse_time(stamp_text))
                    if is_tombstone(item):
                        counts.deleted += 1
                        yield _tombstone(resource, item, extracted_at)
                    else:
                        rows.append(raw_row(item, ID_FIELD, CURSOR_FIELD, extracted_at))
                counts.records += len(rows)
                if rows:
                    yield raw_rows(resource, rows)
                if progress:
                    progress("customcrm", resource, counts.pages, counts.records)
            cursor.commit()
        except FatalError:
            raise
        except ApiError as exc:  # keep what was read; the cursor stays put
            counts.error = str(exc)
            if isinstance(exc, ProtocolError):
                counts.rejected += 1
                yield rejection(resource, counts.pages + 1, 0, "(page)", str(exc), None, extracted_at)

    return records


@dlt.source(name="customcrm", max_table_nesting=0)
def customcrm_source(
    client: CustomcrmClient,
    report: ExtractReport,
    *,
    overlap: timedelta = timedelta(seconds=2),
    progress: ProgressCallback | None = None,
) -> Sequence[Any]:
    return [_records(client, resource, overlap, report, progress) for resource in RESOURCES]
