"""Edits made in both systems while a run is pushing are never overwritten: Keap's writes
are re-read before each chunk (Keap has no ETag), Customcrm's carry If-Match; the next
run merges them, and the one after writes nothing. "Newest wins" compares two servers'
clocks: each run measures them from the answers' Date headers, records the offsets, and
the merge compares update times on one clock (here Customcrm's clock is 60 s behind)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

import reverse_etl.keap_target
import reverse_etl.keap_watch
from support.times import parse_time
from tests.conftest import admin
from tests.e2e.conftest import World


class EditWhenPatched(httpx.HTTPTransport):
    """Keap; when the first contact PATCH goes out, users edit both systems meanwhile."""

    def __init__(self, edit: Callable[[], None]) -> None:
        super().__init__()
        self.edit, self.patches = edit, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and "/contacts/" in request.url.path:
            self.patches += 1
            if self.patches == 1:
                self.edit()
        return super().handle_request(request)


def test_edits_in_both_systems_during_the_push_are_held_and_merged_next_run_on_one_clock(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin(world.crm, world.boxes.customcrm_root, "/_sandbox/config", {"clock_offset_s": -60})
    first = world.sync()
    assert first.status == "ok"
    offsets = {system: (offset, uncertainty) for system, offset, uncertainty in world.sql(
        f"select system, offset_s, uncertainty_s from sync_state.clock_offsets where run_id = '{first.run_id}'")}  # fmt: skip
    crm_offset, crm_uncertainty = offsets["customcrm"]
    keap_offset, keap_uncertainty = offsets["keap"]
    assert abs(crm_offset + 60) <= crm_uncertainty + 0.01 and crm_uncertainty <= 0.5
    assert abs(keap_offset) <= keap_uncertainty + 0.01 and keap_uncertainty <= 0.5

    contacts = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id limit 7"
    )
    clock_keap, clock_crm = contacts.pop()  # for the clocks, below
    for _, customcrm_id in contacts:
        world.crm.patch(f"/contacts/{customcrm_id}", json={"Title": "from Customcrm"})  # 6 Keap PATCHes due
    last_keap, last_crm = contacts[-1]  # written in the last chunk
    order_keap, order_crm = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'orders'"
    )[0]
    world.keap.patch(f"/opportunities/{order_keap}", params={"update_mask": "opportunity_title"},
                     json={"opportunity_title": "from Keap"})  # a Customcrm update due  # fmt: skip

    def users_edit_meanwhile() -> None:
        world.keap.patch(f"/contacts/{last_keap}", params={"update_mask": "job_title"},
                         json={"job_title": "typed in Keap meanwhile"})  # fmt: skip
        world.crm.patch(f"/orders/{order_crm}", json={"Title": "typed in Customcrm meanwhile"})

    monkeypatch.setattr(reverse_etl.keap_target, "CHUNK_FIRST", 2)  # chunks of two: three re-reads
    monkeypatch.setattr(reverse_etl.keap_watch, "CHUNK_MAX", 2)
    editing = EditWhenPatched(users_edit_meanwhile)
    during = world.sync(keap_transport=editing)
    contacts_done, orders_done = during.push.mappings["contacts"], during.push.mappings["orders"]
    assert (contacts_done.updated, contacts_done.held_back) == (5, 1), during.push.as_dict()
    assert orders_done.stale == 1
    assert during.push.keap_read_to_write.rereads >= 3
    assert world.keap.get(f"/contacts/{last_keap}").json()["job_title"] == "typed in Keap meanwhile"
    assert world.crm.get(f"/orders/{order_crm}").json()["Title"] == "typed in Customcrm meanwhile"
    assert world.keap.get(f"/opportunities/{order_keap}").json()["opportunity_title"] == "from Keap"

    # a Customcrm edit 2 s after Keap's, which Customcrm's clock stamps 58 s before it
    world.keap.patch(f"/contacts/{clock_keap}", params={"update_mask": "job_title"},
                     json={"job_title": "Keap, earlier"})  # fmt: skip
    time.sleep(2)
    world.crm.patch(f"/contacts/{clock_crm}", json={"Title": "Customcrm, later"})
    stamped = parse_time(world.crm.get(f"/contacts/{clock_crm}").json()["UpdatedAt"])
    assert stamped < parse_time(world.keap.get(f"/contacts/{clock_keap}").json()["update_time"])  # type: ignore[operator]

    merged = world.sync()  # both changed since the base: the newer edit wins, recorded as a conflict
    assert merged.status == "ok", merged.push.as_dict()
    assert world.crm.get(f"/contacts/{last_crm}").json()["Title"] == "typed in Keap meanwhile"
    assert (
        world.keap.get(f"/opportunities/{order_keap}").json()["opportunity_title"]
        == "typed in Customcrm meanwhile"
    )
    assert world.keap.get(f"/contacts/{clock_keap}").json()["job_title"] == "Customcrm, later"
    decided = world.sql(
        "select mapping, keap_id, winner, reason from sync_state.conflicts"
        f" where run_id = '{merged.run_id}' and field = 'title'"
    )
    assert sorted(decided) == sorted([
        ("contacts", last_keap, "keap", "conflict_keap_newer"),
        ("contacts", clock_keap, "customcrm", "conflict_customcrm_newer"),
        ("orders", order_keap, "customcrm", "conflict_customcrm_newer"),  # stamped 60 s early, yet newer
    ])  # fmt: skip
    world.served()
    assert not world.sync().push.wrote
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0
