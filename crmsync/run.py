"""The run that ties the steps together, and the configured endpoints it talks to.

The run knows nothing of the bundled sandboxes: with no endpoint configured, the CLI
starts them and hands the run their endpoints (crmsync.demo).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.customcrm import CustomcrmClient, customcrm_client
from connectors.errors import WriterLockLost, redact
from connectors.keap import KeapClient, keap_client
from connectors.tokens import TokenStore
from crmsync.dbt import RAN_SHORT, target_dir
from crmsync.dbt import build as dbt_build
from crmsync.failures import failure_line
from crmsync.filemodes import secure_state
from crmsync.fingerprint import input_fingerprint
from crmsync.lock import lost_writer_lock, shared
from crmsync.settings import ConfigurationError, Settings
from pipelines.common import ExtractReport, ProgressCallback
from pipelines.ingest import IngestOptions, extract
from registry import MAPPINGS, mapping_names
from reverse_etl.keap_watch import CHUNK_FIRST
from reverse_etl.push import ProgressCallback as PushProgress
from reverse_etl.push import Pusher, PushResult, merge_results
from reverse_etl.state import (
    connect,
    ensure_state,
    finish_run,
    last_quiet,
    new_run_id,
    record_clocks,
    record_quiet,
    retention,
    start_run,
)
from support.warehouse import Connection
from support.warehouse import errors as warehouse_errors
from support.warehouse import url as warehouse_url
from support.warehouse import use as use_warehouse

PUSH_SELECTION = "+exposure:push_customcrm +exposure:push_keap"


# which mappings read which resource: a mapping whose records could not all be read is not
# pushed that run (a write decided on stale data could overwrite an edit it never saw)
RESOURCE_MAPPINGS = {("keap", m.keap.name): m.name for m in MAPPINGS} | {
    ("customcrm", m.customcrm.name): m.name for m in MAPPINGS
}
for _reader in MAPPINGS:  # the stages are read for the mapping that compares stages
    if any(f.compare_as == "stage" for f in _reader.fields):
        RESOURCE_MAPPINGS[("keap", "stages")] = _reader.name


@dataclass
class Endpoints:
    keap: KeapClient
    customcrm: CustomcrmClient
    sandbox: object | None = None  # the running Sandboxes in sandbox mode
    description: str = ""
    urls: dict[str, str] = field(default_factory=dict)  # system -> the API's base URL (redacted)

    def close(self) -> None:
        self.keap.close()
        self.customcrm.close()


def configured_keap(settings: Settings) -> KeapClient:
    """The configured Keap: a key, or OAuth with the rotated tokens in the state folder."""
    return keap_client(
        base_url=settings.keap_api_url,
        api_key=settings.keap_api_key,
        access_token=settings.keap_access_token,
        refresh_token=settings.keap_refresh_token,
        client_id=settings.keap_client_id,
        client_secret=settings.keap_client_secret,
        token_url=settings.keap_token_url,
        token_store=TokenStore(settings.state_dir / "keap_oauth.json"),
    )


@contextmanager
def endpoints(settings: Settings) -> Iterator[Endpoints]:
    """The configured Keap and Customcrm (the demo's are crmsync.demo's)."""
    settings.validate()
    if settings.sandbox_mode:
        raise ConfigurationError(
            "no Keap or Customcrm endpoint is configured: set KEAP_API_URL and CUSTOMCRM_API_URL "
            "(the bundled sandboxes are the CLI's: crmsync sync)"
        )
    insecure = settings.insecure_http_warning()
    if insecure:
        print(f"crmsync: {insecure}", file=sys.stderr)
    assert settings.customcrm_api_url and settings.customcrm_api_token  # validate() said so
    found = Endpoints(
        keap=configured_keap(settings),
        customcrm=customcrm_client(base_url=settings.customcrm_api_url, token=settings.customcrm_api_token),
        description=redact(f"Keap at {settings.keap_api_url}, Customcrm at {settings.customcrm_api_url}"),
        urls={"keap": redact(settings.keap_api_url), "customcrm": redact(settings.customcrm_api_url)},
    )
    try:
        yield found
    finally:
        found.close()


def run_extract(
    settings: Settings, found: Endpoints, options: IngestOptions, progress: ProgressCallback | None = None
) -> list[ExtractReport]:
    use_warehouse(settings.warehouse)
    return extract(settings.db_path, settings.state_dir, found.keap, found.customcrm, options, progress,
                   warehouse=warehouse_url())  # fmt: skip


MAX_ROUNDS = 5


@dataclass
class SyncOutcome:
    run_id: str
    rounds: int
    extract: list[ExtractReport]
    push: PushResult
    status: str  # ok | rejected | incomplete | failed
    error: str | None = None
    quiet_since: str | None = None  # nothing changed since this run: dbt and the push were skipped
    seconds: dict[str, float] = field(default_factory=dict)  # per phase: extract, dbt, push, read_back
    exception: BaseException | None = field(default=None, repr=False)  # what failed (--debug)
    elapsed_s: float = 0.0  # the whole run, start to end
    conflicts: list[dict[str, Any]] = field(
        default_factory=list
    )  # resolved by this run (sync_state.conflicts)
    notes: list[str] = field(default_factory=list)  # Keap's quota too short, a build run again

    def as_dict(self) -> dict[str, Any]:
        """What `crmsync sync --json` prints."""
        return {"run_id": self.run_id, "status": self.status, "exit_code": self.exit_code, "rounds": self.rounds,
                "error": self.error, "quiet_since": self.quiet_since, "elapsed_s": self.elapsed_s,
                "seconds": self.seconds, "extract_errors": self.extract_errors, **self.push.as_dict(),
                "conflicts": self.conflicts, "notes": self.notes}  # fmt: skip

    @property
    def extract_errors(self) -> list[str]:
        return [error for report in self.extract for error in report.errors]

    @property
    def problems(self) -> list[str]:
        """One line each: what could not be read or pushed this run, and what to do."""
        lines = list(self.extract_errors)
        lines += [f"{mapping}: {why}" for mapping, why in self.push.errors.items()]
        for mapping, why in self.push.failures.items():
            count = self.push.mappings[mapping].failed
            lines.append(f"{mapping}: {count} write{'s' if count != 1 else ''} failed ({why}); "
                         "the next run sends them again")  # fmt: skip
        return lines

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)


# 0 everything went through; 3 some rows were rejected; 4 some resource could not be read or
# written (the other mappings went through); 1 the run failed (nothing pushed after the failure)
EXIT_CODES = {"ok": 0, "rejected": 3, "incomplete": 4, "failed": 1}


def blocked_mappings(reports: list[ExtractReport]) -> dict[str, str]:
    """mapping -> the read that failed: those mappings are not pushed this run."""
    blocked: dict[str, str] = {}
    for report in reports:
        for counts in report.resources.values():
            mapping = RESOURCE_MAPPINGS.get((report.system, counts.resource))
            if counts.error and mapping and mapping not in blocked:
                blocked[mapping] = f"{report.system}.{counts.resource} could not be read"
    return blocked


def cleaned_notes(reports: list[ExtractReport]) -> list[str]:
    """One line per resource whose records were loaded without the NUL characters they had."""
    lines = []
    for report in reports:
        for counts in report.resources.values():
            if counts.cleaned:
                more = counts.cleaned - len(counts.cleaned_fields)
                named = "; ".join(counts.cleaned_fields) + (f"; and {more} more" if more > 0 else "")
                lines.append(
                    f"{report.system}.{counts.resource}: NUL characters dropped from {counts.cleaned} "
                    f"record{'s' if counts.cleaned != 1 else ''} ({named}): the warehouse cannot hold "
                    "them; the records sync without them"
                )
    return lines


def run_sync(
    settings: Settings,
    found: Endpoints,
    variables: dict[str, object] | None = None,
    ingest: IngestOptions | None = None,
    progress: ProgressCallback | None = None,
    push_progress: PushProgress | None = None,
    dry_run: bool = False,
    rebuild: bool = False,
    run_id: str | None = None,
    on_phase: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> SyncOutcome:
    """extract -> dbt build -> push, repeated while rows wait for parents created in this
    run that the push could not fill in itself (a Customcrm child gets its new parent's id
    from the link in the same push); then one more extract and build so the link tables
    show where things stand.

    When the extract loaded nothing and nothing else the models read changed since a run
    that found nothing to do (crmsync.fingerprint), the build and the push are skipped:
    they would find nothing again. `rebuild` builds anyway. `run_id`: the id to record the
    run under (a new one by default); `on_phase` hears each phase begin (extract, dbt,
    push, read_back) and the run end (done); `on_note` hears what the run says to the
    operator: before its push, that Keap's daily quota cannot take all its writes today;
    that a build ran out of the memory the account's size suggested and was run again."""
    began = time.monotonic()
    use_warehouse(settings.warehouse)  # the DuckDB file, or CRMSYNC_WAREHOUSE's PostgreSQL, for every step
    outcome = _run_sync(settings, found, variables, ingest, progress, push_progress, dry_run, rebuild,
                        run_id or new_run_id(), on_phase or (lambda name: None),
                        on_note or (lambda line: None))  # fmt: skip
    outcome.elapsed_s = round(time.monotonic() - began, 1)
    if on_phase:
        on_phase("done")
    return outcome


