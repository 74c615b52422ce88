"""Timestamps the way each API writes them."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

_FILTER_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:?\d\d)$")


class MonotonicClock:
    """Wall-clock microseconds that never repeat or go back (one per sandbox).

    `offset_us` sets the sandbox's clock apart from the machine's (a server whose clock is
    60 s behind: -60,000,000); records are stamped and the Date header written by it. Set
    it before the records it should stamp: a clock set back keeps stamping just after its
    last stamp until it catches up (it never goes back)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()
        self.offset_us = 0

    def now_us(self) -> int:
        with self._lock:
            now = time.time_ns() // 1000 + self.offset_us
            self._last = max(now, self._last + 1)
            return self._last

    def wall(self) -> float:
        """This clock's time now, in epoch seconds (what the Date header says)."""
        return (time.time_ns() // 1000 + self.offset_us) / 1_000_000


def us_to_dt(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def keap_z(us: int) -> str:
    """`2026-11-26T18:03:36.123Z` (contacts, companies)."""
    return us_to_dt(us).strftime("%Y-%m-%dT%H:%M:%S.") + f"{(us // 1000) % 1000:03d}Z"


def keap_plus0000(us: int) -> str:
    """`2026-11-26T18:03:36.123+0000` (opportunities, products): no colon in the zone."""
    return us_to_dt(us).strftime("%Y-%m-%dT%H:%M:%S.") + f"{(us // 1000) % 1000:03d}+0000"


def rfc3339_us(us: int) -> str:
    """Customcrm: `2026-11-26T18:03:36.123456Z`."""
    return us_to_dt(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    """Either Keap form, or RFC 3339; a naive value is UTC."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", value):
        value = value[:-2] + ":" + value[-2:]
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def parse_filter_ts(text: str) -> int:
    """Keap filters take full ISO-8601 with milliseconds and zone, nothing else."""
    if not _FILTER_TS.match(text):
        raise ValueError(
            f"'{text}' is not a full ISO-8601 timestamp with milliseconds and a zone "
            "(e.g. 2026-01-01T00:00:00.000Z)"
        )
    return to_us(parse_ts(text))
