"""`crmsync`: one click group builds the settings once; commands stay thin.

Domain errors become one clean line and a non-zero exit; `--debug` shows the
traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from connectors.errors import FatalError
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
        return self._settings


class CrmsyncGroup(click.Group):
    """Turns domain errors into one line on stderr and exit 1 (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigurationError, FatalError, OSError, ValueError) as exc:
            if "--debug" in sys.argv:
                raise
            click.secho(f"crmsync: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=CrmsyncGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Keep Keap and Customcrm in sync, both ways."""
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
        summary = boxes.seed_demo(size or DEMO_SIZE, seed)
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
    with endpoints(settings) as found:
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


if __name__ == "__main__":  # pragma: no cover
    main()
