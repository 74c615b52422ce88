"""Customcrm-specific reading: the incremental list with tombstones."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.customcrm import CustomcrmClient
from pipelines.customcrm.settings import PAGE_LIMIT


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_changes(
    client: CustomcrmClient, resource: str, since: datetime | None, overlap: timedelta
) -> Iterator[list[dict[str, Any]]]:
    """Records and tombstones updated since the cursor (inclusive, less the overlap),
    oldest first: every page leaves a safe cursor behind it."""
    updated_since = rfc3339(since - overlap) if since else None
    yield from client.pages(resource, updated_since=updated_since, include_deleted=True, limit=PAGE_LIMIT)


def is_tombstone(record: dict[str, Any]) -> bool:
    return record.get("DeletedAt") is not None