def _run_sync(
    settings: Settings,
    found: Endpoints,
    variables: dict[str, object] | None,
    ingest: IngestOptions | None,
    progress: ProgressCallback | None,
    push_progress: PushProgress | None,
    dry_run: bool,
    rebuild: bool,
    run_id: str,
    on_phase: Callable[[str], None],
    on_note: Callable[[str], None],
) -> SyncOutcome:
    db_path = settings.db_path
    notes: list[str] = []
    deadline = time.monotonic() + settings.run_deadline_s  # no request is sent past it
    found.keap.deadline = found.customcrm.deadline = deadline
    # a lost writer lock on PostgreSQL stops the run before its next request and between steps
    found.keap.guard = found.customcrm.guard = lost_writer_lock
    started = False
    result = PushResult()
    pushing: Pusher | None = None
    reports: list[ExtractReport] = []
    rounds = 0
    seconds: dict[str, float] = {}

    def build(*args: Any, **kwargs: Any) -> None:
        built = dbt_build(*args, **kwargs)
        if built.note:  # run again with more memory: the operator may want to set it
            notes.append(built.note)
            on_note(built.note)

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        lost = lost_writer_lock()
        if lost is not None:
            raise WriterLockLost(lost, system="warehouse")
        if name != "fingerprint":
            on_phase(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - started, 3)

    try:
        secure_state(db_path)  # the state folder 0700, the DuckDB file 0600
        ensure_state(db_path)
        if not dry_run:
            start_run(db_path, run_id)  # also closes the rows of runs that ended without closing
            started = True
        found.keap.clock.reset()
        found.customcrm.clock.reset()
        with phase("extract"):
            reports = run_extract(settings, found, ingest or IngestOptions(), progress)
        for cleaned in cleaned_notes(reports):
            notes.append(cleaned)
            on_note(cleaned)
        # each server's clock against ours, from the extract's answers: the merge compares
        # update times on one clock
        record_clocks(db_path, run_id, clock_readings(found))
        # stale data must not decide writes: a mapping whose records could not all be read
        # is not pushed this run; the others are
        blocked = blocked_mappings(reports)
        if not (dry_run or rebuild or blocked):
            with phase("fingerprint"):
                quiet = last_quiet(db_path)
                unchanged = quiet is not None and quiet[0] == input_fingerprint(db_path, variables)
            if quiet and unchanged:
                outcome = SyncOutcome(run_id, 0, reports, result, "ok", quiet_since=quiet[1], seconds=seconds)
                _close(db_path, run_id, "ok", {"push": result.as_dict(), "quiet_since": quiet[1],
                                               "seconds": seconds})  # fmt: skip
                _retention(db_path, settings)
                return outcome
        with phase("dbt"):
            build(db_path, variables, full_refresh=rebuild)
        # before any write (and in a plan): say when Keap's quota cannot take them all today
        note = keap_quota_note(pending_writes(db_path), found.keap, settings.keap_quota_reserve)
        if note:
            notes.append(note)
            on_note(note)
        if dry_run:
            return SyncOutcome(run_id, 0, reports, result, "ok", seconds=seconds, notes=notes)
        wrote = False
        while rounds < MAX_ROUNDS:
            rounds += 1
            pusher = Pusher(db_path, run_id, found.keap, found.customcrm, push_progress, blocked=blocked,
                            keap_quota_reserve=settings.keap_quota_reserve)  # fmt: skip
            pushing = pusher
            with phase("push"):
                round_result = pusher.run()
            pushing = None
            result = merge_results(result, round_result) if rounds > 1 else round_result
            wrote = wrote or round_result.wrote
            if round_result.waiting == 0 or round_result.creates == 0:
                break
            # parents were created: read them back and let the waiting children through
            with phase("read_back"):
                read_back = run_extract(settings, found, IngestOptions(), None)
                reports += read_back
                blocked = {**blocked, **blocked_mappings(read_back)}
                build(db_path, variables, select=PUSH_SELECTION, tests=False)
        if wrote:  # show the result in the link tables
            with phase("read_back"):
                reports += run_extract(settings, found, IngestOptions(), None)
                build(db_path, variables, tests=False)
        record_clocks(db_path, run_id, clock_readings(found))  # with the push's answers too
        outcome = SyncOutcome(run_id, rounds, reports, result, _status(result, reports), seconds=seconds,
                              conflicts=recorded_conflicts(db_path, run_id), notes=notes)  # fmt: skip
        # quiet: a rerun on these inputs would write nothing. A run that wrote is quiet too
        # when the read-back shows nothing left to write (the next run then skips dbt)
        quiet_now = _nothing_left(outcome) and not (wrote and _pending(db_path))
        record_quiet(db_path, input_fingerprint(db_path, variables) if quiet_now else None, run_id)
    except KeyboardInterrupt:
        if started:
            _close(db_path, run_id, "failed", {"push": result.as_dict(), "error": "interrupted"})
        raise
    except Exception as exc:  # one line for the user, the run closed as failed; --debug: the traceback
        if pushing is not None:  # what the stopped round wrote before the failure
            result = merge_results(result, pushing.result) if rounds > 1 else pushing.result
        outcome = SyncOutcome(run_id, rounds, reports, result, "failed", failure_line(exc, db_path),
                              seconds=seconds, exception=exc, notes=notes)  # fmt: skip
        if started:
            _forget_quiet(db_path, run_id)
    if started:
        _close(db_path, run_id, outcome.status, {"push": result.as_dict(), "error": outcome.error,
                                                 "seconds": seconds, "notes": notes})  # fmt: skip
        _retention(db_path, settings)  # personal data past CRMSYNC_RETENTION_DAYS
    return outcome


