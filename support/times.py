"""Timestamps as the APIs write them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """An API timestamp as UTC: Keap's `...Z` and `...000+0000` forms, and RFC 3339;
    None when absent or unparseable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
