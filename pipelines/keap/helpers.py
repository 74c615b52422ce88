"""Keap-specific reading: the incremental walks, the ids-only pass and its confirmation."""

from __future__ import annotations

from collections.abc import Iterator

from connectors.errors import NotFound
from connectors.keap import KeapClient, WalkPage
from pipelines.common import Cursor
from pipelines.keap.settings import CONFIRM_PER_RUN, KeapResource


def read_changes(client: KeapClient, resource: KeapResource, cursor: Cursor) -> Iterator[WalkPage]:
    """The records changed since the cursor (less its overlap), page by page, resuming a walk
    by id that an earlier run left part-way; the last page says `complete`."""
    fields = list(resource.list_fields) or None
    yield from client.walk(resource.name, cursor.since, fields, after_id=cursor.resume_after)


def list_ids(client: KeapClient, resource: KeapResource) -> Iterator[str]:
    """Every id Keap has for a resource, by id (the full pass that finds deletions): a walk
    by id cannot miss a record because another was deleted meanwhile. Opportunities and
    products cannot be narrowed to their ids: whole records."""
    fields = ["id"] if resource.narrowable else None
    for page in client.walk(resource.name, None, fields):
        for item in page.items:
            if isinstance(item, dict) and item.get("id") is not None:
                yield str(item["id"])


def confirm_deleted(client: KeapClient, resource: KeapResource, candidates: list[str]) -> list[str]:
    """The candidates Keap confirms deleted: a direct read answers 404. A record that
    answers is live (it was missed, not deleted). At most CONFIRM_PER_RUN a run; the rest
    stay candidates for the next full pass."""
    fields = ["id"] if resource.one_narrowable else None
    gone = []
    for record_id in candidates[:CONFIRM_PER_RUN]:
        try:
            client.get(resource.name, record_id, fields)
        except NotFound:
            gone.append(record_id)
    return gone
