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
Deletions Keap announced through REST hooks (`deletion_hints`) are confirmed the same way
(a direct read answering 404) in any run, and recorded in the same table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dlt

from connectors.errors import ApiError, FatalError, QuotaExhausted
from connectors.keap import KeapClient
from pipelines.common import (
    RAW_COLUMNS,
    Cursor,
    ExtractReport,
    ProgressCallback,
    check_record,
    raw_row,
    raw_rows,
    read_page,
    to_table,
    walk_failed,
)
from pipelines.keap.helpers import confirm_deleted, list_ids, read_changes
from pipelines.keap.settings import RESOURCES, STAGES, KeapResource

DELETION_COLUMNS: dict[str, Any] = {
    "resource": {"data_type": "text", "nullable": False, "primary_key": True},
    "id": {"data_type": "text", "nullable": False, "primary_key": True},
    "detected_at": {"data_type": "timestamp", "timezone": True},
    # true: Keap confirmed the deletion; false: marked once, then found again (live again)
    "is_deleted": {"data_type": "bool", "nullable": True},
}


def _records(
    client: KeapClient,
    spec: KeapResource,
    overlap: timedelta,
    report: ExtractReport,
    progress: ProgressCallback | None,
    stop: Stop,
) -> Any:
    @dlt.resource(name=spec.name)  # hints travel with each item: see pipelines.common
    def records() -> Iterator[Any]:
        cursor = Cursor(dlt.current.resource_state(), overlap)
        counts = report.resource(spec.name)
        if stop.reason:  # the daily quota is spent: nothing more is asked of Keap this run
            counts.error = stop.reason
            return
        extracted_at = datetime.now(UTC)
        deleted = _marked_deleted(spec.name)
        try:
            for page in read_changes(client, spec, cursor):
                cursor.begin(page.server_time)
                counts.pages += 1
                rejected, found = read_page(
                    spec.name, page.items, counts.pages, counts, cursor, "id", spec.cursor_field, extracted_at
                )
                yield from rejected
                # marked deleted, and here it is: live again
                live_again = [r.row["id"] for r in found if r.row["id"] in deleted]
                rows = [r.row for r in found if r.is_new]
                counts.records += len(rows)
                if rows:
                    yield raw_rows(spec.name, rows)
                if live_again:
                    yield deletion_rows(spec.name, live_again, extracted_at, is_deleted=False)
                    deleted -= set(live_again)
                if page.complete:
                    cursor.commit()
                elif page.last_id is not None:
                    cursor.progress(page.last_id)
                if progress:
                    progress("keap", spec.name, counts.pages, counts.records)
        except FatalError:
            raise
        except QuotaExhausted as exc:
            stop.reason = counts.error = str(exc)
        except ApiError as exc:  # keep what was read; the cursor stays put (a walk by id resumes)
            failed = walk_failed(spec.name, counts, exc, extracted_at)
            if failed is not None:
                yield failed

    return records


def _stages(client: KeapClient, report: ExtractReport, stop: Stop) -> Any:
    @dlt.resource(name="stages", write_disposition="merge", primary_key="id", columns=RAW_COLUMNS)
    def stages() -> Iterator[Any]:
        counts = report.resource("stages")
        if stop.reason:
            counts.error = stop.reason
            return
        extracted_at = datetime.now(UTC)
        try:
            for items in client.pages(STAGES.name):
                counts.pages += 1
                counts.records += len(items)
                yield [
                    raw_row(item, "id", "updated_time", extracted_at, counts)
                    for item in items
                    if item.get("id") and check_record(item, "id", None) is None  # a NUL in an id
                ]
        except FatalError:
            raise
        except QuotaExhausted as exc:
            stop.reason = counts.error = str(exc)
        except ApiError as exc:
            counts.error = str(exc)

    return stages


def _ids(resource: str, deleted: bool) -> set[str]:
    """Through dlt's own connection: the ids loaded and not marked deleted (`deleted` False),
    or the ids marked deleted (True)."""
    pipeline = dlt.current.pipeline()
    try:
        with pipeline.sql_client() as sql:
            deletions = sql.make_qualified_table_name("deletions")
            marked = f"select id from {deletions} where resource = %s and coalesce(is_deleted, true)"
            if deleted:
                rows = sql.execute_sql(marked, resource)
            else:
                table = sql.make_qualified_table_name(resource)
                # asked, not tried: a failed statement would abort PostgreSQL's transaction
                found = sql.execute_sql(
                    "select count(*) from information_schema.tables where table_schema = %s and table_name = %s",
                    sql.dataset_name,
                    "deletions",
                )
                if found and found[0][0]:
                    rows = sql.execute_sql(f"select id from {table} where id not in ({marked})", resource)
                else:  # no deletions table yet
                    rows = sql.execute_sql(f"select id from {table}")
    except Exception:  # nothing loaded yet
        return set()
    return {str(row[0]) for row in rows or []}


