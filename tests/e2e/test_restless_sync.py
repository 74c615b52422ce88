"""Whole syncs against an account that moves while it is read (issue: ingest loses nothing):
every Keap record ends with its counterpart and its latest values; a full pass with
deletion propagation on never deletes a live record's counterpart; one record's bad value
never fails the build; a stalled API cannot keep a run alive past its deadline."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.ingest import IngestOptions
from tests.conftest import admin
from tests.e2e.conftest import World

RESOURCES = {
    "customers": "companies",
    "contacts": "contacts",
    "orders": "opportunities",
    "products": "products",
}
EVERYTHING = {"resources": list(RESOURCES.values()), "edit": 1, "delete": 1, "create": 1}


def _keap(world: World, settings: dict) -> dict:
    return admin(world.keap, world.boxes.keap_root, "/_sandbox/config", settings)


def test_a_sync_while_keap_moves_gives_every_record_its_counterpart_with_its_latest_values(
    world: World,
) -> None:
    """Paging by position: the mode that loses records for a reader that trusts positions
    (both modes are walked record by record in tests/pipelines/test_ingest_restless.py)."""
    _keap(world, {"paging": "position", "max_page_size": 10, "restless": EVERYTHING})
    world.sync()
    _keap(world, {"restless": {}})
    assert world.sync().status == "ok"  # what changed while the first one read
    done = admin(world.keap, world.boxes.keap_root, "/_sandbox/restless")
    assert done["edited"] and done["deleted"] and done["created"]
    for mapping, resource in RESOURCES.items():
        keap_ids = {r["id"] for r in world.keap_all(resource)}
        links = dict(
            world.sql(f"select keap_id, customcrm_id from sync_state.links where mapping = '{mapping}'")
        )
        assert keap_ids <= set(links), (
            f"{mapping}: Keap records without a counterpart {keap_ids - set(links)}"
        )
    # an edit made behind the reader reached Customcrm
    edited = [d["id"] for d in done["edited"] if d["resource"] == "contacts"]
    links = dict(world.sql("select keap_id, customcrm_id from sync_state.links where mapping = 'contacts'"))
    live = {r["id"]: r for r in world.keap_all("contacts")}
    for keap_id in edited:
        if keap_id in live:
            title = world.crm.get(f"/contacts/{links[keap_id]}").json()["Title"]
            assert title == live[keap_id].get("job_title"), keap_id
    world.served()
    assert not world.sync().push.wrote


def test_a_full_pass_with_deletes_propagated_never_deletes_a_live_records_counterpart(world: World) -> None:
    propagate = {"delete_counterparts": {m: True for m in RESOURCES}}
    assert world.sync(variables=propagate).status == "ok"
    _keap(
        world,
        {
            "paging": "position",
            "max_page_size": 10,
            "restless": {"resources": list(RESOURCES.values()), "delete": 1, "edit": 1},
        },
    )
    world.sync(variables=propagate, ingest=IngestOptions(full_pass=True))
    _keap(world, {"restless": {}})
    world.sync(variables=propagate, ingest=IngestOptions(full_pass=True))
    deleted = {
        (d["resource"], d["id"])
        for d in admin(world.keap, world.boxes.keap_root, "/_sandbox/restless")["deleted"]
    }
    assert deleted
    for mapping, resource in RESOURCES.items():
        live = {r["id"] for r in world.keap_all(resource)}
        links = dict(
            world.sql(f"select keap_id, customcrm_id from sync_state.links where mapping = '{mapping}'")
        )
        for keap_id in live & set(links):  # every live record's counterpart is still there
            answer = world.crm.get(f"/{mapping}/{links[keap_id]}")
            assert answer.status_code == 200, f"{mapping}: the counterpart of live {keap_id} was deleted"
        for keap_id in {i for r, i in deleted if r == resource} & set(links):
            assert world.crm.get(f"/{mapping}/{links[keap_id]}").status_code == 404, keap_id


@pytest.mark.synced
def test_one_records_value_that_does_not_parse_is_held_for_review_and_the_rest_syncs(world: World) -> None:
    keap_id, crm_id = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id limit 1"
    )[0]
    birth_before = world.crm.get(f"/contacts/{crm_id}").json()["BirthDate"]
    answer = world.keap.patch(  # Keap's own check takes it (YYYY-MM-DD), but there is no 30 February
        f"/contacts/{keap_id}",
        params={"update_mask": "birth_date,job_title"},
        json={"birth_date": "1980-02-30", "job_title": "Still synced"},
    )
    assert answer.status_code == 200
    outcome = world.sync()
    assert outcome.status == "ok", outcome.problems
    crm_now = world.crm.get(f"/contacts/{crm_id}").json()
    assert crm_now["Title"] == "Still synced"  # the rest of the record went through
    assert crm_now["BirthDate"] == birth_before  # the bad value neither written nor emptied
    assert world.sql("select system, resource, record_id, field from review_unparseable_values") == [
        ("keap", "contacts", keap_id, "birth_date")
    ]
    world.served()
    assert not world.sync().push.wrote  # held, not retried as a change every run


@pytest.mark.synced
def test_a_stalled_api_cannot_keep_a_run_alive_past_its_deadline(world: World) -> None:
    _keap(world, {"faults": {"latency_ms": 400}})
    world.settings = dataclasses.replace(world.settings, run_deadline_s=0.5)
    outcome = world.sync()
    assert outcome.status == "failed" and outcome.exit_code == 1
    assert outcome.error is not None and "deadline passed (CRMSYNC_RUN_DEADLINE_MINUTES)" in outcome.error
    assert world.sql("select status from sync_state.runs order by started_at desc limit 1") == [("failed",)]
