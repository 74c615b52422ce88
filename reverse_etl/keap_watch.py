"""No lost update on Keap, which has no ETag: before each chunk of writes, re-read what
Keap changed, and hold back the writes to records edited since the extract read them.

Keap takes writes at its own pace (240 a minute for a key after a burst): 1,000 writes
take minutes, so one re-read before them all would leave a window of minutes in which a
user's edit is overwritten. Here the window is a few seconds:

- the writes go in chunks sized so that one takes about `WINDOW_S` at the pace the last
  one went, and a write whose turn comes later than `WINDOW_S` after the re-read that
  cleared it is deferred to the next chunk, behind a new re-read;
- each re-read lists only what changed since the previous one (the first: since the
  extract's cursor), narrowed to id and update time where Keap allows it, newest first
  and stopping past the cursor elsewhere: one small list request per chunk.

The next re-read starts from the newest update time the last one saw, less a margin for
Keap's own servers' clocks, so it needs no agreement between Keap's clock and ours: any
edit made after a re-read was answered is stamped later than what that re-read saw.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connectors.keap import KeapClient
from registry import keap_resource
from support.times import parse_time

WINDOW_S = 4.0  # a write goes out at most about this long after the read that cleared it
CHUNK_FIRST = 8
CHUNK_MAX = 50
MARGIN = timedelta(seconds=2)  # Keap's servers' clocks may differ from each other by this much


@dataclass
class ReadToWrite:
    """Seconds from the start of the re-read that cleared a write to the write's answer:
    an upper bound of the window in which an edit in Keap could be overwritten."""

    gaps: list[float] = field(default_factory=list)
    rereads: int = 0

    def merge(self, other: ReadToWrite) -> ReadToWrite:
        return ReadToWrite(self.gaps + other.gaps, self.rereads + other.rereads)

    def as_dict(self) -> dict[str, Any]:
        return {
            "writes": len(self.gaps),
            "rereads": self.rereads,
            "max_s": round(max(self.gaps), 3) if self.gaps else None,
            "median_s": round(statistics.median(self.gaps), 3) if self.gaps else None,
        }


class KeapWatch:
    """What Keap changed since the extract, re-read before each chunk of writes."""

    def __init__(self, keap: KeapClient, resource: str, since: datetime | None, stats: ReadToWrite) -> None:
        self.keap, self.resource = keap, resource
        self.since = since  # records updated at or after it are (re)read
        self.spec = keap_resource(resource)
        self.stamp = self.spec.cursor_field
        self.changed: dict[str, datetime] = {}
        self.cleared_at: float | None = None  # time.monotonic() when the last re-read was sent
        self.lenient = False
        self.stats = stats

    def reread(self, expected: int) -> float:
        """List what changed since the last re-read; return when its first page was sent (the
        moment from which an edit may not be in it)."""
        fields = ["id", self.stamp] if self.spec.narrowable else None
        # whole records elsewhere: a page about the size of what can have changed since
        page_size = 1000 if fields or self.cleared_at is None else min(1000, max(50, 2 * expected))
        newest, started = None, None
        pages = self.keap.changed_since(self.resource, self.since, fields=fields, page_size=page_size)
        for items, _ in pages:
            if started is None:
                started = self.keap.sent_at() or time.monotonic()
            for item in items:
                when = parse_time(item.get(self.stamp))
                if item.get("id") and when is not None:
                    key = str(item["id"])
                    self.changed[key] = max(when, self.changed.get(key, when))
                    newest = when if newest is None else max(newest, when)
        if newest is not None:
            self.since = max(self.since, newest - MARGIN) if self.since else newest - MARGIN
        self.cleared_at = started if started is not None else time.monotonic()
        self.stats.rereads += 1
        return self.cleared_at

    def edited(self, row: dict[str, Any]) -> bool:
        """Was the row's Keap record changed after the extract read it?"""
        newer = self.changed.get(row["keap_id"] or "")
        return (
            bool(row["keap_id"])
            and newer is not None
            and (row["keap_updated_at"] is None or newer > row["keap_updated_at"])
        )

    def fresh(self) -> bool:
        """May a write go now, cleared by the last re-read? (Always, for one chunk, after a
        chunk whose every write came too late: a slow answer never stops the push.)"""
        if self.lenient:
            return True
        return self.cleared_at is not None and time.monotonic() - self.cleared_at <= WINDOW_S

    def answered(self) -> None:
        """A write cleared by the last re-read was answered: note how long after the read."""
        if self.cleared_at is not None:
            self.stats.gaps.append(time.monotonic() - self.cleared_at)


def next_chunk_size(current: int, written: int, seconds: float) -> int:
    """As many writes as went through in about WINDOW_S at the last chunk's pace."""
    if written <= 0 or seconds <= 0:
        return current
    return max(1, min(CHUNK_MAX, int(WINDOW_S * written / seconds)))