def _marked_deleted(resource: str) -> set[str]:
    return _ids(resource, deleted=True)


def _deletions(
    client: KeapClient,
    report: ExtractReport,
    full_pass: bool,
    every: int,
    stop: Stop,
    hints: Mapping[str, Sequence[str]],
    count_run: bool,
) -> Any:
    @dlt.resource(name="deletions")  # hints travel with each item: see deletion_rows
    def deletions() -> Iterator[Any]:
        yield from _hinted_deletions(client, report, stop, hints)
        state = dlt.current.resource_state()
        runs = int(state.get("runs_since_full_pass", 0)) + (1 if count_run else 0)
        if stop.reason or not (full_pass or runs >= every):
            state["runs_since_full_pass"] = runs
            return
        report.full_pass = True
        detected_at = datetime.now(UTC)
        complete = True
        for spec in RESOURCES:
            counts = report.resource(spec.name)
            known = _ids(spec.name, deleted=False)
            try:
                present = set(list_ids(client, spec))
                gone = confirm_deleted(client, spec, sorted(known - present, key=_numeric))
            except FatalError:
                raise
            except QuotaExhausted as exc:
                stop.reason = counts.error = f"full pass: {exc}"
                complete = False
                break
            except ApiError as exc:  # an incomplete id list proves nothing: mark nothing
                counts.error = f"full pass: {exc}"
                complete = False
                continue
            counts.deleted += len(gone)
            if gone:
                yield deletion_rows(spec.name, gone, detected_at, is_deleted=True)
        state["runs_since_full_pass"] = 0 if complete else runs

    return deletions


def _hinted_deletions(
    client: KeapClient, report: ExtractReport, stop: Stop, hints: Mapping[str, Sequence[str]]
) -> Iterator[Any]:
    """The records REST hooks said were deleted, among those loaded and not marked yet, that
    Keap confirms gone (a direct read answers 404). A hook is a hint: it proves nothing."""
    detected_at = datetime.now(UTC)
    for spec in RESOURCES:
        wanted = {str(i) for i in hints.get(spec.name, ())}
        if not wanted or stop.reason:
            continue
        counts = report.resource(spec.name)
        candidates = sorted(wanted & _ids(spec.name, deleted=False), key=_numeric)
        try:
            gone = confirm_deleted(client, spec, candidates)
        except FatalError:
            raise
        except QuotaExhausted as exc:
            stop.reason = counts.error = f"deletions announced by hooks: {exc}"
            return
        except ApiError as exc:
            counts.error = f"deletions announced by hooks: {exc}"
            continue
        counts.deleted += len(gone)
        if gone:
            yield deletion_rows(spec.name, gone, detected_at, is_deleted=True)


def deletion_rows(resource: str, ids: list[str], at: datetime, *, is_deleted: bool) -> Any:
    """Rows of `deletions`: a deletion Keap confirmed (a direct read answered 404), or a record
    marked deleted that a later read found again (live again: its link recovers)."""
    rows = [
        {"resource": resource, "id": record_id, "detected_at": at, "is_deleted": is_deleted}
        for record_id in ids
    ]
    return to_table("deletions", rows, DELETION_COLUMNS, ["resource", "id"])


def _numeric(record_id: str) -> tuple[int, str]:
    return (int(record_id), "") if record_id.isdigit() else (0, record_id)


class Stop:
    """Shared by a source's resources: once Keap says the day's quota is spent, the run asks
    Keap for nothing more (the message says when the quota resets)."""

    def __init__(self) -> None:
        self.reason: str | None = None


@dlt.source(name="keap", max_table_nesting=0)
def keap_source(
    client: KeapClient,
    report: ExtractReport,
    *,
    overlap: timedelta = timedelta(seconds=2),
    full_pass: bool = False,
    full_pass_every: int = 24,
    deletion_hints: Mapping[str, Sequence[str]] | None = None,
    count_run: bool = True,
    progress: ProgressCallback | None = None,
) -> Sequence[Any]:
    """`full_pass` forces the ids-only pass that finds deletions; otherwise it runs
    every `full_pass_every` runs (counted in dlt state, committed with each load; a run
    with `count_run` False is not counted). `deletion_hints`: ids per resource that REST
    hooks announced deleted, confirmed with Keap before they are recorded."""
    stop = Stop()
    resources = [_records(client, spec, overlap, report, progress, stop) for spec in RESOURCES]
    resources.append(_stages(client, report, stop))
    resources.append(
        _deletions(client, report, full_pass, full_pass_every, stop, deletion_hints or {}, count_run)
    )
    return resources
