"""What a push did, per mapping: the counts the CLI prints and the run records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from registry import mapping_names
from reverse_etl.keap_watch import ReadToWrite

MAPPINGS = mapping_names()  # parents before children (the registry's order)

ProgressCallback = Callable[[str, str, int, int], None]
"""(mapping, target, rows done, rows in all)"""


@dataclass
class MappingSummary:
    linked: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    conflicts: int = 0
    rejected: int = 0
    waiting: int = 0
    held_back: int = 0
    failed: int = 0
    stale: int = 0  # 412: changed since read; the next run sees the newer value
    deferred: int = 0  # Keap writes left for the runs after Keap's daily quota resets


@dataclass
class PushResult:
    mappings: dict[str, MappingSummary] = field(
        default_factory=lambda: {m: MappingSummary() for m in MAPPINGS}
    )
    rejections: list[dict[str, Any]] = field(default_factory=list)
    creates: int = 0  # creates that went through: children waiting on them may now be ready
    # mapping -> why its push stopped part-way or did not start (a refused read or write of
    # one resource); the other mappings went on
    errors: dict[str, str] = field(default_factory=dict)
    # mapping -> the first reason a write of it failed (5xx, 429 past the retries, no answer)
    failures: dict[str, str] = field(default_factory=dict)
    # how long after the re-read that cleared it each Keap write was answered
    keap_read_to_write: ReadToWrite = field(default_factory=ReadToWrite)
    # rows not sent: refused before with the same payload and not due again, or set aside by a
    # person (`crmsync rejections`); they are no work for this run
    set_aside: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wrote(self) -> bool:
        return any(s.created or s.updated or s.deleted or s.linked for s in self.mappings.values())

    @property
    def waiting(self) -> int:
        return sum(s.waiting for s in self.mappings.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.mappings.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "mappings": {m: asdict(s) for m, s in self.mappings.items()},
            "rejections": self.rejections,
            "errors": self.errors,
            "failures": self.failures,
            "keap_read_to_write": self.keap_read_to_write.as_dict(),
            "set_aside": self.set_aside,
        }


def merge_results(first: PushResult, later: PushResult) -> PushResult:
    """Two rounds of one sync as one: counts add up, except rows still waiting, which are
    what the later round left."""
    merged = PushResult(
        rejections=first.rejections + later.rejections,
        creates=first.creates + later.creates,
        errors={**first.errors, **later.errors},
        failures={**later.failures, **first.failures},
        keap_read_to_write=first.keap_read_to_write.merge(later.keap_read_to_write),
        set_aside=first.set_aside + [r for r in later.set_aside if r not in first.set_aside],
    )
    for mapping in MAPPINGS:
        a, b = asdict(first.mappings[mapping]), asdict(later.mappings[mapping])
        summed = {k: a[k] + b[k] for k in a}
        summed["waiting"] = b["waiting"]
        summed["deferred"] = b["deferred"]  # what the later round left, as for waiting
        summed["conflicts"] = a["conflicts"]
        merged.mappings[mapping] = MappingSummary(**summed)
    return merged
