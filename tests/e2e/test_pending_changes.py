"""The pending-change models give exactly the writes docs/specification.md implies (scripted
scenarios, checked on the dbt models by a dry run: extract and build, no push)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from pipelines.ingest import IngestOptions
from support.warehouse import connect
from tests.conftest import REPO
from tests.e2e.conftest import World


def _rows(world: World, model: str, where: str = "true") -> list[dict[str, Any]]:
    with connect(world.settings.db_path) as con:
        cursor = con.execute(f"select * from main.{model} where {where}")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def _link(world: World, mapping: str, n: int = 0) -> tuple[str, str]:
    return world.sql(
        f"select keap_id, customcrm_id from sync_state.links where mapping = '{mapping}' order by keap_id"
    )[n]


@pytest.mark.synced
def test_scripted_scenarios_give_exactly_the_implied_writes(world: World) -> None:
    # new record in Keap -> one create in Customcrm, with ExternalRefs.keap
    new = world.keap.post(
        "/contacts",
        json={
            "given_name": "Nina",
            "family_name": "Ny",
            "email_addresses": [{"email": "nina@new.example", "field": "EMAIL1"}],
        },
    ).json()
    # edit in Keap -> an update to Customcrm of that field only
    k_edit, _ = _link(world, "contacts", 0)
    world.keap.patch(
        f"/contacts/{k_edit}", params={"update_mask": "job_title"}, json={"job_title": "Keap edit"}
    )
    # edit in Customcrm -> a Keap PATCH of the address object, region kept
    k_cus, c_cus = _link(world, "customers", 0)
    world.crm.patch(f"/customers/{c_cus}", json={"City": "Hamar"})
    # the same edit on both sides -> nothing to write
    k_same, c_same = _link(world, "products", 0)
    world.keap.patch(f"/products/{k_same}", params={"update_mask": "name"}, json={"name": "Same Name"})
    world.crm.patch(f"/products/{c_same}", json={"Name": "Same Name"})
    # a conflict -> the newer wins, and it is listed
    k_con, c_con = _link(world, "contacts", 1)
    world.keap.patch(f"/contacts/{k_con}", params={"update_mask": "job_title"}, json={"job_title": "older"})
    time.sleep(2)  # newer by more than two servers' clocks can be told apart (else a tie: Keap wins)
    world.crm.patch(f"/contacts/{c_con}", json={"Title": "newer"})
    # a renamed email keeps its link
    k_mail, c_mail = _link(world, "contacts", 2)
    keap_record = world.keap.get(f"/contacts/{k_mail}").json()
    emails = [e for e in keap_record["email_addresses"] if e["field"] != "EMAIL1"]
    world.keap.patch(
        f"/contacts/{k_mail}",
        params={"update_mask": "email_addresses"},
        json={"email_addresses": [{"email": "renamed@x.example", "field": "EMAIL1"}, *emails]},
    )
    # a deleted record -> no delete by default; the link shows as orphaned
    k_del, _ = _link(world, "orders", 0)
    world.keap.delete(f"/opportunities/{k_del}")

    plan = world.sync(dry_run=True, ingest=IngestOptions(full_pass=True))
    assert plan.status == "ok", plan.error

    creates = _rows(world, "sync_customcrm__contacts", "op = 'create'")
    assert [c["keap_id"] for c in creates] == [new["id"]]
    payload = json.loads(creates[0]["payload"])
    assert payload["ExternalRefs"] == {"keap": new["id"]} and payload["Email"] == "nina@new.example"
    assert (
        payload["FirstName"] == "Nina"
        and creates[0]["idempotency_key"] == f"crmsync:contacts:keap:{new['id']}"
    )

    updates = {r["keap_id"]: r for r in _rows(world, "sync_customcrm__contacts", "op = 'update'")}
    assert json.loads(updates[k_edit]["payload"]) == {"Title": "Keap edit"}
    assert updates[k_edit]["if_match"].startswith('"')
    assert json.loads(updates[k_mail]["payload"]) == {"Email": "renamed@x.example"}
    assert set(updates) == {k_edit, k_mail}  # the conflict's winner is Customcrm: nothing to Customcrm

    to_keap = {r["keap_id"]: r for r in _rows(world, "sync_keap__contacts")}
    assert set(to_keap) == {k_con}
    assert json.loads(to_keap[k_con]["payload"]) == {"job_title": "newer"} and to_keap[k_con][
        "update_mask"
    ] == ["job_title"]
    conflicts = _rows(world, "sync_conflicts", f"keap_id = '{k_con}'")
    assert [(c["field"], c["keap_value"], c["customcrm_value"], c["winner"]) for c in conflicts] == [
        ("title", "older", "newer", "customcrm")
    ]

    companies = _rows(world, "sync_keap__companies")
    assert [c["keap_id"] for c in companies] == [k_cus] and companies[0]["update_mask"] == ["address"]
    address = json.loads(companies[0]["payload"])["address"]
    before = world.keap.get(f"/companies/{k_cus}").json().get("address", {})
    assert address == {**before, "locality": "Hamar"}  # every other key of the address as Keap has it

    assert not _rows(world, "sync_keap__products") and not _rows(world, "sync_customcrm__products")
    assert _rows(world, "link_contacts", f"keap_id = '{k_mail}'")[0]["customcrm_id"] == c_mail
    assert not _rows(world, "sync_customcrm__orders", "op = 'delete'")
    orphan = _rows(world, "link_orders", f"keap_id = '{k_del}'")[0]
    assert orphan["link_status"] == "orphaned" and "deleted in Keap" in orphan["status_reason"]


@pytest.mark.synced
def test_deleting_counterparts_is_an_option_and_covers_only_linked_records(world: World) -> None:
    k_del, c_del = _link(world, "orders", 0)
    world.keap.delete(f"/opportunities/{k_del}")
    outcome = world.sync(
        variables={
            "delete_counterparts": {"customers": False, "contacts": False, "orders": True, "products": False}
        },
        ingest=IngestOptions(full_pass=True),
    )
    assert outcome.status == "ok" and outcome.push.mappings["orders"].deleted == 1
    assert world.crm.get(f"/orders/{c_del}").status_code == 404
    crm_only_orders = [o for o in world.crm_all("orders") if not o["ExternalRefs"].get("keap")]
    assert crm_only_orders  # never covered by a link: untouched


@pytest.mark.synced
def test_the_readme_queries_run_and_answer(world: World) -> None:
    world.keap.post(
        "/contacts",
        json={
            "given_name": "Unlinked",
            "email_addresses": [{"email": "unlinked@x.example", "field": "EMAIL1"}],
        },
    )
    world.sync(dry_run=True)
    readme = (REPO / "README.md").read_text()
    start = readme.index("## For analysts")
    section = readme[start : readme.index("\n## ", start + 1)]
    queries = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(queries) == 3
    with connect(world.settings.db_path) as con:
        unlinked = con.execute(queries[0]).fetchall()
        assert any(row[2] == "unlinked@x.example" and row[3] == "to_be_created" for row in unlinked)
        last_writes = con.execute(queries[1]).fetchall()
        assert last_writes and all(row[6] == "ok" for row in last_writes)
        con.execute(queries[2]).fetchall()


def test_every_column_every_model_builds_is_documented(world: World) -> None:
    """Not only the columns the YAML lists: every column the models really produce."""
    assert world.sync(dry_run=True).status == "ok"
    from crmsync.dataflow import manifest

    nodes = {
        n["name"]: n
        for n in manifest(world.settings.db_path)["nodes"].values()
        if n["resource_type"] == "model"
    }
    built = world.sql(
        """select table_name, column_name from information_schema.columns
           where table_schema in ('staging', 'intermediate', 'main')"""
    )
    undocumented = sorted(
        f"{table}.{column}"
        for table, column in built
        if table in nodes and not (nodes[table]["columns"].get(column) or {}).get("description", "").strip()
    )
    assert {table for table, _ in built} >= set(nodes)  # every model was built
    assert not undocumented, undocumented
