"""Systems with no records yet: the ingest creates no raw table for them, and the sync must
still build, test and push (a new Customcrm is the first customer's usual start)."""

from __future__ import annotations

from pathlib import Path

import httpx

from crmsync.settings import Settings
from sandbox.bundle import Sandboxes
from sandbox.customcrm.app import CustomcrmSandbox
from sandbox.demo import generate
from tests.conftest import admin
from tests.e2e.conftest import World


def _world(sandboxes: Sandboxes, keap: httpx.Client, crm: httpx.Client, tmp_path: Path) -> World:
    admin(crm, sandboxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
    settings = Settings(db_path=tmp_path / "crmsync.duckdb", keap_configured=True, customcrm_configured=True)
    return World(sandboxes, settings, keap, crm)


def test_a_first_sync_into_an_empty_customcrm_creates_every_keap_record_once(
    sandboxes: Sandboxes, keap: httpx.Client, crm: httpx.Client, tmp_path: Path
) -> None:
    elsewhere = CustomcrmSandbox(tmp_path / "not-served")  # the demo's Customcrm half goes here, unused
    generate(sandboxes.keap.store, elsewhere.store, size=12, seed=5, customcrm_share=0.0)
    elsewhere.store.close()
    world = _world(sandboxes, keap, crm, tmp_path)
    assert (
        world.sql("select count(*) from information_schema.schemata where schema_name = 'raw_customcrm'")
        == [(0,)]
        or not world.settings.db_path.exists()
    )

    outcome = world.sync()
    assert outcome.status == "ok", outcome.error
    for resource, keap_resource in (("customers", "companies"), ("contacts", "contacts"),
                                    ("orders", "opportunities"), ("products", "products")):  # fmt: skip
        refs = sorted(r["ExternalRefs"]["keap"] for r in world.crm_all(resource))
        assert refs == sorted(r["id"] for r in world.keap_all(keap_resource)), resource
    assert not world.sync().push.wrote


def test_two_empty_systems_sync_to_nothing_without_error(
    sandboxes: Sandboxes, keap: httpx.Client, crm: httpx.Client, tmp_path: Path
) -> None:
    world = _world(sandboxes, keap, crm, tmp_path)
    outcome = world.sync()
    assert outcome.status == "ok", outcome.error
    assert not outcome.push.wrote
    assert world.sql("select count(*) from main.link_contacts") == [(0,)]
    assert world.sql(
        "select count(*) from information_schema.tables where table_schema in ('raw_keap', 'raw_customcrm') "
        "and table_name in ('contacts', 'companies', 'customers')"
    ) == [(0,)]  # the ingest made none: the models and their tests ran without them
