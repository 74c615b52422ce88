""" "Newest wins" compares two servers' clocks: each run measures them from the answers'
Date headers, records the offsets, and the merge compares update times on one clock."""

from __future__ import annotations

import time

from tests.conftest import admin
from tests.e2e.conftest import World


def test_a_customcrm_clock_60_s_behind_does_not_make_its_newer_edit_lose(world: World) -> None:
    admin(world.crm, world.boxes.customcrm_root, "/_sandbox/config", {"clock_offset_s": -60})
    first = world.sync()
    assert first.status == "ok"
    offsets = dict(
        (system, (offset, uncertainty))
        for system, offset, uncertainty in world.sql(
            f"select system, offset_s, uncertainty_s from sync_state.clock_offsets where run_id = '{first.run_id}'"
        )
    )
    crm_offset, crm_uncertainty = offsets["customcrm"]
    keap_offset, keap_uncertainty = offsets["keap"]
    assert abs(crm_offset + 60) <= crm_uncertainty + 0.01 and crm_uncertainty <= 0.5
    assert abs(keap_offset) <= keap_uncertainty + 0.01 and keap_uncertainty <= 0.5

    keap_id, crm_id = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts'"
    )[0]
    world.keap.patch(
        f"/contacts/{keap_id}", params={"update_mask": "job_title"}, json={"job_title": "Keap, earlier"}
    )
    time.sleep(2)  # the Customcrm edit is 2 s later; its clock stamps it 58 s before Keap's
    world.crm.patch(f"/contacts/{crm_id}", json={"Title": "Customcrm, later"})
    stamped = world.crm.get(f"/contacts/{crm_id}").json()["UpdatedAt"]
    assert stamped < world.keap.get(f"/contacts/{keap_id}").json()["update_time"]  # as the raw stamps say

    merged = world.sync()
    assert merged.status == "ok"
    assert world.sql(
        f"select winner, reason from sync_state.conflicts where run_id = '{merged.run_id}' and keap_id = '{keap_id}'"
    ) == [("customcrm", "conflict_customcrm_newer")]
    assert world.keap.get(f"/contacts/{keap_id}").json()["job_title"] == "Customcrm, later"
    assert world.crm.get(f"/contacts/{crm_id}").json()["Title"] == "Customcrm, later"
    world.served()
    assert not world.sync().push.wrote
