"""Keap-specific reading: timestamps in filters, the incremental walks, the ids-only pass."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.keap import KeapClient
from pipelines.common import Page, parse_timestamp
from pipelines.keap.settings import KeapResource


def filter_timestamp(value: datetime) -> str:
    """Keap filters want full ISO-8601 with milliseconds and a zone."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def read_changes(
    client: KeapClient, resource: KeapResource, since: datetime | None, overlap: timedelta
) -> Iterator[Page]:
    """The records changed since the cursor (less the overlap), page by page.

    `filter_asc` resources ask Keap for them with a time filter. `desc_until`
    resources have no time filter: they are read newest first and the walk stops
    at the first record older than the cursor; the last page says `complete`.
    """
    params: dict[str, Any] = {}
    if resource.fields:
        params["fields"] = ",".join(resource.fields)
    if resource.order_by:
        params["order_by"] = resource.order_by
    floor = since - overlap if since else None
    if resource.strategy == "filter_asc":
        if floor is not None:
            params["filter"] = f"{resource.time_filter}=={filter_timestamp(floor)}"
        for number, items in enumerate(client.pages(resource.path, params), start=1):
            yield Page(number, items, complete=False)
        yield Page(0, [], complete=True)
        return
    for number, items in enumerate(client.pages(resource.path, params), start=1):
        if floor is None:
            yield Page(number, items, complete=False)
            continue
        fresh = [item for item in items if _newer_or_unknown(item, resource.cursor_field, floor)]
        yield Page(number, fresh, complete=False)
        if len(fresh) < len(items):  # reached records older than the cursor: done
            break
    yield Page(0, [], complete=True)


def _newer_or_unknown(item: dict[str, Any], field: str | None, floor: datetime) -> bool:
    stamp = parse_timestamp(item.get(field or "")) if field else None
    return stamp is None or stamp >= floor


def list_ids(client: KeapClient, resource: KeapResource) -> Iterator[str]:
    """Every id Keap has for a resource (the full pass that finds deletions)."""
    params = {"fields": "id"} if resource.ids_only_fields else {}
    for items in client.pages(resource.path, params):
        for item in items:
            if item.get("id") is not None:
                yield str(item["id"])
