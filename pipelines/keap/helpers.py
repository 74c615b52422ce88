"""Keap-specific reading: timestamps in filters, the incremental walks, the ids-only pass."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from connectors.keap import KeapClient
from pipelines.common import Page
from pipelines.keap.settings import KeapResource


def read_changes(
    client: KeapClient, resource: KeapResource, since: datetime | None, overlap: timedelta
) -> Iterator[Page]:
    """The records changed since the cursor (less the overlap), page by page; the last
    page says `complete` (the connector knows each resource's cheapest incremental read)."""
    floor = since - overlap if since else None
    number = 0
    for items, last in client.changed_since(resource.path, floor, list(resource.fields or []) or None):
        if items or not last:
            number += 1
            yield Page(number, items, complete=False)
    yield Page(0, [], complete=True)


def list_ids(client: KeapClient, resource: KeapResource) -> Iterator[str]:
    """Every id Keap has for a resource (the full pass that finds deletions)."""
    params = {"fields": "id"} if resource.ids_only_fields else {}
    for items in client.pages(resource.path, params):
        for item in items:
            if item.get("id") is not None:
                yield str(item["id"])
