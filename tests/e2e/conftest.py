"""A whole sync against both sandboxes, as the product runs it (configured endpoints), on
the DuckDB file or on a PostgreSQL warehouse (a database of its own in the tests'
throwaway cluster): see pytest_generate_tests for which tests run on which."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.customcrm import customcrm_client
from connectors.keap import KeapPacer, keap_client
from crmsync.run import Endpoints, SyncOutcome, run_sync
from crmsync.settings import Settings
from sandbox.bundle import Sandboxes
from support.warehouse import ENV, connect
from tests.conftest import ENGINES, admin, crm_http, keap_http
from tests.postgres import create_database


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
            **({"CRMSYNC_WAREHOUSE": self.settings.warehouse} if self.settings.warehouse else {}),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple]:
        """A query on the world's warehouse (`?` placeholders), whichever engine it is."""
        with connect(self.settings.db_path) as con:
            return con.execute(query, params).fetchall()  # type: ignore[no-any-return]

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test with a `world`, once per engine: on the DuckDB file and on PostgreSQL (a
    database of its own in the tests' throwaway cluster), unless its `engines` mark or its
    module's ENGINES names fewer (a test of the DuckDB file itself). CRMSYNC_E2E_ENGINES
    (`duckdb` or `postgres`) narrows a developer's run to one engine (tests/conftest.py);
    `make test` sets none."""
    if "world" in metafunc.fixturenames:
        marked = metafunc.definition.get_closest_marker("engines")
        engines = marked.args if marked else getattr(metafunc.module, "ENGINES", ENGINES)
        metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "duckdb")


def _settings(folder: Path, warehouse: str | None = None) -> Settings:
    return Settings(db_path=folder / "crmsync.duckdb", warehouse=warehouse, keap_configured=True,
                    customcrm_configured=True)  # fmt: skip


def _first_sync(folder: Path, warehouse: str | None) -> Path:
    boxes = Sandboxes(folder / "sandbox").start()
    try:
        boxes.seed_demo(**DEMO)
        with keap_http(boxes) as keap, crm_http(boxes) as crm:
            admin(crm, boxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
            first = World(boxes, _settings(folder, warehouse), keap, crm).sync()
        assert first.status == "ok", first.error or first.problems
    finally:
        boxes.stop()  # the stores closed: their files are whole, ready to copy
    return folder


@pytest.fixture(scope="session")
def synced_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's two systems and the state after its first sync, made once per test process
    (a first sync is ~20 s): a test marked `synced` starts from a copy of all three
    (tests/conftest.py's `sandboxes` copies the systems, `world` the state). The first sync
    itself is what test_sync.py's first test and others check, each on its own world."""
    return _first_sync(tmp_path_factory.mktemp("synced-demo"), None)


@pytest.fixture(scope="session")
def synced_demo_postgres(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: str) -> tuple[Path, str]:
    """The same on PostgreSQL: the folder (the systems, the local state) and the database the
    first sync wrote, which each `synced` test's database is created from (as a template)."""
    with pytest.MonkeyPatch.context() as patch:
        url = create_database(postgres_cluster, "synced_demo")
        patch.setenv(
            ENV, url
        )  # as the sync sets it; gone again afterwards (delenv of nothing restores nothing)
        folder = _first_sync(tmp_path_factory.mktemp("synced-demo-pg"), url)
    return folder, "synced_demo"


@pytest.fixture
def world(
    sandboxes: Sandboxes,
    keap: httpx.Client,
    crm: httpx.Client,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    engine: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    """The demo in both sandboxes and no state yet; marked `synced`: right after the demo's
    first sync (a copy of `synced_demo`, or of `synced_demo_postgres`). On PostgreSQL the
    world's database is CRMSYNC_WAREHOUSE for the test (the process's steps read it)."""
    synced = request.node.get_closest_marker("synced")
    warehouse = None
    if engine == "postgres":
        cluster_url = request.getfixturevalue("postgres_cluster")
        template = request.getfixturevalue("synced_demo_postgres")[1] if synced else None
        warehouse = create_database(cluster_url, template=template)
        monkeypatch.setenv(ENV, warehouse)
    else:
        monkeypatch.delenv(ENV, raising=False)
    if synced:
        made = request.getfixturevalue("synced_demo" if engine == "duckdb" else "synced_demo_postgres")
        made = made if engine == "duckdb" else made[0]
        if engine == "duckdb":
            shutil.copy2(made / "crmsync.duckdb", tmp_path / "crmsync.duckdb")
        shutil.copytree(made / "crmsync.state", tmp_path / "crmsync.state")
    else:
        sandboxes.seed_demo(**DEMO)
    admin(crm, sandboxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
    yield World(sandboxes, _settings(tmp_path, warehouse), keap, crm)
