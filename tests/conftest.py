"""Fixtures shared by every test: sandboxes on free loopback ports, started and
stopped by the tests themselves, each on its own fresh data folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.bundle import Sandboxes
from tests.postgres import cluster, create_database

# the fixtures that give a test PostgreSQL, when it has no `engine` parameter
POSTGRES_FIXTURES = {"postgres_cluster", "warehouse", "synced_demo_postgres"}


ENGINES = ("duckdb", "postgres")  # the warehouses a test may run on (tests/e2e/conftest.py)


def engine_of(item: pytest.Item) -> str | None:
    """The warehouse a test runs on: its `engine` parameter, else postgres when it asks for
    a PostgreSQL fixture, else None (a test of no warehouse, or of the DuckDB file alone)."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "engine" in callspec.params:
        return str(callspec.params["engine"])
    return "postgres" if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """CRMSYNC_E2E_ENGINES=duckdb (or postgres): the other engine's tests deselected, across
    the suite (`make test` sets none: every test runs)."""
    only = os.environ.get("CRMSYNC_E2E_ENGINES")
    if not only:
        return
    if only not in ENGINES:
        raise pytest.UsageError(f"CRMSYNC_E2E_ENGINES={only!r}: duckdb or postgres, or unset for both")
    kept, dropped = [], []
    for item in items:
        engine = engine_of(item)
        (dropped if engine is not None and engine != only else kept).append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def sandboxes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Sandboxes]:
    data = tmp_path / "sandbox"
    if request.node.get_closest_marker("synced"):  # the two systems as the demo's first sync left them
        postgres = "engine" in request.fixturenames and request.getfixturevalue("engine") == "postgres"
        made = (
            request.getfixturevalue("synced_demo_postgres")[0]
            if postgres
            else request.getfixturevalue("synced_demo")
        )
        shutil.copytree(made / "sandbox", data)
    boxes = Sandboxes(data).start()
    try:
        yield boxes
    finally:
        boxes.stop()


def keap_http(boxes: Sandboxes) -> httpx.Client:
    """A raw HTTP client on the Keap sandbox, authenticated with the sandbox's API key."""
    return httpx.Client(
        base_url=boxes.keap_url, headers={"X-Keap-API-Key": boxes.keap.credentials.api_key}, timeout=10
    )


def crm_http(boxes: Sandboxes) -> httpx.Client:
    """A raw HTTP client on the Customcrm sandbox, with its bearer token."""
    return httpx.Client(
        base_url=boxes.customcrm_url,
        headers={"Authorization": f"Bearer {boxes.customcrm.credentials.token}"},
        timeout=10,
    )


@pytest.fixture
def keap(sandboxes: Sandboxes) -> Iterator[httpx.Client]:
    with keap_http(sandboxes) as client:
        yield client


@pytest.fixture
def crm(sandboxes: Sandboxes) -> Iterator[httpx.Client]:
    with crm_http(sandboxes) as client:
        yield client


def admin(client: httpx.Client, root: str, path: str, body: dict | None = None) -> dict:
    """Call a sandbox's admin endpoint (`/_sandbox/...`) on its server root."""
    response = client.get(root + path) if body is None else client.post(root + path, json=body)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def dbt_commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The dbt commands the test's builds run (crmsync.dbt.run_dbt's arguments), in order;
    each still runs."""
    from crmsync import dbt

    commands: list[list[str]] = []
    real = dbt.run_dbt

    def recorded(args, db_path, variables=None, quiet=True):  # type: ignore[no-untyped-def]
        commands.append(list(args))
        return real(args, db_path, variables, quiet)

    monkeypatch.setattr(dbt, "run_dbt", recorded)
    return commands


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster per test process (tests/postgres.py): its URL."""
    with cluster() as url:
        yield url


@pytest.fixture
def warehouse(postgres_cluster: str) -> Iterator[str]:
    """A database of its own in that cluster, for one test: its postgresql:// URL (dropped by
    the cluster's end)."""
    yield create_database(postgres_cluster)
