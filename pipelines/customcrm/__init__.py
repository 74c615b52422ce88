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
from connectors.errors import ApiError, FatalError
from pipelines.common import (
    Cursor,
    ExtractReport,
    ProgressCallback,
    raw_rows,
    read_page,
    to_table,
    walk_failed,
    without_nul,
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
        "external_refs": json.dumps(without_nul(record.get("ExternalRefs") or {})[0], ensure_ascii=False),
        "_extracted_at": extracted_at,
    }
    return to_table("tombstones", row, TOMBSTONE_COLUMNS, ["resource", "id"])


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
                rejected, found = read_page(
                    resource, page.items, number, counts, cursor, ID_FIELD, CURSOR_FIELD, extracted_at
                )
                yield from rejected
                rows = []
                for record in found:
                    if not record.is_new:
                        continue
                    if is_tombstone(record.item):
                        counts.deleted += 1
                        yield _tombstone(resource, record.item, extracted_at)
                    else:
                        rows.append(record.row)
                counts.records += len(rows)
                if rows:
                    yield raw_rows(resource, rows)
                if progress:
                    progress("customcrm", resource, counts.pages, counts.records)
            cursor.commit()
        except FatalError:
            raise
        except ApiError as exc:  # keep what was read; the cursor stays put
            failed = walk_failed(resource, counts, exc, extracted_at)
            if failed is not None:
                yield failed

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
