"""What the Customcrm source reads, as data."""

from __future__ import annotations

RESOURCES = ("customers", "contacts", "orders", "products")
ID_FIELD = "Id"
CURSOR_FIELD = "UpdatedAt"
PAGE_LIMIT = 500  # the contract's maximum
