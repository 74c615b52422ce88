"""The demo: with neither Keap nor Customcrm configured, the CLI runs against the bundled
sandboxes, started in this process on free loopback ports and filled with demo data on
first use (kept in `sandbox/` beside the DuckDB file: `data/sandbox/` by default, or
CRMSYNC_SANDBOX_DIR). The one place the product starts them: the run (crmsync.run) and
the core (connectors, pipelines, reverse_etl) import nothing from `sandbox/`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from connectors.customcrm import customcrm_client
from connectors.keap import keap_client
from crmsync.run import Endpoints, endpoints
from crmsync.settings import Settings


@contextmanager
def open_endpoints(settings: Settings, sandbox_dir: Path | None = None) -> Iterator[Endpoints]:
    """What a command talks to: the configured systems, else the bundled sandboxes."""
    if not settings.sandbox_mode:
        with endpoints(settings) as found:
            yield found
        return
    settings.validate()
    from sandbox.bundle import Sandboxes  # only the demo needs the sandboxes

    sandbox_dir = sandbox_dir or settings.sandbox_dir
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
        urls={"keap": boxes.keap_url, "customcrm": boxes.customcrm_url},
    )
    try:
        yield found
    finally:
        found.close()
        boxes.stop()