def recorded_conflicts(db_path: Path, run_id: str) -> list[dict[str, Any]]:
    """The conflicts this run resolved, with both values, the base and the winner."""
    with connect(db_path) as con:
        cursor = con.execute(
            """select mapping, keap_id, customcrm_id, field, base_value, keap_value, customcrm_value, winner,
                      reason
               from sync_state.conflicts where run_id = ? order by mapping, keap_id, field""",
            [run_id],
        )
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _retention(db_path: Path, settings: Settings) -> None:
    if lost_writer_lock() is not None:  # another crmsync may be writing now: the next run blanks them
        return
    with suppress(*warehouse_errors()):  # the file locked by another program: the next run blanks it
        retention(db_path, settings.retention_days, apply=True)


def clock_readings(found: Endpoints) -> dict[str, dict[str, float]]:
    """Each server's clock against ours, as this run's answers have shown it."""
    readings = {"keap": found.keap.clock.reading(), "customcrm": found.customcrm.clock.reading()}
    return {system: reading.as_dict() for system, reading in readings.items() if reading is not None}


def _forget_quiet(db_path: Path, run_id: str) -> None:
    # when the file is locked by another program the mark stays; it is safe: it matches only
    # inputs (raw rows, state) that nothing has changed since, and this run's changes change them
    with suppress(*warehouse_errors()):
        record_quiet(db_path, None, run_id)


