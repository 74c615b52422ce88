"""What the Customcrm source reads, as data: the resources of the mapping registry."""

from __future__ import annotations

from connectors.customcrm import PAGE_LIMIT
from registry import MAPPINGS

RESOURCES = tuple(m.customcrm.name for m in MAPPINGS)
ID_FIELD = "Id"
CURSOR_FIELD = "UpdatedAt"
__all__ = ["CURSOR_FIELD", "ID_FIELD", "PAGE_LIMIT", "RESOURCES"]
