"""A whole sync against both sandboxes, as the product runs it (configured endpoints)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from connectors.customcrm import customcrm_client
from connectors.keap import KeapPacer, keap_client
from crmsync.run import Endpoints, SyncOutcome, run_sync
from crmsync.settings import Settings
from sandbox.bundle import Sandboxes
from tests.conftest import admin, crm_http, keap_http


def no_sleep(seconds: float) -> None:
    return None


@dataclass
class World:
    boxes: Sandboxes
    settings: Settings
    keap: httpx.Client
    crm: httpx.Client

    def endpoints(
        self,
        keap_transport: httpx.BaseTransport | None = None,
        customcrm_transport: httpx.BaseTransport | None = None,
    ) -> Endpoints:
        return Endpoints(
            keap=keap_client(
                base_url=self.boxes.keap_url,
                api_key=self.boxes.keap.credentials.api_key,
                pacer=KeapPacer(per_second=1e6, per_minute=1e9),
                transport=keap_transport,
                sleep=no_sleep,
            ),
            customcrm=customcrm_client(
                base_url=self.boxes.customcrm_url,
                token=self.boxes.customcrm.credentials.token,
                transport=customcrm_transport,
                sleep=no_sleep,
            ),
        )

    def sync(
        self,
        keap_transport: httpx.BaseTransport | None = None,
        customcrm_transport: httpx.BaseTransport | None = None,
        **kw: Any,
    ) -> SyncOutcome:
        """A whole run; a transport stands between a client and its sandbox."""
        found = self.endpoints(keap_transport, customcrm_transport)
        try:
            return run_sync(self.settings, found, **kw)
        finally:
            found.close()

    def served(self, reset: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
        keap = admin(self.keap, self.boxes.keap_root, "/_sandbox/stats")
        crm = admin(self.crm, self.boxes.customcrm_root, "/_sandbox/stats")
        if reset:
            admin(self.keap, self.boxes.keap_root, "/_sandbox/stats/reset", {})
            admin(self.crm, self.boxes.customcrm_root, "/_sandbox/stats/reset", {})
        return keap, crm

    def faults(self, **faults: Any) -> None:
        admin(self.keap, self.boxes.keap_root, "/_sandbox/config", {"faults": faults})
        admin(self.crm, self.boxes.customcrm_root, "/_sandbox/config", {"faults": faults})

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a `crmsync` process configured for these sandboxes and this file."""
        import os

        return {
            **os.environ,
            "KEAP_API_URL": self.boxes.keap_url,
            "KEAP_API_KEY": self.boxes.keap.credentials.api_key,
            "CUSTOMCRM_API_URL": self.boxes.customcrm_url,
            "CUSTOMCRM_API_TOKEN": self.boxes.customcrm.credentials.token,
            "CRMSYNC_DB": str(self.settings.db_path),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def sql(self, query: str) -> list[tuple]:
        with duckdb.connect(str(self.settings.db_path)) as con:
            return con.execute(query).fetchall()

    # the two systems as a user sees them
    def keap_all(self, resource: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"page_size": 1000}
        if resource == "companies":
            params["fields"] = (
                "company_name,address,email_address,phone_number,fax_number,notes,website,update_time"
            )
        return self.keap.get(f"/{resource}", params=params).json()[resource]  # type: ignore[no-any-return]

    def crm_all(self, resource: str) -> list[dict[str, Any]]:
        return self.crm.get(f"/{resource}", params={"limit": 500}).json()["data"]  # type: ignore[no-any-return]


DEMO = {"size": 25, "seed": 11}


def _settings(folder: Path) -> Settings:
    return Settings(db_path=folder / "crmsync.duckdb", keap_configured=True, customcrm_configured=True)


@pytest.fixture(scope="session")
def synced_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's two systems and the state after its first sync, made once per test process
    (a first sync is ~20 s): a test marked `synced` starts from a copy of all three
    (tests/conftest.py's `sandboxes` copies the systems, `world` the state). The first sync
    itself is what test_sync.py's first test and others check, each on its own world."""
    folder = tmp_path_factory.mktemp("synced-demo")
    boxes = Sandboxes(folder / "sandbox").start()
    try:
        boxes.seed_demo(**DEMO)
        with keap_http(boxes) as keap, crm_http(boxes) as crm:
            admin(crm, boxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
            first = World(boxes, _settings(folder), keap, crm).sync()
        assert first.status == "ok", first.error or first.problems
    finally:
        boxes.stop()  # the stores closed: their files are whole, ready to copy
    return folder


@pytest.fixture
def world(
    sandboxes: Sandboxes,
    keap: httpx.Client,
    crm: httpx.Client,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    """The demo in both sandboxes and no state yet; marked `synced`: right after the demo's
    first sync (a copy of `synced_demo`)."""
    if request.node.get_closest_marker("synced"):
        made = request.getfixturevalue("synced_demo")
        shutil.copy2(made / "crmsync.duckdb", tmp_path / "crmsync.duckdb")
        shutil.copytree(made / "crmsync.state", tmp_path / "crmsync.state")
    else:
        sandboxes.seed_demo(**DEMO)
    admin(crm, sandboxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
    yield World(sandboxes, _settings(tmp_path), keap, crm)