def _close(db_path: Path, run_id: str, status: str, summary: dict[str, Any]) -> None:
    """Close the run's row; when the file cannot be opened now (another program holds it),
    the next run closes it as failed (reverse_etl.state.start_run)."""
    with suppress(*warehouse_errors()):
        finish_run(db_path, run_id, status, summary)


@contextmanager
def scratch_copy(settings: Settings, purpose: str = "plan") -> Iterator[Settings]:
    """The settings of a throw-away copy of the DuckDB file, in a folder of its own in the state
    folder (removed at the end), copied while no crmsync writes the file (a sync is waited for
    CRMSYNC_WAIT_SECONDS): the copy is consistent, and nothing holds the real file afterwards.

    `crmsync plan` extracts and builds there, with its own vars: nothing a sync reads (the
    raw rows and dlt's cursors, the sync_* marts, the quiet-run fingerprint, dbt's
    artifacts) is touched in the real file. dlt restores its cursors from the copy.
    `crmsync docs` builds the docs site from one. On PostgreSQL the copy is of the schemas,
    in the same database (_scratch_schemas)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.warehouse:
        with _scratch_schemas(settings, purpose) as scratch:
            yield scratch
        return
    folder = Path(tempfile.mkdtemp(prefix=f"{purpose}-", dir=settings.state_dir))  # 0700
    copy = folder / settings.db_path.name
    try:
        with shared(settings.db_path, settings.wait_s):
            for suffix in ("", ".wal"):
                source = settings.db_path.with_name(settings.db_path.name + suffix)
                if source.exists():
                    _private_copy(source, copy.with_name(copy.name + suffix))
            ran_short = target_dir(settings.db_path) / RAN_SHORT  # the sync's builds ran out of the estimate
            if ran_short.exists():
                target_dir(copy).mkdir(parents=True, mode=0o700)
                _private_copy(ran_short, target_dir(copy) / RAN_SHORT)
        yield dataclasses.replace(settings, db_path=copy)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _scratch_schemas(settings: Settings, purpose: str) -> Iterator[Settings]:
    """scratch_copy on PostgreSQL: the raw schemas and sync_state copied on the server into
    schemas of a prefix of their own (`crmsync_plan_1a2b3c4d_raw_keap`, ...: support.warehouse),
    from one snapshot, while no crmsync writes on any machine (warehouse_reading); the steps
    then run on those (CRMSYNC_SCHEMA_PREFIX), with a local state folder of their own;
    everything under the prefix is dropped at the end. A connection held for the whole plan
    holds an advisory lock named after the prefix: scratch schemas whose lock nobody holds
    (a plan killed hard) are dropped by the next plan (support.warehouse.drop_stale_scratch)."""
    import uuid

    from crmsync.lock import warehouse_reading
    from support import warehouse

    assert settings.warehouse
    tenant_prefix = warehouse.prefix()
    scratch_prefix = f"{warehouse.SCRATCH}{purpose}_{uuid.uuid4().hex[:8]}_"
    folder = Path(tempfile.mkdtemp(prefix=f"{purpose}-", dir=settings.state_dir))  # 0700
    with warehouse.PostgresConnection(settings.warehouse) as holder:
        holder.execute("select pg_advisory_lock(hashtext(?))", [warehouse.SCRATCH + scratch_prefix])
        try:
            warehouse.drop_stale_scratch(holder)
            with (
                shared(settings.db_path, settings.wait_s),
                warehouse.PostgresConnection(settings.warehouse) as con,
            ):
                warehouse_reading(con, purpose, settings.wait_s)
                warehouse.copy_schemas(
                    con, ("raw_keap", "raw_customcrm", "sync_state"), tenant_prefix, scratch_prefix
                )
            with warehouse.using(settings.warehouse, scratch_prefix + tenant_prefix):
                yield dataclasses.replace(settings, db_path=folder / settings.db_path.name)
        finally:
            with suppress(*warehouse_errors()):
                warehouse.drop_schemas(holder, scratch_prefix)
            shutil.rmtree(folder, ignore_errors=True)


def _private_copy(source: Path, target: Path) -> None:
    """A copy of a state file, readable by its owner only, as all state."""
    shutil.copyfile(source, target)
    target.chmod(0o600)


def run_plan(
    settings: Settings,
    found: Endpoints,
    variables: dict[str, object] | None = None,
    ingest: IngestOptions | None = None,
    mappings: tuple[str, ...] | None = None,
) -> tuple[SyncOutcome, dict[str, Any]]:
    """What a sync would write now, worked out in a copy of the DuckDB file (scratch_copy):
    the outcome of the dry run and, read from the copy before it goes, the rows
    (crmsync.plan.plan_details)."""
    from crmsync.plan import plan_details

    with scratch_copy(settings) as scratch:
        outcome = run_sync(scratch, found, variables, ingest, dry_run=True)
        details = plan_details(scratch.db_path, mappings or mapping_names()) if outcome.error is None else {}
    return outcome, details


def _status(result: PushResult, reports: list[ExtractReport]) -> str:
    if result.errors or any(report.errors for report in reports):
        return "incomplete"
    if result.rejections:
        return "rejected"
    return "failed" if result.failed else "ok"


def _nothing_left(outcome: SyncOutcome) -> bool:
    """Nothing refused, failed, waiting, held back or stale in this run."""
    if outcome.status != "ok":
        return False
    return not any(
        s.rejected or s.waiting or s.held_back or s.failed or s.stale for s in outcome.push.mappings.values()
    )


def _pending(db_path: Path) -> bool:
    """Do the sync_* models, as last built, hold any row to write?"""
    return any(row["ready"] or row["waiting"] for row in pending_writes(db_path))


def keap_quota_note(pending: list[dict[str, Any]], keap: KeapClient, reserve: int) -> str | None:
    """One line when the Keap writes this run has ready need more of Keap's daily quota than
    is left (as Keap's last answer told it, less the reserve for reading): the estimate,
    what goes now, and when the rest does. None when they fit, or Keap did not say."""
    left, resets = keap.quota()
    writes = sum(int(row["ready"]) for row in pending if row["target"] == "keap")
    if left is None or writes == 0:
        return None
    needed = writes + math.ceil(writes / CHUNK_FIRST) + len(MAPPINGS) + 1  # re-reads, read-back
    room = left - reserve
    if needed <= room:
        return None
    now = max(0, room - math.ceil(max(room, 0) / CHUNK_FIRST))
    return (f"Keap's daily request quota: this run needs about {needed} Keap requests ({writes} writes, "
            f"their re-reads and the read-back), {left} are left today and {reserve} kept for reading "
            f"(CRMSYNC_KEAP_QUOTA_RESERVE): about {now} writes go now, the rest in the runs after "
            f"{resets}; nothing written is written again")  # fmt: skip


def pending_writes(db_path: Path) -> list[dict[str, object]]:
    """What the sync_* models hold now, per mapping, target and op."""
    models = [("customcrm", f"sync_customcrm__{m.name}", m.name) for m in MAPPINGS]
    models += [("keap", f"sync_keap__{m.keap.name}", m.name) for m in MAPPINGS]
    union = " union all ".join(
        f"select '{m}' as mapping, '{t}' as target, op, status from main.{model}" for t, model, m in models
    )
    with connect(db_path) as con:  # dbt-duckdb may still hold this process's connection
        rows = con.execute(
            f"""select mapping, target, op, count(*) filter (where status = 'ready') as ready,
                       count(*) filter (where status = 'waiting') as waiting
                from ({union}) as pending
                group by mapping, target, op order by mapping, target, op"""
        ).fetchall()
    return [dict(zip(("mapping", "target", "op", "ready", "waiting"), r, strict=True)) for r in rows]


def sync_status(con: Connection) -> dict[str, Any]:
    """Per mapping: links (all of them), orphaned, pending, waiting, conflicts, open rejections
    and those a person set aside; and the last run (crmsync.run.run_history). `con`: a
    read-only connection taken while no crmsync writes (crmsync.readonly.reading)."""
    has_marts = con.execute(
        "select count(*) from information_schema.tables where table_schema = 'main' and table_name = 'link_contacts'"
    ).fetchone()[0]  # type: ignore[index]
    has_state = con.execute(
        "select count(*) from information_schema.tables where table_schema = 'sync_state' and table_name = 'runs'"
    ).fetchone()[0]  # type: ignore[index]
    mappings = []
    for mapping in mapping_names():
        counts: dict[str, Any] = {"mapping": mapping, "linked": 0, "orphaned": 0, "pending": 0, "waiting": 0,
                                  "conflicts": 0, "rejected": 0, "ignored": 0}  # fmt: skip
        if has_marts:
            row = con.execute(
                f"""select count(*) filter (where link_status = 'linked'),
                           count(*) filter (where link_status = 'orphaned'),
                           count(*) filter (where pending_customcrm_op is not null or pending_keap_fields is not null),
                           count(*) filter (where link_status = 'waiting')
                    from main.link_{mapping}"""
            ).fetchone()
            counts.update(zip(("linked", "orphaned", "pending", "waiting"), row or (0, 0, 0, 0), strict=True))
            counts["conflicts"] = con.execute(
                "select count(*) from main.sync_conflicts where mapping = ?", [mapping]
            ).fetchone()[0]  # type: ignore[index]
        if has_state:
            row = con.execute(
                """select count(*) filter (where ignored_at is null), count(ignored_at)
                   from sync_state.rejections where mapping = ? and resolved_at is null""",
                [mapping],
            ).fetchone()
            counts["rejected"], counts["ignored"] = row or (0, 0)
        mappings.append(counts)
    last = run_history(con, 1) if has_state else []
    return {"mappings": mappings, "last_run": last[0] if last else None}


def run_history(con: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The last `limit` runs of `crmsync sync`, newest first: id, start, end, seconds, outcome,
    exit code, counts per mapping, and the error or the run it was quiet since. A row still
    `running` seen by a reader belongs to a run that died (readers never overlap a sync:
    crmsync.lock): it is shown as interrupted; the next sync closes it so."""
    from reverse_etl.state import runs

    found = []
    for run in runs(con, limit):
        summary: dict[str, Any] = run["summary"]  # type: ignore[assignment]
        status = "interrupted" if run["status"] == "running" else str(run["status"])
        push = summary.get("push") or {}
        found.append({
            "run_id": run["run_id"], "started_at": run["started_at"], "finished_at": run["finished_at"],
            "seconds": run["seconds"], "status": status,
            "exit_code": EXIT_CODES.get(status) if status != "interrupted" else None,
            "mappings": push.get("mappings") or {}, "quiet_since": summary.get("quiet_since"),
            "error": summary.get("error"), "rejections": len(push.get("rejections") or []),
            "set_aside": len(push.get("set_aside") or []),
        })  # fmt: skip
    return found
