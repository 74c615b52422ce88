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
from connectors.keap import KeapClient, keap_client
from connectors.tokens import TokenStore
from crmsync.settings import Settings
from pipelines.common import ExtractReport, ProgressCallback
from pipelines.ingest import IngestOptions, extract

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
