"""The Keap dlt source: companies, contacts, opportunities, products, stages.

Each resource merges on `id` and keeps the record as Keap sent it (`payload`).
Cursors are kept in dlt's resource state, committed with the load they belong
to, and advance only when a walk is complete: companies come in id order and
opportunities/products newest first, so a walk cut short by an error holds no
safe intermediate cursor (hence not `dlt.sources.incremental`, whose cursor is
the maximum of whatever was yielded). Records already read are loaded either
way; the next run reads the rest.

A full pass (on demand, or every `full_pass_every` runs) lists ids only and
marks records missing from Keap as deleted in `deletions`; rows are never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dlt

from connectors.errors import ApiError, FatalError
from connectors.keap import KeapClient
from pipelines.common import (
    RAW_COLUMNS,
    Cursor,
    ExtractReport,
    ProgressCallback,
    check_record,
    raw_row,
    raw_rows,
    rejection,
)
from pipelines.keap.helpers import list_ids, read_changes
from pipelines.keap.settings import RESOURCES, STAGES, KeapResource

DELETION_COLUMNS: dict[str, Any] = {
    "resource": {"data_type": "text", "nullable": False, "primary_key": True},
    "id": {"data_type": "text", "nullable": False, "primary_key": True},
    "detected_at": {"data_type": "timestamp", "timezone": True},
}


def _records(
    client: KeapClient,
    spec: KeapResource,
    overlap: timedelta,
    report: ExtractReport,
    progress: ProgressCallback | None,
) -> Any:
    @dlt.resource(name=spec.name)  # hints travel with each item: see pipelines.common
    def records() -> Iterator[Any]:
        cursor = Cursor(dlt.current.resource_state(), overlap)
        counts = report.resource(spec.name)
        extracted_at = datetime.now(UTC)
        try:
            for page in read_changes(client, spec, cursor.value, overlap):
                if page.complete:
                    cursor.commit()
                    break
                counts.pages += 1
                rows = []
                for index, item in enumerate(page.items):
                    problem = check_record(item, "id", spec.cursor_field)
                    if problem is not None:
                        counts.rejected += 1
                        yield rejection(spec.name, page.number, index, *problem, item, extracted_at)
                        continue
                    row = raw_row(item, "id", spec.cursor_field, extracted_at)
                    if cursor.already_loaded(row["id"], row["updated_at"]):
                        continue
                    cursor.observe(row["id"], row["updated_at"], row["_cursor"])
                    rows.append(row)
                counts.records += len(rows)
                if rows:
                    yield raw_rows(spec.name, rows)
                if progress:
                    progress("keap", spec.name, counts.pages, counts.records)
        except FatalError:
            raise
        except ApiError as exc:  # keep what was read; the cursor stays put
            counts.error = str(exc)

    return records


def _stages(client: KeapClient, report: ExtractReport) -> Any:
    @dlt.resource(name="stages", write_disposition="merge", primary_key="id", columns=RAW_COLUMNS)
    def stages() -> Iterator[Any]:
        counts = report.resource("stages")
        extracted_at = datetime.now(UTC)
        try:
            for items in client.pages(STAGES):
                counts.pages += 1
                counts.records += len(items)
                yield [raw_row(item, "id", "updated_time", extracted_at) for item in items if item.get("id")]
        except FatalError:
            raise
        except ApiError as exc:
            counts.error = str(exc)

    return stages


def _known_ids(resource: str) -> set[str]:
    """Ids already loaded and not yet marked deleted, read through dlt's own connection."""
    pipeline = dlt.current.pipeline()
    try:
        with pipeline.sql_client() as sql:
            table = sql.make_qualified_table_name(resource)
            deletions = sql.make_qualified_table_name("deletions")
            try:
                rows = sql.execute_sql(
                    f"select id from {table} where id not in "
                    f"(select id from {deletions} where resource = %s)",
                    resource,
                )
            except Exception:  # no deletions table yet
                rows = sql.execute_sql(f"select id from {table}")
    except Exception:  # nothing loaded yet
        return set()
    return {str(row[0]) for row in rows or []}


def _deletions(client: KeapClient, report: ExtractReport, full_pass: bool, every: int) -> Any:
    @dlt.resource(
        name="deletions", write_disposition="merge", primary_key=["resource", "id"], columns=DELETION_COLUMNS
    )
    def deletions() -> Iterator[Any]:
        state = dlt.current.resource_state()
        runs = int(state.get("runs_since_full_pass", 0)) + 1
        if not (full_pass or runs >= every):
            state["runs_since_full_pass"] = runs
            return
        report.full_pass = True
        detected_at = datetime.now(UTC)
        complete = True
        for spec in RESOURCES:
            counts = report.resource(spec.name)
            known = _known_ids(spec.name)
            try:
                present = set(list_ids(client, spec))
            except FatalError:
                raise
            except ApiError as exc:  # an incomplete id list proves nothing: mark nothing
                counts.error = f"full pass: {exc}"
                complete = False
                continue
            missing = known - present
            counts.deleted += len(missing)
            if missing:
                yield [
                    {"resource": spec.name, "id": record_id, "detected_at": detected_at}
                    for record_id in sorted(missing)
                ]
        state["runs_since_full_pass"] = 0 if complete else runs

    return deletions


@dlt.source(name="keap", max_table_nesting=0)
def keap_source(
    client: KeapClient,
    report: ExtractReport,
    *,
    overlap: timedelta = timedelta(seconds=2),
    full_pass: bool = False,
    full_pass_every: int = 24,
    progress: ProgressCallback | None = None,
) -> Sequence[Any]:
    """`full_pass` forces the ids-only pass that finds deletions; otherwise it runs
    every `full_pass_every` runs (counted in dlt state, committed with each load)."""
    resources = [_records(client, spec, overlap, report, progress) for spec in RESOURCES]
    resources.append(_stages(client, report))
    resources.append(_deletions(client, report, full_pass, full_pass_every))
    return resources
