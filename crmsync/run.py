"""The run that ties the steps together, and where the endpoints come from.

With neither Keap nor Customcrm configured, the bundled sandboxes are started
in this process on free loopback ports, filled with demo data on first use
(kept in `data/sandbox/`, beside the default DuckDB file), and used as the two
systems.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from connectors.customcrm import CustomcrmClient, customcrm_client
from connectors.errors import ApiError
from connectors.keap import KeapClient, keap_client
from connectors.tokens import TokenStore
from crmsync.dbt import DbtError
from crmsync.dbt import build as dbt_build
from crmsync.settings import Settings
from pipelines.common import ExtractReport, ProgressCallback
from pipelines.ingest import IngestOptions, extract
from reverse_etl.push import ProgressCallback as PushProgress
from reverse_etl.push import PushResult, Pusher, merge_results
from reverse_etl.state import ensure_state, finish_run, new_run_id, start_run

PUSH_SELECTION = "+exposure:push_customcrm +exposure:push_keap"


class IncompleteExtract(Exception):
    """The ingest could not read everything: nothing is pushed on stale data."""

SANDBOX_DIR = Path("data/sandbox")


@dataclass
class Endpoints:
    keap: KeapClient
    customcrm: CustomcrmClient
    sandbox: object | None = None  # the running Sandboxes in sandbox mode
    description: str = ""

    def close(self) -> None:
        self.keap.close()
        self.customcrm.close()


@contextmanager
def endpoints(settings: Settings, sandbox_dir: Path = SANDBOX_DIR) -> Iterator[Endpoints]:
    settings.validate()
    if settings.sandbox_mode:
        from sandbox.bundle import Sandboxes  # only the embedded default needs the sandboxes

        boxes = Sandboxes(sandbox_dir)
        if boxes.is_empty:
            boxes.seed_demo()
        boxes.configure(keap={"limits": "published"})
        boxes.start()
        found = Endpoints(
            keap=keap_client(base_url=boxes.keap_url, api_key=boxes.keap.credentials.api_key),
            customcrm=customcrm_client(base_url=boxes.customcrm_url, token=boxes.customcrm.credentials.token),
            sandbox=boxes,
            description=f"the bundled sandboxes with demo data ({sandbox_dir}/)",
        )
        try:
            yield found
        finally:
            found.close()
            boxes.stop()
        return
    assert settings.customcrm_api_url and settings.customcrm_api_token  # validate() said so
    found = Endpoints(
        keap=keap_client(
            base_url=settings.keap_api_url,
            api_key=settings.keap_api_key,
            access_token=settings.keap_access_token,
            refresh_token=settings.keap_refresh_token,
            client_id=settings.keap_client_id,
            client_secret=settings.keap_client_secret,
            token_url=settings.keap_token_url,
            token_store=TokenStore(settings.state_dir / "keap_oauth.json"),
        ),
        customcrm=customcrm_client(base_url=settings.customcrm_api_url, token=settings.customcrm_api_token),
        description=f"Keap at {settings.keap_api_url}, Customcrm at {settings.customcrm_api_url}",
    )
    try:
        yield found
    finally:
        found.close()


def run_extract(
    settings: Settings, found: Endpoints, options: IngestOptions, progress: ProgressCallback | None = None
) -> list[ExtractReport]:
    return extract(settings.db_path, settings.state_dir, found.keap, found.customcrm, options, progress)


MAX_ROUNDS = 5


@dataclass
class SyncOutcome:
    run_id: str
    rounds: int
    extract: list[ExtractReport]
    push: PushResult
    status: str  # ok | rejected | failed
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "rejected": 3}.get(self.status, 1)


def _extract_errors(reports: list[ExtractReport]) -> list[str]:
    return [error for report in reports for error in report.errors]


def run_sync(settings: Settings, found: Endpoints, variables: dict[str, object] | None = None,
             ingest: IngestOptions | None = None, progress: ProgressCallback | None = None,
             push_progress: PushProgress | None = None, dry_run: bool = False) -> SyncOutcome:  # fmt: skip
    """extract -> dbt build -> push, repeated while rows wait for parents created in this
    run; then one more extract and build so the link tables show where things stand."""
    db_path = settings.db_path
    ensure_state(db_path)
    run_id = new_run_id()
    if not dry_run:
        start_run(db_path, run_id)
    result = PushResult()
    reports: list[ExtractReport] = []
    rounds = 0
    try:
        reports = run_extract(settings, found, ingest or IngestOptions(), progress)
        errors = _extract_errors(reports)
        if errors:  # stale data must not decide writes: push nothing
            raise IncompleteExtract("; ".join(errors))
        dbt_build(db_path, variables)
        if dry_run:
            return SyncOutcome(run_id, 0, reports, result, "ok")
        wrote = False
        while rounds < MAX_ROUNDS:
            rounds += 1
            pusher = Pusher(db_path, run_id, found.keap, found.customcrm, push_progress)
            round_result = pusher.run()
            result = merge_results(result, round_result) if rounds > 1 else round_result
            wrote = wrote or round_result.wrote
            if round_result.waiting == 0 or round_result.creates == 0:
                break
            # parents were created: read them back and let the waiting children through
            run_extract(settings, found, IngestOptions(), None)
            dbt_build(db_path, variables, select=PUSH_SELECTION)
        if wrote:  # show the result in the link tables
            run_extract(settings, found, IngestOptions(), None)
            dbt_build(db_path, variables)
        status = "rejected" if result.rejections else ("failed" if result.failed else "ok")
        outcome = SyncOutcome(run_id, rounds, reports, result, status)
    except (ApiError, DbtError, IncompleteExtract) as exc:
        outcome = SyncOutcome(run_id, rounds, reports, result, "failed", str(exc))
    finish_run(db_path, run_id, outcome.status, {"push": result.as_dict(), "error": outcome.error})
    return outcome
