"""Stage -> Status on any account: the seed names some stages ("Closed Won"), the others map
by their win probability ("Won" at 100, "Lost" at 0); both ways end to end."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import World


def _stage_id(world: World, name: str) -> str:
    stages = world.keap.get("/opportunities/stages").json()["stages"]
    return next(s["id"] for s in stages if s["name"] == name)


@pytest.mark.synced
def test_stages_named_won_and_lost_map_by_probability_and_the_seeds_names_by_the_seed(world: World) -> None:
    pairs = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'orders' order by keap_id limit 3"
    )
    for (keap_id, _), stage in zip(pairs, ("Won", "Lost", "Closed Won"), strict=True):
        answer = world.keap.patch(
            f"/opportunities/{keap_id}",
            params={"update_mask": "stage_id"},
            json={"stage_id": _stage_id(world, stage)},
        )
        assert answer.status_code == 200
    outcome = world.sync()
    assert outcome.status == "ok" and outcome.exit_code == 0, outcome.problems
    got = [world.crm.get(f"/orders/{crm_id}").json() for _, crm_id in pairs]
    assert [(o["Stage"], o["Status"]) for o in got] == [
        ("Won", "won"),
        ("Lost", "lost"),
        ("Closed Won", "won"),
    ]
    sources = dict(world.sql("select stage_name, status_source from intermediate.int_opportunity_stages"))
    assert sources["Won"] == sources["Lost"] == "probability" and sources["Closed Won"] == "seed"


@pytest.mark.synced
def test_an_edit_of_a_customcrm_order_reaches_keap_and_a_status_alone_picks_the_seeds_stage(
    world: World,
) -> None:
    keap_id, crm_id = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'orders' order by keap_id limit 1"
    )[0]
    answer = world.crm.patch(
        f"/orders/{crm_id}", json={"Title": "Edited order", "Status": "lost", "Stage": None}
    )
    assert answer.status_code == 200
    outcome = world.sync()
    assert outcome.status == "ok" and outcome.exit_code == 0, outcome.problems
    keap_now = world.keap.get(f"/opportunities/{keap_id}").json()
    assert keap_now["opportunity_title"] == "Edited order"
    assert keap_now["stage"]["name"] == "Closed Lost"  # the seed's default for lost, not "Lost"
    assert world.crm.get(f"/orders/{crm_id}").json()["Stage"] == "Closed Lost"
