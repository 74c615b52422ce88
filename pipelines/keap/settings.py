"""What the Keap source reads, as data: the resources of the mapping registry (each
one's path, cursor field, the `fields` a list asks for, how it is walked), and the stages."""

from __future__ import annotations

from registry import MAPPINGS, STAGES, KeapResource

RESOURCES: tuple[KeapResource, ...] = tuple(m.keap for m in MAPPINGS)
__all__ = ["CONFIRM_PER_RUN", "RESOURCES", "STAGES", "KeapResource"]

# a full pass confirms at most this many deletions a run, one direct read each
CONFIRM_PER_RUN = 500
