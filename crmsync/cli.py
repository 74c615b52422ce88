"""`crmsync`: one click group builds the settings once; commands stay thin.

Domain errors become one clean line and a non-zero exit; `--debug` shows the
traceback. A closed pipe (`crmsync sql ... | head`) ends the output quietly, exit 0.
What each command prints is rendered by crmsync.report.

Exit codes (README: Exit codes): 0 done; 1 failed (one line on stderr); 2 `plan
--detailed-exitcode` found writes pending; 3 `sync`: rows rejected, `extract`: records not
loaded; 4 incomplete: a resource could not be read or written.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from connectors.errors import FatalError, redact
from crmsync.filemodes import private_umask, secure_state
from crmsync.hooks import HooksProblem
from crmsync.hooks.cli import hooks
from crmsync.lock import StateBusy, exclusive, lost_writer_lock
from crmsync.options import dbt_vars
from crmsync.readonly import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT_S, QueryError
from crmsync.report import say
from crmsync.settings import ConfigurationError, Settings
from registry import mapping_names
from reverse_etl.state import UnknownRejection
from support.warehouse import errors as warehouse_errors
from support.warehouse import use as use_warehouse

EXIT_OK, EXIT_FAILED, EXIT_PENDING, EXIT_REJECTED, EXIT_INCOMPLETE = 0, 1, 2, 3, 4


class Context:
    def __init__(self, debug: bool) -> None:
        self.debug = debug
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
            use_warehouse(self._settings.warehouse)  # the DuckDB file, or CRMSYNC_WAREHOUSE's PostgreSQL
            secure_state(self._settings.db_path, create=False, warn=_warn)  # tighten what exists
        return self._settings


def _warn(line: str) -> None:
    say(f"crmsync: {line}", fg="yellow", err=True)


def _error(line: str) -> None:
    say(f"crmsync: {redact(line)}", fg="red", err=True)


def _tenant_option(secrets: bool) -> Any:
    """`--tenant NAME`: the command runs as that tenant of the tenants file (crmsync.tenants),
    before any other option is read (the tenant's options are their environment variables).
    The commands that only read the state (`secrets=False`) read none of its secrets."""

    def chosen(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value:
            from crmsync.tenants import apply

            apply(value, secrets=secrets)
            context = ctx.find_object(Context)
            if context is not None:
                context._settings = None  # read again, as the tenant's
        return value

    return click.option(
        "--tenant",
        metavar="NAME",
        is_eager=True,
        expose_value=False,
        callback=chosen,
        help="Run as this tenant of the tenants file (CRMSYNC_TENANTS, else tenants.toml).",
    )


def _not_with_tenant() -> None:
    """--all-tenants: refused when --tenant chose one already."""
    if os.environ.get("CRMSYNC_TENANT"):
        raise click.UsageError("--tenant and --all-tenants exclude each other")


class CrmsyncGroup(click.Group):
    """Turns domain errors into one line on stderr and exit 1 (traceback with --debug), and a
    closed pipe into a quiet exit 0, as Unix tools do."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            from crmsync.report import _silence

            _silence(err=False)
            sys.exit(0)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if "--debug" in sys.argv:
                raise
            from crmsync.failures import failure_line

            known = isinstance(ctx.obj, Context) and ctx.obj._settings is not None
            db = ctx.obj.settings.db_path if known else Path("the DuckDB file")
            from crmsync.docs_site import DocsError

            plain = isinstance(
                exc,
                ConfigurationError
                | FatalError
                | StateBusy
                | QueryError
                | UnknownRejection
                | DocsError
                | HooksProblem,
            )
            _error(str(exc) if plain else failure_line(exc, db))
            sys.exit(1)


@click.group(cls=CrmsyncGroup)
@click.version_option(package_name="crmsync", prog_name="crmsync", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Keep Keap and Customcrm in sync, both ways.

    Exit codes: 0 done; 1 failed (one line on stderr); 2 `plan --detailed-exitcode`: writes
    pending; 3 `sync`: rows rejected (listed); 4 incomplete: a resource could not be read or
    written (named)."""
    private_umask()  # the state holds personal data and tokens: whatever is created is the owner's only
    if debug:  # dbt's log file gets every SQL statement too
        os.environ["CRMSYNC_DBT_LOG_LEVEL"] = "debug"
    ctx.obj = Context(debug)


def _me() -> str:
    """How to call crmsync again from here: `crmsync` when that is what PATH finds, else the path
    this one was started by (`.venv/bin/crmsync` after `make sync`)."""
    started = Path(sys.argv[0])
    if started.name != "crmsync":
        return "crmsync"
    found = shutil.which("crmsync")
    if found and Path(found).resolve() == started.resolve():
        return "crmsync"
    relative = os.path.relpath(started)
    return relative if not relative.startswith("..") else str(started.absolute())


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the sandboxes keep their SQLite files [default: CRMSYNC_SANDBOX_DIR, else sandbox/ "
    "beside CRMSYNC_DB: data/sandbox].",
)
@click.option("--keap-port", type=int, default=8765, show_default=True)
@click.option("--customcrm-port", type=int, default=8766, show_default=True)
@click.option("--size", type=int, default=None, help="Demo records per kind (default 25 on first start).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--customcrm-share",
    type=float,
    default=0.08,
    show_default=True,
    help="Share of the Keap records that already exist in Customcrm (1.0: both sides full).",
)
@click.option("--reset", is_flag=True, help="Delete the sandboxes' data first.")
@click.option(
    "--keap-limits",
    type=click.Choice(["published", "off"]),
    default="published",
    show_default=True,
    help="Keap's published rate limits, or none.",
)
@click.option(
    "--customcrm-limits", type=click.Choice(["default", "off"]), default="default", show_default=True
)
@click.pass_obj
def sandbox(
    obj: Context,
    data_dir: Path | None,
    keap_port: int,
    customcrm_port: int,
    size: int | None,
    seed: int,
    customcrm_share: float,
    reset: bool,
    keap_limits: str,
    customcrm_limits: str,
) -> None:
    """Serve the Keap and Customcrm sandboxes in the foreground, with demo data."""
    from sandbox.bundle import DEMO_SIZE, Sandboxes

    data_dir = data_dir or obj.settings.sandbox_dir

    if reset:
        for name in ("keap.sqlite3", "customcrm.sqlite3"):
            for suffix in ("", "-wal", "-shm"):
                (data_dir / (name + suffix)).unlink(missing_ok=True)
    boxes = Sandboxes(data_dir, keap_port=keap_port, customcrm_port=customcrm_port)
    if boxes.is_empty or size is not None:
        if not boxes.is_empty:
            raise click.UsageError("--size fills empty sandboxes only: add --reset")
        summary = boxes.seed_demo(size or DEMO_SIZE, seed, customcrm_share)
        click.echo(f"demo data (seed {seed}): Keap {summary.keap}, Customcrm {summary.customcrm}")
    boxes.configure(keap={"limits": keap_limits}, customcrm={"limits": customcrm_limits})
    boxes.start()
    creds = boxes.keap.credentials
    click.echo(
        "\n".join(
            [
                f"Keap sandbox       {boxes.keap_url}",
                f"  KEAP_API_URL={boxes.keap_url}",
                f"  KEAP_API_KEY={creds.api_key}",
                f"  OAuth: KEAP_TOKEN_URL={boxes.keap_root}/token KEAP_CLIENT_ID={creds.client_id} "
                f"KEAP_CLIENT_SECRET={creds.client_secret}",
                f"Customcrm sandbox  {boxes.customcrm_url}  (contract: {boxes.customcrm_url}/openapi.yaml)",
                f"  CUSTOMCRM_API_URL={boxes.customcrm_url}",
                f"  CUSTOMCRM_API_TOKEN={boxes.customcrm.credentials.token}",
                f"Data in {data_dir}/. Admin: {boxes.keap_root}/_sandbox/stats. Ctrl-C stops.",
            ]
        )
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        boxes.stop()


@main.command()
@_tenant_option(secrets=True)
@click.option("--full", is_flag=True, help="Also list every Keap id and mark records deleted in Keap.")
@click.option(
    "--full-every",
    type=int,
    default=24,
    envvar="CRMSYNC_KEAP_FULL_PASS_EVERY",
    show_default=True,
    help="Run that full pass every N runs.",
)
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.pass_obj
def extract(obj: Context, full: bool, full_every: int, quiet: bool) -> None:
    """Read what changed in Keap and Customcrm into the DuckDB file (the ingest step alone).

    Exit 0 when everything was loaded, 3 when some records could not be (listed in
    raw_*.ingest_rejections), 1 on failure."""
    from crmsync.demo import open_endpoints
    from crmsync.progress import extract_progress
    from crmsync.run import run_extract
    from pipelines.ingest import IngestOptions

    settings = obj.settings
    with exclusive(settings.db_path, "extract", settings.wait_s), open_endpoints(settings) as found:
        found.keap.guard = found.customcrm.guard = lost_writer_lock  # as a sync's (crmsync.run)
        if not quiet:
            say(f"extracting from {found.description} into {settings.db_path}", err=True)
        with extract_progress(quiet) as display:
            reports = run_extract(settings, found, IngestOptions(full, full_every), display.extract)
    code = EXIT_OK
    for report in reports:
        if not quiet:
            say(
                f"{report.system}: {report.requests} requests ({report.retries} retried, "
                f"{report.rate_limited} rate-limited){' with a full pass' if report.full_pass else ''}"
            )
            for counts in report.resources.values():
                say(
                    f"  {counts.resource:<14} {counts.records:>8} records {counts.pages:>5} pages"
                    f"{f'  {counts.rejected} rejected' if counts.rejected else ''}"
                    f"{f'  {counts.deleted} deleted' if counts.deleted else ''}"
                    f"{f'  {counts.cleaned} without NUL characters' if counts.cleaned else ''}"
                )
        if any(c.rejected for c in report.resources.values()) and code == EXIT_OK:
            code = EXIT_REJECTED
        for error in report.errors:
            _error(error)
            code = EXIT_FAILED
    if code == EXIT_REJECTED and not quiet:
        say(
            "some records could not be loaded: see raw_keap.ingest_rejections / "
            "raw_customcrm.ingest_rejections",
            err=True,
        )
    sys.exit(code)


def _sync_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
            click.option(
                "--quiet", is_flag=True, help="No progress: only errors and one line with the outcome."
            ),
            click.option("--full", is_flag=True, help="Also run Keap's full pass that finds deletions."),
            click.option(
                "--full-every",
                type=int,
                default=24,
                envvar="CRMSYNC_KEAP_FULL_PASS_EVERY",
                show_default=True,
                help="Run that full pass every N runs.",
            ),
            click.option(
                "--conflict-policy",
                type=click.Choice(["newest", "keap", "customcrm"]),
                envvar="CRMSYNC_CONFLICT_POLICY",
                help="Who wins a conflict, for every mapping.",
            ),
            click.option(
                "--vars",
                "raw_vars",
                envvar="CRMSYNC_VARS",
                help="dbt vars as JSON, e.g. '{\"create_in_keap\": true}'.",
            ),
        ]
    ):
        command = option(command)
    return command


@main.command()
@_tenant_option(secrets=True)
@_sync_options
@click.option(
    "--rebuild",
    is_flag=True,
    help="Run dbt and the push even when nothing changed since the last quiet run, re-merging every pair.",
)
@click.option(
    "--all-tenants", is_flag=True, help="Sync every tenant of the tenants file, each in a process of its own."
)
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=2,
    envvar="CRMSYNC_PARALLEL_TENANTS",
    show_default=True,
    help="With --all-tenants: at most this many tenants at once.",
)
@click.pass_context
def sync(
    ctx: click.Context,
    as_json: bool,
    quiet: bool,
    full: bool,
    full_every: int,
    conflict_policy: str | None,
    raw_vars: str | None,
    rebuild: bool,
    all_tenants: bool,
    parallel: int,
) -> None:
    """Extract, model and push: converge Keap and Customcrm in one command.

    Exit 0 when everything went through (rows refused before and unchanged are no work), 3
    when some rows were rejected (listed), 4 when a resource could not be read or written
    (named; the other mappings went through), 1 on failure. Outside a terminal every line
    starts with the time and the run id; --quiet prints only errors, refused rows and the
    run's one-line outcome. With --all-tenants: one line per tenant as it ends, then the
    worst exit code of them all (1, then 4, then 3)."""
    obj: Context = ctx.obj
    if all_tenants:
        _not_with_tenant()
        passed = [f"--{name.replace('_', '-')}" for name in ("full", "rebuild") if ctx.params[name]]
        for name, flag in (("conflict_policy", "--conflict-policy"), ("raw_vars", "--vars"),
                           ("full_every", "--full-every")):  # fmt: skip
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                passed += [flag, str(ctx.params[name])]  # the command line's, over each tenant's own
        sys.exit(_sync_all_tenants(passed, parallel, as_json, quiet))
    from crmsync.demo import open_endpoints
    from crmsync.failures import failure_line
    from crmsync.hooks.runs import scheduled_sync
    from crmsync.progress import RunDisplay
    from crmsync.report import emit_json, run_line, stamped, sync_summary
    from crmsync.run import run_sync
    from pipelines.ingest import IngestOptions
    from reverse_etl.state import new_run_id

    run_id = new_run_id()
    variables = dbt_vars(conflict_policy, raw_vars)
    with nullcontext() if as_json else stamped(run_id):
        try:
            settings = obj.settings
            with exclusive(settings.db_path, "sync", settings.wait_s), open_endpoints(settings) as found:
                if not (quiet or as_json):
                    say(f"syncing {found.description} (state: {settings.db_path})", err=True)
                with RunDisplay(quiet or as_json) as display:
                    outcome = scheduled_sync(  # with the hooks' check and spool where they are registered
                        settings,
                        found,
                        lambda ingest: run_sync(
                            settings,
                            found,
                            variables,
                            ingest,
                            display.extract,
                            display.push,
                            rebuild=rebuild,
                            run_id=run_id,
                            on_phase=display.phase,
                            on_note=display.note,
                        ),
                        IngestOptions(full_pass=full, full_pass_every=full_every),
                        on_check=lambda checked: _hooks_line(checked, quiet or as_json),
                    )
        except Exception as exc:  # before the run could start: the lock, the settings, the sandboxes
            if obj.debug:
                raise
            line = failure_line(exc, obj.settings.db_path if obj._settings else Path("the state file"))
            if isinstance(exc, StateBusy | ConfigurationError):
                line = str(exc)
            line = redact(line)
            if as_json:
                emit_json({"run_id": run_id, "status": "failed", "exit_code": EXIT_FAILED, "error": line})
            _error(line)
            sys.exit(EXIT_FAILED)
        if outcome.exception is not None and obj.debug:
            traceback.print_exception(outcome.exception, file=sys.stderr)
        result = outcome.as_dict()
        if as_json:
            emit_json(result)
        else:
            sync_summary(result, quiet=quiet)
        for problem in outcome.problems:
            _error(problem)
        if outcome.error:
            _error(outcome.error)
        if not as_json:
            say(run_line(result), fg=None if outcome.status == "ok" else "yellow")
            if found.sandbox is not None and not quiet:
                where = (
                    ("the warehouse       ", redact(settings.warehouse))
                    if settings.warehouse
                    else ("the DuckDB file     ", settings.db_path)
                )
                say(NEXT_STEPS.format(where=where[0], db=where[1], me=_me()))
    sys.exit(outcome.exit_code)


def _sync_all_tenants(passed: list[str], parallel: int, as_json: bool, quiet: bool) -> int:
    """Every tenant's `crmsync sync --tenant NAME`, `parallel` at once (crmsync.tenant_runs):
    one line per tenant as it ends (its errors and refused rows before it, prefixed with its
    name), then one line for them all; the worst exit code."""
    import time

    from crmsync.report import emit_json, run_line, stamped
    from crmsync.tenant_runs import overall_exit, stop_all, sync_all, tenant_views
    from crmsync.tenants import load, tenants_file

    try:
        tenants = list(load().values())
    except ConfigurationError as exc:  # no tenant to run: `--json` still gets its document
        if as_json:
            emit_json({"exit_code": EXIT_FAILED, "error": str(exc), "tenants": []})
        raise
    started = time.monotonic()
    if not (quiet or as_json):
        say(f"syncing {len(tenants)} tenants of {tenants_file()}, {parallel} at once", err=True)

    def heard(run: Any) -> None:
        if as_json:
            return
        error = run.error
        run_id = run.result.get("run_id") if run.result else None
        with stamped(run_id or "-"):  # in a log: the time and the tenant's run id, as a single sync's lines
            for line in run.stderr:  # the tenant's own lines: its refused rows, its problems
                line = line.removeprefix("crmsync: ")
                if line.strip() and line != error:
                    say(f"{run.tenant}: {line}", err=True)
            if run_id and "mappings" in run.result and not error:
                say(f"{run.tenant}: {run_line(run.result)}", fg=None if run.exit_code == 0 else "yellow")
            else:  # what failed, in the tenant's own line
                what = f"run {run_id} " if run_id else ""
                say(f"{run.tenant}: {what}failed (exit {run.exit_code}) in {run.seconds:.1f} s: {error}",
                    fg="red")  # fmt: skip

    # stopped (SIGTERM: a service manager, a scheduler's cancel), the tenants' syncs stop too
    def stopped(signum: int, frame: Any) -> None:
        stop_all()
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        done = sync_all(tenants, passed, parallel, heard)
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = overall_exit(done)
    views = tenant_views(tenants)  # PostgreSQL: all_tenants.<table> across the tenants' marts
    if as_json:
        emit_json({"exit_code": code, "tenants": [run.as_dict() for run in done], "views": views})
        return code
    if not quiet:
        for line in views:
            with stamped("all-tenants"):
                say(line, err=True)
    failed = [run.tenant for run in done if run.exit_code != 0]
    tail = f"; not ok: {', '.join(failed)}" if failed else ""
    with stamped("all-tenants"):
        say(f"tenants: {len(done) - len(failed)} of {len(done)} ok in {time.monotonic() - started:.1f} s{tail} "
            f"(exit {code})", fg=None if code == 0 else "yellow")  # fmt: skip
    return code


def _status_all_tenants(as_json: bool, wait_s: float) -> int:
    """One line per tenant: its mappings' counts summed and its last run; a tenant whose
    state cannot be read says why in its line, and the exit is 1."""
    from crmsync.readonly import reading
    from crmsync.report import emit_json, run_history_line, table
    from crmsync.run import sync_status
    from crmsync.tenants import load, reading_as

    counts = ["linked", "orphaned", "pending", "waiting", "conflicts", "rejected", "ignored"]
    found: list[dict[str, Any]] = []
    for tenant in load().values():
        where = f"schemas {tenant.schema_prefix}*" if tenant.schema_prefix else str(tenant.state)
        row: dict[str, Any] = {"tenant": tenant.name, "state": where, "error": None}
        if not tenant.synced():
            found.append({**row, **dict.fromkeys(counts, 0), "last_run": None})
            continue
        try:
            with reading_as(tenant), reading(tenant.state, wait_s) as con:
                one = sync_status(con)
        except Exception as exc:  # this tenant's line says it; the others are shown
            from crmsync.failures import failure_line

            found.append({**row, **dict.fromkeys(counts), "last_run": None,
                          "error": failure_line(exc, tenant.state)})  # fmt: skip
            continue
        sums = {c: sum(m[c] for m in one["mappings"]) for c in counts}
        found.append({**row, **sums, "last_run": one["last_run"]})
    if as_json:
        emit_json(found)
    else:

        def last(row: dict[str, Any]) -> str:
            if row["error"]:
                return f"unreadable: {row['error']}"
            return run_history_line(row["last_run"]) if row["last_run"] else "no sync has run yet"

        table("tenants", ["tenant", *counts, "last run"], [[r["tenant"], *[r[c] for c in counts], last(r)]
                                                          for r in found])  # fmt: skip
    return 1 if any(row["error"] for row in found) else 0


def _hooks_line(checked: Any, quiet: bool) -> None:
    """Where the hooks stand, before the sync: always when something is wrong."""
    if not (checked.ok and quiet):
        click.secho(f"crmsync: {checked.line}", fg=None if checked.ok else "yellow", err=True)


NEXT_STEPS = """
Where to look next:
  {where}  {db}
  this run and others   {me} runs
  link tables           {me} sql "select link_status, count(*) from link_contacts group by link_status"
  why not linked        {me} sql "select keap_id, keap_name, status_reason from link_contacts where link_status <> 'linked'"
  what a sync would do  {me} plan
  the mappings' docs    {me} docs"""


@main.command()
@_tenant_option(secrets=True)
@_sync_options
@click.option(
    "--mapping",
    "only",
    multiple=True,
    type=click.Choice(mapping_names()),
    help="Only this mapping (repeatable).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Rows shown per mapping and direction (--json shows all).",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when writes are pending, 0 when none are, 1 on failure (as Terraform).",
)
@click.pass_obj
def plan(
    obj: Context,
    as_json: bool,
    quiet: bool,
    full: bool,
    full_every: int,
    conflict_policy: str | None,
    raw_vars: str | None,
    only: tuple[str, ...],
    limit: int,
    detailed_exitcode: bool,
) -> None:
    """Show what a sync would write, row by row, without writing.

    It reads both systems and builds the models in a copy of the DuckDB file (its --vars never
    touch what a sync reads), then shows per mapping and direction each record and the fields
    it would write, old -> new, conflicts and their winner, and the rows that wait or are set
    aside, with the reason. Exit 0 when it worked (with --detailed-exitcode: 0 nothing
    pending, 2 writes pending), 4 when a resource could not be read (its rows may be out of
    date), 1 on failure."""
    from crmsync.demo import open_endpoints
    from crmsync.plan import has_work
    from crmsync.report import emit_json, plan_report
    from crmsync.run import run_plan
    from pipelines.ingest import IngestOptions

    settings = obj.settings
    variables = dbt_vars(conflict_policy, raw_vars)
    with open_endpoints(settings) as found:
        if not (quiet or as_json):
            say(f"planning against {found.description}: reading both, writing nothing", err=True)
        outcome, details = run_plan(
            settings,
            found,
            variables,
            IngestOptions(full_pass=full, full_pass_every=full_every),
            only or None,
        )
    if outcome.error:
        if outcome.exception is not None and obj.debug:
            traceback.print_exception(outcome.exception, file=sys.stderr)
        if as_json:
            emit_json({"status": "failed", "error": redact(outcome.error)})
        _error(outcome.error)
        sys.exit(EXIT_FAILED)
    for problem in outcome.problems:  # a resource that could not be read: its rows may be stale
        _error(problem)
    if not as_json:
        for note in outcome.notes:  # Keap's quota cannot take all the writes today; a build ran again
            say(note, err=True)
    details = {"endpoints": found.urls, "description": found.description, **details,
               "problems": [redact(p) for p in outcome.problems], "notes": outcome.notes}  # fmt: skip
    if as_json:
        emit_json(details)
    elif not quiet:
        plan_report(details, limit)
    if outcome.problems:
        sys.exit(EXIT_INCOMPLETE)
    sys.exit(EXIT_PENDING if detailed_exitcode and has_work(details) else EXIT_OK)


@main.command()
@_tenant_option(secrets=False)
@click.option("--all-tenants", is_flag=True, help="One line per tenant of the tenants file.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def status(obj: Context, all_tenants: bool, as_json: bool) -> None:
    """Per mapping: links, orphaned, pending, waiting, conflicts, rejections (open and set aside),
    and the last run (reads the DuckDB file only; `crmsync runs` shows more runs). With
    --all-tenants: the same summed over the mappings, one line per tenant (exit 1 when a
    tenant's state could not be read)."""
    from crmsync.readonly import reading
    from crmsync.report import emit_json, run_history_line, table
    from crmsync.run import sync_status

    if all_tenants:
        _not_with_tenant()
        sys.exit(_status_all_tenants(as_json, obj.settings.wait_s))
    settings = obj.settings
    with reading(settings.db_path, settings.wait_s) as con:
        found = sync_status(con)
    if as_json:
        emit_json(found)
        return
    columns = ["mapping", "linked", "orphaned", "pending", "waiting", "conflicts", "rejected", "ignored"]
    table("status", columns, [[m[c] for c in columns] for m in found["mappings"]])
    last = found["last_run"]
    say(f"last run: {run_history_line(last)}" if last else "no sync has run yet")


@main.command()
@_tenant_option(secrets=False)
@click.option(
    "-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs."
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def runs(obj: Context, limit: int, as_json: bool) -> None:
    """The last runs of `crmsync sync`, newest first: id, start, duration, outcome, exit code and
    what each mapping saw (a run that died is shown as interrupted)."""
    from crmsync.readonly import reading, require
    from crmsync.report import emit_json, runs_table
    from crmsync.run import run_history

    settings = obj.settings
    require(settings.db_path)
    with reading(settings.db_path, settings.wait_s) as con:
        found = run_history(con, limit)
    if as_json:
        emit_json(found)
    else:
        runs_table(found)


@main.group(invoke_without_command=True)
@_tenant_option(secrets=False)
@click.option("--all", "everything", is_flag=True, help="Resolved ones too.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def rejections(ctx: click.Context, everything: bool, as_json: bool) -> None:
    """The rows a system refused: open ones (and those set aside), newest reason first.

    A refused row is sent again at once when its values change; unchanged, after a wait that
    doubles from 1 hour to 24 hours, or at the next sync after `crmsync rejections retry`.
    `crmsync rejections ignore KEY --reason ...` sets it aside until its record changes."""
    if ctx.invoked_subcommand is not None:
        return
    from crmsync.readonly import reading
    from crmsync.report import emit_json, rejections_table
    from reverse_etl.state import rejections as listed

    settings = ctx.obj.settings
    with reading(settings.db_path, settings.wait_s) as con:
        found = listed(con, everything)
    if as_json:
        emit_json(found)
    else:
        rejections_table(found, everything)


@rejections.command("retry")
@_tenant_option(secrets=False)
@click.argument("keys", nargs=-1)
@click.pass_obj
def rejections_retry(obj: Context, keys: tuple[str, ...]) -> None:
    """Send these refused rows again at the next sync, without waiting (no KEY: every open one
    not set aside). KEY: `mapping/target/record` as `crmsync rejections` lists it, or the record's id."""
    from crmsync.readonly import require
    from reverse_etl.state import retry_rejections

    settings = obj.settings
    require(settings.db_path)
    with exclusive(settings.db_path, "rejections retry", settings.wait_s):
        done = retry_rejections(settings.db_path, keys)
    if not done:
        say("no open rejections to retry")
        return
    say(
        f"the next sync sends {len(done)} refused row{'s' if len(done) != 1 else ''} again: {', '.join(done)}"
    )


@rejections.command("ignore")
@_tenant_option(secrets=False)
@click.argument("keys", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why (recorded with your user name).")
@click.pass_obj
def rejections_ignore(obj: Context, keys: tuple[str, ...], reason: str) -> None:
    """Set refused rows aside: the sync does not send them again while their values stay the same
    (once the record changes, it is sent; `retry` undoes this). Records $USER and the reason."""
    import getpass

    from crmsync.readonly import require
    from reverse_etl.state import ignore_rejections

    settings = obj.settings
    require(settings.db_path)
    try:
        by = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        by = "unknown"
    with exclusive(settings.db_path, "rejections ignore", settings.wait_s):
        done = ignore_rejections(settings.db_path, keys, by, reason)
    say(f"set aside by {by} until their records change: {', '.join(done)}")


def _one_warehouse(tenants: list[Any]) -> str:
    """`sql --all-tenants` on PostgreSQL: every tenant on one warehouse, whose all_tenants
    views the query reads: its URL."""
    from crmsync.tenants import referenced

    urls = set()
    for tenant in tenants:
        if tenant.schema_prefix is None:
            raise QueryError(
                f"tenant {tenant.name!r} keeps its state in a DuckDB file and others in PostgreSQL: "
                "--all-tenants reads all of them in one place, either DuckDB files or one warehouse"
            )
        urls.add(tenant.environment(referenced(dict(os.environ)), secrets=False)["CRMSYNC_WAREHOUSE"])
    if len(urls) > 1:
        raise QueryError("the tenants are on several PostgreSQL warehouses: --all-tenants reads one")
    return urls.pop()


@main.command()
@_tenant_option(secrets=False)
@click.argument("query")
@click.option(
    "--format",
    "shape",
    type=click.Choice(["table", "tsv", "csv", "json"]),
    default=None,
    help="table on a terminal, tsv (tab-separated, NULL as \\N) when piped; csv (NULL empty); json.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--all-tenants",
    is_flag=True,
    help="On every tenant's file at once: a view per table across them, with a tenant column.",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many rows.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Stop the query after this many seconds.",
)
@click.option(
    "--memory-limit",
    default=DEFAULT_MEMORY_LIMIT,
    show_default=True,
    help="DuckDB memory limit for the query.",
)
@click.pass_obj
def sql(
    obj: Context,
    query: str,
    shape: str | None,
    as_json: bool,
    all_tenants: bool,
    limit: int | None,
    timeout: float,
    memory_limit: str,
) -> None:
    """Run a read-only SQL query on the DuckDB file and print the rows.

    Header first, then the rows: a table on a terminal (NULL as a dim ∅, nothing cut),
    tab-separated when piped (NULL as \\N), or --format csv|json. The query reads the DuckDB
    file and nothing else: no other file, URL or extension, no settings, no writes (README:
    For analysts). A running sync is waited for CRMSYNC_WAIT_SECONDS. --all-tenants: on
    every tenant's file, each a catalog of its name ("acme".main.link_contacts), and each
    table of the marts a view across them all, its first column `tenant`."""
    from crmsync.readonly import run_query
    from crmsync.report import delimited, emit_json, is_terminal, json_value, table

    tenants = None
    on_warehouse: str | None = None  # the tenants' warehouse: the query reads its all_tenants views
    if all_tenants:
        _not_with_tenant()
        from crmsync.tenants import load

        every = load()
        warehoused = [tenant for tenant in every.values() if tenant.schema_prefix]
        if warehoused:
            on_warehouse = _one_warehouse(list(every.values()))
        else:
            tenants = {name: tenant.state for name, tenant in every.items() if tenant.state.exists()}
            missing = [name for name in every if name not in tenants]
            if missing:
                _warn(f"not synced yet, left out: {', '.join(missing)}")
            if not tenants:
                raise QueryError("no tenant has synced yet: run `crmsync sync --all-tenants` first")
    settings = obj.settings
    shape = "json" if as_json else shape or ("table" if is_terminal() else "tsv")
    if on_warehouse is not None:
        from crmsync.tenant_runs import VIEWS_SCHEMA
        from support import warehouse

        with warehouse.using(on_warehouse):  # no tenant's prefix: the views are all of them
            found = run_query(settings.db_path, query, timeout=timeout, limit=limit, wait_s=settings.wait_s,
                              search_path=VIEWS_SCHEMA)  # fmt: skip
    else:
        found = run_query(settings.db_path, query, timeout=timeout, memory_limit=memory_limit, limit=limit,
                          wait_s=settings.wait_s, tenants=tenants)  # fmt: skip
    if shape == "json":
        emit_json([{c: json_value(v, t) for c, t, v in zip(found.columns, found.types, row, strict=True)}
                   for row in found.rows])  # fmt: skip
    elif shape == "table":
        count = f"{len(found.rows)} row{'s' if len(found.rows) != 1 else ''}"
        table(None, found.columns, found.rows, found.types,
              caption=f"first {count} (--limit)" if found.more else count)  # fmt: skip
    else:
        delimited(found.columns, found.rows, shape)
    if found.more and shape != "table":
        say(f"crmsync: stopped after {limit} row{'s' if limit != 1 else ''} (--limit)", err=True)


@main.command()
@_tenant_option(secrets=False)
@click.option("--apply", is_flag=True, help="Blank them (without it: only show what would be blanked).")
@click.option(
    "--days",
    type=click.IntRange(min=0),
    default=None,
    help="Keep this many days [default: CRMSYNC_RETENTION_DAYS, else 30].",
)
@click.pass_obj
def retention(obj: Context, apply: bool, days: int | None) -> None:
    """Show (and with --apply blank) the personal data in sync_state older than the retention.

    Payloads written, API answers, conflicting values, resolved rejections' reasons, records
    that could not be loaded: set to null after N days; the rows stay as the audit. Every
    sync applies this at its end."""
    from crmsync.lock import shared
    from crmsync.readonly import first_line, require
    from crmsync.report import table
    from reverse_etl.state import ensure_state
    from reverse_etl.state import retention as expire

    settings = obj.settings
    days = settings.retention_days if days is None else days
    require(settings.db_path)
    held = (
        exclusive(settings.db_path, "retention --apply", settings.wait_s)
        if apply
        else shared(settings.db_path, settings.wait_s)
    )
    try:
        with held:
            ensure_state(settings.db_path)
            found = expire(settings.db_path, days, apply=apply)
    except warehouse_errors() as exc:  # e.g. another program holds the file
        raise QueryError(f"retention: {first_line(exc)}") from None
    table(
        f"personal data older than {days} days",
        ["table", "values", "rows", "oldest"],
        [[e.table, e.blanks, e.rows, e.oldest.date() if e.oldest else ""] for e in found],
    )
    total = sum(e.rows for e in found)
    if apply:
        say(f"blanked the values of {total} rows" if total else "nothing to blank")
    else:
        say(
            f"{total} rows would be blanked: `crmsync retention --apply` does it"
            if total
            else "nothing to blank"
        )


@main.command(name="registry")
@click.option(
    "--write",
    is_flag=True,
    help="Regenerate what the registry renders: dbt's macros/_registry.sql and the docs page.",
)
def registry_command(write: bool) -> None:
    """The mappings as the registry (registry/mappings.py) describes them."""
    import registry
    from registry import dbt as registry_dbt

    if write:
        from crmsync.dataflow import write_docs

        changed = registry_dbt.write()
        write_docs()
        click.echo(f"{registry_dbt.MACRO_FILE}: {'written' if changed else 'up to date'}")
    for m in registry.MAPPINGS:
        parents = ", ".join(f"{f} -> {p}" for f, p in m.parents.items()) or "none"
        click.echo(
            f"{m.number}. {m.name}: Keap {m.keap.name} <-> Customcrm {m.customcrm.name}; "
            f"{len(m.fields)} fields; natural key: {m.natural_key}; parents: {parents}"
        )
        for f in m.fields:
            click.echo(f"     {f.name:<18} {f.keap_property}  <->  {f.customcrm_property}  [{f.direction}]")


@main.command()
@click.option(
    "--write-docs", is_flag=True, help="Also regenerate the dbt docs page with the property tables."
)
@click.pass_obj
def dataflow(obj: Context, write_docs: bool) -> None:
    """Print the dataflow document (reStructuredText), tables filled from the registry."""
    from crmsync.dataflow import mappings, restructured_text
    from crmsync.dataflow import write_docs as regenerate

    if write_docs:
        regenerate(obj.settings.db_path)
    click.echo(restructured_text(mappings()), nl=False)


@main.command()
@_tenant_option(secrets=False)
@click.option("--serve/--no-serve", default=True, help="Serve the site after generating it.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.pass_obj
def docs(obj: Context, serve: bool, port: int) -> None:
    """Generate the dbt docs site from a copy of the DuckDB file and serve it on 127.0.0.1.

    The state file is held only while it is copied (a running sync is waited for): syncs,
    status and sql go on while the site is served."""
    from crmsync.docs_site import build_site, serve_site

    settings = obj.settings
    site = build_site(settings)
    built_from = (
        f"the warehouse {redact(settings.warehouse)}"
        if settings.warehouse
        else f"a copy of {settings.db_path}"
    )
    say(f"dbt docs built in {site} from {built_from}")
    if serve:
        serve_site(site, port, lambda url: say(f"dbt docs at {url} (Ctrl-C stops)"))


main.add_command(hooks)  # crmsync hooks serve|url|register|list|verify|check|remove

if __name__ == "__main__":  # pragma: no cover
    main()
