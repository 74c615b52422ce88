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
from dataclasses import dataclass, replace
from pathlib import Path

from connectors.errors import ApiError, redact
from connectors.keap_hooks import hooks_client
from crmsync.hooks.files import SPOOL_FILE, hidden, hook_url, load_config, path_secret
from crmsync.hooks.spool import Batch, Spool
from crmsync.hooks.subscriptions import Subscriptions, hooks_api
from crmsync.lock import StateBusy
from crmsync.run import Endpoints, SyncOutcome
from crmsync.settings import Settings
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
    try:
        outcome = sync(spooled.ingest(base or IngestOptions()))
    except StateBusy as exc:  # a scheduled sync (or a plan) holds the state: the events wait
        if log:
            log(f"sync after {spooled.batch.summary()}: not started: {exc}")
        return False
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


@dataclass(frozen=True)
class Checked:
    line: str
    ok: bool


def scheduled_check(settings: Settings, found: Endpoints | None = None) -> Checked | None:
    """With every sync where hooks are registered: re-verify what Keap made Inactive, and
    say in one line where the subscriptions stand; None where hooks are not registered.
    It never fails the sync: a failure is the line."""
    if settings.sandbox_mode:
        return None
    try:
        config = load_config(settings.state_dir)
        secret = path_secret(settings.state_dir, create=False)
    except (OSError, ValueError) as exc:
        return Checked(f"hooks: {exc}", ok=False)
    if config is None or secret is None:
        return None
    try:
        api = hooks_client(found.keap, settings.keap_api_url) if found else hooks_api(settings)
        try:
            report = Subscriptions(api, secret, hook_url(config.url, secret)).check()
        finally:
            api.close()
        return Checked(report.line(), report.ok)
    except (ApiError, OSError, ValueError) as exc:
        line = f"hooks: the check failed ({exc}); the sync goes on, polling brings Keap's changes"
        return Checked(hidden(redact(line), secret), ok=False)


def scheduled_sync(
    settings: Settings,
    found: Endpoints,
    sync: Callable[[IngestOptions], SyncOutcome],
    ingest: IngestOptions,
    on_check: Callable[[Checked], None] | None = None,
) -> SyncOutcome:
    """`crmsync sync` where hooks may be registered: the check (its line to `on_check`),
    then `sync` with the spool's deletions, consumed once it read Keap. Without hooks
    (no files in the state folder, or the sandboxes) it is `sync(ingest)` and nothing else."""
    checked = scheduled_check(settings, found)
    if checked is not None and on_check is not None:
        on_check(checked)
    spooled = None if settings.sandbox_mode else SpoolRun.beside(settings.state_dir)
    if spooled is None:
        return sync(ingest)
    try:
        outcome = sync(spooled.ingest(ingest))
        spooled.finish(outcome)
    finally:
        spooled.close()
    return outcome
