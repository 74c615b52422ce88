"""What a sync takes from the hooks' spool, and when it counts as taken into account.

Any sync with a spool beside its state (triggered by hooks, or the scheduled one) takes
the pending events: the deletions among them go to the ingest as hints (confirmed with
Keap by a direct read answering 404 before they are recorded, at most CONFIRM_PER_RUN a
resource a run: the rest wait for the next run), and the edits need nothing more, the
incremental extract reads them. Once the run read Keap without an error, the events up to
its start are consumed: the changes they announced were committed in Keap before Keap sent
them, so that read saw them. A run that failed, or could not read Keap, leaves them for the
next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from connectors.errors import redact
from crmsync.hooks.files import SPOOL_FILE
from crmsync.hooks.spool import Batch, Spool
from crmsync.run import SyncOutcome
from pipelines.ingest import IngestOptions
from pipelines.keap.settings import CONFIRM_PER_RUN


class SpoolRun:
    def __init__(self, spool: Spool, triggered: bool) -> None:
        self.spool = spool
        self.triggered = triggered
        self.batch: Batch = spool.take(CONFIRM_PER_RUN)

    @classmethod
    def beside(cls, state_dir: Path, triggered: bool = False) -> SpoolRun | None:
        """The run's share of the spool in `state_dir`, or None where there is no spool."""
        path = state_dir / SPOOL_FILE
        return cls(Spool(path), triggered) if Spool.exists(path) else None

    @property
    def empty(self) -> bool:
        return self.batch.events == 0

    def ingest(self, options: IngestOptions) -> IngestOptions:
        """The run's ingest options with the deletions to confirm; a triggered run leaves
        the full pass's schedule to the scheduled runs."""
        return replace(
            options,
            deletion_hints=self.batch.deletions,
            counts_toward_full_pass=options.counts_toward_full_pass and not self.triggered,
        )

    def finish(self, outcome: SyncOutcome) -> bool:
        """Consume the batch when the run read Keap; True if it did."""
        keap_read = not any(report.errors for report in outcome.extract if report.system == "keap")
        if outcome.status == "failed" or not keap_read or not outcome.extract:
            return False
        self.spool.consume(self.batch.upto)
        return True

    def close(self) -> None:
        self.spool.close()


def run_triggered(
    spool: Spool,
    sync: Callable[[IngestOptions], SyncOutcome],
    base: IngestOptions | None = None,
    log: Callable[[str], None] | None = None,
) -> bool:
    """One run the trigger started: `sync` (the ordinary incremental sync, given its ingest
    options) over what the spool holds; True when the events were taken into account."""
    spooled = SpoolRun(spool, triggered=True)
    if spooled.empty:  # a scheduled sync took them meanwhile
        return True
    started = time.monotonic()
    outcome = sync(spooled.ingest(base or IngestOptions()))
    handled = spooled.finish(outcome)
    if log:
        log(describe(spooled.batch, outcome, time.monotonic() - started))
    return handled


def describe(batch: Batch, outcome: SyncOutcome, seconds: float) -> str:
    """`sync after 3 events (contact.edit 2, contact.delete 1): ok in 14.2 s, 2 writes, 1
    deletion confirmed` — one line, no record data."""
    head = f"sync after {batch.summary()}: {outcome.status} in {seconds:.1f} s"
    if outcome.quiet_since:
        return f"{head}, nothing changed since run {outcome.quiet_since} (dbt and the push skipped)"
    mappings = outcome.push.mappings.values()
    writes = sum(s.created + s.updated + s.deleted for s in mappings)
    confirmed = sum(c.deleted for r in outcome.extract if r.system == "keap" for c in r.resources.values())
    parts = [head, f"{writes} write{'s' if writes != 1 else ''}"]
    if confirmed:
        parts.append(f"{confirmed} Keap deletion{'s' if confirmed != 1 else ''} recorded")
    line = ", ".join(parts)
    problems = outcome.problems + ([outcome.error] if outcome.error else [])
    return line + (f"; {redact(problems[0])}" if problems else "")
