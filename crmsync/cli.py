"""`crmsync`: one click group builds the settings once; commands stay thin.

Domain errors become one clean line and a non-zero exit; `--debug` shows the
traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import click

from connectors.errors import FatalError, redact
from crmsync.filemodes import private_umask, secure_state
from crmsync.hooks import HooksProblem
from crmsync.hooks.cli import hooks
from crmsync.lock import StateBusy, exclusive
from crmsync.readonly import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT_S, QueryError
from crmsync.settings import ConfigurationError, Settings

EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 3


class Context:
    def __init__(self, debug: bool) -> None:
        self.debug = debug
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
            secure_state(self._settings.db_path, create=False, warn=_warn)  # tighten what exists
        return self._settings


def _warn(line: str) -> None:
    click.secho(f"crmsync: {line}", fg="yellow", err=True)


class CrmsyncGroup(click.Group):
    """Turns domain errors into one line on stderr and exit 1 (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if "--debug" in sys.argv:
                raise
            from crmsync.failures import failure_line

            known = isinstance(ctx.obj, Context) and ctx.obj._settings is not None
            db = ctx.obj.settings.db_path if known else Path("the DuckDB file")
            plain = isinstance(exc, ConfigurationError | FatalError | StateBusy | QueryError | HooksProblem)
            line = str(exc) if plain else failure_line(exc, db)
            click.secho(f"crmsync: {redact(line)}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=CrmsyncGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Keep Keap and Customcrm in sync, both ways."""
    private_umask()  # the state holds personal data and tokens: whatever is created is the owner's only
    ctx.obj = Context(debug)


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("data/sandbox"),
    envvar="CRMSYNC_SANDBOX_DIR",
    show_default=True,
    help="Where the sandboxes keep their SQLite files.",
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
def sandbox(
    data_dir: Path,
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
    """Read what changed in Keap and Customcrm into the DuckDB file (the ingest step alone)."""
    from crmsync.progress import extract_progress
    from crmsync.run import endpoints, run_extract
    from pipelines.ingest import IngestOptions

    settings = obj.settings
    with exclusive(settings.db_path, "extract"), endpoints(settings) as found:
        if not quiet:
            click.echo(f"extracting from {found.description} into {settings.db_path}", err=True)
        with extract_progress(quiet) as progress:
            reports = run_extract(settings, found, IngestOptions(full, full_every), progress)
    code = EXIT_OK
    for report in reports:
        if not quiet:
            click.echo(
                f"{report.system}: {report.requests} requests ({report.retries} retried, "
                f"{report.rate_limited} rate-limited){' with a full pass' if report.full_pass else ''}"
            )
            for counts in report.resources.values():
                click.echo(
                    f"  {counts.resource:<14} {counts.records:>8} records {counts.pages:>5} pages"
                    f"{f'  {counts.rejected} rejected' if counts.rejected else ''}"
                    f"{f'  {counts.deleted} deleted' if counts.deleted else ''}"
                )
        if any(c.rejected for c in report.resources.values()) and code == EXIT_OK:
            code = EXIT_REJECTED
        for error in report.errors:
            click.secho(f"crmsync: {error}", fg="red", err=True)
            code = EXIT_FAILED
    if code == EXIT_REJECTED and not quiet:
        click.echo(
            "some records could not be loaded: see raw_keap.ingest_rejections / "
            "raw_customcrm.ingest_rejections",
            err=True,
        )
    sys.exit(code)


def _vars(conflict_policy: str | None, raw: str | None) -> dict[str, Any] | None:
    import json

    variables: dict[str, Any] = json.loads(raw) if raw else {}
    if conflict_policy:
        variables["conflict_policy"] = {
            m: conflict_policy for m in ("customers", "contacts", "orders", "products")
        }
    return variables or None


def _sync_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
            click.option("--quiet", is_flag=True, help="No progress output."),
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
@_sync_options
@click.option(
    "--rebuild", is_flag=True, help="Run dbt and the push even when nothing changed since the last quiet run."
)
@click.pass_obj
def sync(
    obj: Context,
    as_json: bool,
    quiet: bool,
    full: bool,
    full_every: int,
    conflict_policy: str | None,
    raw_vars: str | None,
    rebuild: bool,
) -> None:
    """Extract, model and push: converge Keap and Customcrm in one command.

    Exit 0 when everything went through, 3 when some rows were rejected (listed), 4 when a
    resource could not be read or written (named; the other mappings went through), 1 on failure.
    """
    from crmsync.failures import failure_line
    from crmsync.hooks.runs import scheduled_sync
    from crmsync.progress import extract_progress, push_progress
    from crmsync.report import emit_json, sync_summary
    from crmsync.run import endpoints, run_sync
    from pipelines.ingest import IngestOptions

    try:
        settings = obj.settings
        with exclusive(settings.db_path, "sync"), endpoints(settings) as found:
            if not (quiet or as_json):
                click.echo(f"syncing {found.description} (state: {settings.db_path})", err=True)
            with extract_progress(quiet or as_json) as progress, push_progress(quiet or as_json) as pushing:
                outcome = scheduled_sync(  # with the hooks' check and spool where they are registered
                    settings,
                    found,
                    lambda ingest: run_sync(
                        settings,
                        found,
                        _vars(conflict_policy, raw_vars),
                        ingest,
                        progress,
                        pushing,
                        rebuild=rebuild,
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
            emit_json({"status": "failed", "error": line})
        click.secho(f"crmsync: {line}", fg="red", err=True)
        sys.exit(EXIT_FAILED)
    if outcome.exception is not None and obj.debug:
        traceback.print_exception(outcome.exception, file=sys.stderr)
    result = outcome.as_dict()
    if as_json:
        emit_json(result)
    elif not quiet:
        sync_summary(result)
        if outcome.quiet_since:
            click.echo(
                f"nothing changed since run {outcome.quiet_since}, which found nothing to do: "
                "dbt and the push were skipped (--rebuild runs them anyway)"
            )
        if found.sandbox is not None:
            click.echo(NEXT_STEPS.format(db=settings.db_path))
    for problem in outcome.problems:
        click.secho(f"crmsync: {redact(problem)}", fg="red", err=True)
    if outcome.error:
        click.secho(f"crmsync: {redact(outcome.error)}", fg="red", err=True)
    sys.exit(outcome.exit_code)


def _hooks_line(checked: Any, quiet: bool) -> None:
    """Where the hooks stand, before the sync: always when something is wrong."""
    if not (checked.ok and quiet):
        click.secho(f"crmsync: {checked.line}", fg=None if checked.ok else "yellow", err=True)


NEXT_STEPS = """
Where to look next:
  the DuckDB file       {db}
  link tables           crmsync sql "select link_status, count(*) from link_contacts group by all"
  why not linked        crmsync sql "select keap_id, keap_name, status_reason from link_contacts where link_status <> 'linked'"
  the mappings' docs    make docs
"""


@main.command()
@_sync_options
@click.pass_obj
def plan(
    obj: Context,
    as_json: bool,
    quiet: bool,
    full: bool,
    full_every: int,
    conflict_policy: str | None,
    raw_vars: str | None,
) -> None:
    """Show what a sync would write, without writing. Exit 1 if anything is pending, 0 if not."""
    from crmsync.report import emit_json, table
    from crmsync.run import endpoints, run_plan
    from pipelines.ingest import IngestOptions

    settings = obj.settings
    with exclusive(settings.db_path, "plan"), endpoints(settings) as found:
        # in a copy of the DuckDB file: nothing a sync reads is touched, whatever the vars
        outcome, pending = run_plan(
            settings,
            found,
            _vars(conflict_policy, raw_vars),
            IngestOptions(full_pass=full, full_pass_every=full_every),
        )
    if outcome.error:
        if outcome.exception is not None and obj.debug:
            traceback.print_exception(outcome.exception, file=sys.stderr)
        if as_json:
            emit_json({"status": "failed", "error": redact(outcome.error)})
        click.secho(f"crmsync: {redact(outcome.error)}", fg="red", err=True)
        sys.exit(1)
    for problem in outcome.problems:  # a resource that could not be read: its rows may be stale
        click.secho(f"crmsync: {redact(problem)}", fg="red", err=True)
    if as_json:
        emit_json({"pending": pending})
    elif not quiet:
        table(
            "pending writes",
            ["mapping", "target", "op", "ready", "waiting"],
            [[p["mapping"], p["target"], p["op"], p["ready"], p["waiting"]] for p in pending],
        )
        if not pending:
            click.echo("nothing to write: both systems agree")
    sys.exit(1 if pending else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Per mapping: linked, pending, conflicts and rejections, and the last run (reads the DuckDB file only)."""
    from crmsync.report import emit_json, table
    from crmsync.run import sync_status

    found = sync_status(obj.settings.db_path)
    if as_json:
        emit_json(found)
        return
    table(
        "status",
        ["mapping", "linked", "orphaned", "pending", "waiting", "conflicts", "rejected"],
        [
            [
                m["mapping"],
                m["linked"],
                m["orphaned"],
                m["pending"],
                m["waiting"],
                m["conflicts"],
                m["rejected"],
            ]
            for m in found["mappings"]
        ],
    )
    last = found["last_run"]
    click.echo(
        f"last run: {last['run_id']} {last['status']} at {last['finished_at']}"
        if last
        else "no sync has run yet"
    )


@main.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON.")
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
def sql(obj: Context, query: str, as_json: bool, timeout: float, memory_limit: str) -> None:
    """Run a read-only SQL query on the DuckDB file and print a table.

    The query reads the DuckDB file and nothing else: no other file, URL or extension,
    no settings, no writes (README: For analysts)."""
    from crmsync.readonly import run_query
    from crmsync.report import emit_json, table

    columns, rows = run_query(obj.settings.db_path, query, timeout=timeout, memory_limit=memory_limit)
    if as_json:
        emit_json([dict(zip(columns, row, strict=True)) for row in rows])
    else:
        table(f"{len(rows)} rows", columns, rows)


@main.command()
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
    import duckdb

    from crmsync.readonly import first_line, require
    from crmsync.report import table
    from reverse_etl.state import ensure_state
    from reverse_etl.state import retention as expire

    settings = obj.settings
    days = settings.retention_days if days is None else days
    require(settings.db_path)
    try:
        ensure_state(settings.db_path)
        found = expire(settings.db_path, days, apply=apply)
    except duckdb.Error as exc:  # e.g. a sync holds the file
        raise QueryError(f"retention: {first_line(exc)}") from None
    table(
        f"personal data older than {days} days",
        ["table", "values", "rows", "oldest"],
        [[e.table, e.blanks, e.rows, e.oldest.date() if e.oldest else ""] for e in found],
    )
    total = sum(e.rows for e in found)
    if apply:
        click.echo(f"blanked the values of {total} rows" if total else "nothing to blank")
    else:
        click.echo(
            f"{total} rows would be blanked: `crmsync retention --apply` does it"
            if total
            else "nothing to blank"
        )


@main.command()
@click.option(
    "--write-docs", is_flag=True, help="Also regenerate the dbt docs page with the property tables."
)
@click.pass_obj
def dataflow(obj: Context, write_docs: bool) -> None:
    """Print the dataflow document (reStructuredText), tables filled from the models."""
    from crmsync.dataflow import manifest, mappings, restructured_text
    from crmsync.dataflow import write_docs as regenerate

    if write_docs:
        regenerate(obj.settings.db_path)
    click.echo(restructured_text(mappings(manifest(obj.settings.db_path))), nl=False)


@main.command()
@click.option("--serve/--no-serve", default=True, help="Serve the site after generating it.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.pass_obj
def docs(obj: Context, serve: bool, port: int) -> None:
    """Generate the dbt docs site (and serve it on 127.0.0.1)."""
    from crmsync.dataflow import write_docs
    from crmsync.dbt import run_dbt
    from reverse_etl.state import ensure_state

    settings = obj.settings
    with exclusive(settings.db_path, "docs"):
        ensure_state(settings.db_path)
        write_docs(settings.db_path)
        generated = run_dbt(["docs", "generate"], settings.db_path)
    if not generated.success:
        raise click.ClickException("dbt docs generate failed: " + "; ".join(generated.failures))
    if serve:
        run_dbt(
            ["docs", "serve", "--port", str(port), "--host", "127.0.0.1", "--no-browser"], settings.db_path
        )


main.add_command(hooks)  # crmsync hooks serve|url|register|list|verify|check|remove

if __name__ == "__main__":  # pragma: no cover
    main()
