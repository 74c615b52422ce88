"""Keap's daily request quota: a run whose Keap writes need more of it than is left says so
before it writes, writes what fits (keeping a reserve for reading), leaves the rest to the
runs after the quota resets, and nothing is written twice."""

from __future__ import annotations

import dataclasses

import pytest

from crmsync.run import run_plan
from tests.conftest import admin
from tests.e2e.conftest import World

EDITS = 12
RESERVE = 25


def _keap_day(world: World, per_day: int) -> None:
    """A new day for the key: the sandbox's limiter starts again with this daily quota."""
    admin(world.keap, world.boxes.keap_root, "/_sandbox/config", {"limits": {"per_day": per_day}})


@pytest.mark.synced
def test_keap_writes_past_the_days_quota_wait_for_its_reset_and_none_is_written_twice(world: World) -> None:
    pairs = world.sql(
        f"select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id limit {EDITS}"
    )
    for number, (_, crm_id) in enumerate(pairs):  # each a Keap update to make
        assert world.crm.patch(f"/contacts/{crm_id}", json={"Title": f"Quota {number}"}).status_code == 200
    product_keap, product_crm = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'products' order by keap_id limit 1"
    )[0]
    answer = world.keap.patch(
        f"/products/{product_keap}", json={"name": "Renamed while Keap's quota is short"}
    )
    assert answer.status_code == 200
    world.settings = dataclasses.replace(world.settings, keap_quota_reserve=RESERVE)
    _keap_day(world, per_day=RESERVE + 12)  # the extract's reads, then room for a few writes only
    found = world.endpoints()
    try:  # the plan says it too, and writes nothing
        planned, _ = run_plan(world.settings, found)
    finally:
        found.close()
    assert len(planned.notes) == 1 and "this run needs about" in planned.notes[0], planned.notes
    _keap_day(world, per_day=RESERVE + 12)  # the plan's reads given back: the same day again
    world.served()

    short = world.sync()
    keap, _ = world.served()
    contacts = short.push.mappings["contacts"]
    assert short.status == "incomplete" and short.exit_code == 4, short.problems
    assert len(short.notes) == 1 and "this run needs about" in short.notes[0], short.notes
    assert f"{RESERVE} kept for reading" in short.notes[0]
    assert 0 < contacts.updated < EDITS and contacts.deferred == EDITS - contacts.updated
    assert short.problems == [
        next(p for p in short.problems if p.startswith(f"contacts: {contacts.deferred} Keap writes wait for"))
    ]
    assert "the next run after that writes them" in short.problems[0]
    assert keap["writes"] == contacts.updated  # the deferred ones were never sent
    left = int(world.keap.get("/contacts", params={"page_size": 1}).headers["x-keap-product-quota-available"])
    assert left >= RESERVE - 10  # the reserve was kept: the read-back and this read came out of it
    # the Customcrm side did not wait for Keap's quota
    assert world.crm.get(f"/products/{product_crm}").json()["Name"] == "Renamed while Keap's quota is short"
    titles = {k: world.keap.get(f"/contacts/{k}").json().get("job_title") for k, _ in pairs}
    assert sum(t == f"Quota {n}" for n, t in enumerate(titles.values())) == contacts.updated

    _keap_day(world, per_day=30_000)  # the quota reset
    world.served()
    after = world.sync()
    keap, _ = world.served()
    assert after.status == "ok" and after.notes == [], after.problems
    assert after.push.mappings["contacts"].updated == contacts.deferred
    assert keap["writes"] == contacts.deferred  # only the ones left: none written twice
    assert [world.keap.get(f"/contacts/{k}").json()["job_title"] for k, _ in pairs] == [
        f"Quota {n}" for n in range(EDITS)
    ]
    world.served()
    assert not world.sync().push.wrote
    assert world.served()[0]["writes"] == 0
