"""Customcrm-specific reading: the incremental list with tombstones."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from connectors.customcrm import CustomcrmClient
from connectors.http import ListPage
from pipelines.customcrm.settings import PAGE_LIMIT


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_changes(client: CustomcrmClient, resource: str, since: datetime | None) -> Iterator[ListPage]:
    """Records and tombstones updated at or after `since` (inclusive), oldest first, each page
    with the server's clock."""
    updated_since = rfc3339(since) if since else None
    yield from client.walk(resource, updated_since=updated_since, include_deleted=True, limit=PAGE_LIMIT)


def is_tombstone(record: dict[str, Any]) -> bool:
    return record.get("DeletedAt") is not None
