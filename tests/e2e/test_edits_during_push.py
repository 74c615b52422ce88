"""Edits made in both systems while a run is pushing are never overwritten: Keap's writes
are re-read before each chunk (Keap has no ETag), Customcrm's carry If-Match; the next
run merges them, and the one after writes nothing."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

import reverse_etl.keap_watch
import reverse_etl.push
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


def test_edits_in_both_systems_during_the_push_are_held_and_merged_next_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.sync().status == "ok"
    contacts = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id limit 6"
    )
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

    monkeypatch.setattr(reverse_etl.push, "CHUNK_FIRST", 2)  # chunks of two: three re-reads
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

    merged = world.sync()  # both changed since the base: the newer edit wins, recorded as a conflict
    assert merged.status == "ok", merged.push.as_dict()
    assert world.crm.get(f"/contacts/{last_crm}").json()["Title"] == "typed in Keap meanwhile"
    assert (
        world.keap.get(f"/opportunities/{order_keap}").json()["opportunity_title"]
        == "typed in Customcrm meanwhile"
    )
    decided = world.sql(
        "select mapping, keap_id, winner from sync_state.conflicts"
        f" where run_id = '{merged.run_id}' and field = 'title' order by mapping"
    )
    assert decided == [("contacts", last_keap, "keap"), ("orders", order_keap, "customcrm")]
    world.served()
    assert not world.sync().push.wrote
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0
