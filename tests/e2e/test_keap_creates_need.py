"""The reverse flow sends Keap only creates its document allows: a Customcrm product without
the short description Keap requires waits, saying so, and goes once it has one."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import World

REVERSE = {"create_in_keap": True}


@pytest.mark.synced
def test_a_product_keap_cannot_create_waits_with_the_reason_and_goes_once_fixed(world: World) -> None:
    linked = {r[0] for r in world.sql("select customcrm_id from sync_state.links where mapping = 'products'")}
    crm_only = [c for c in world.crm_all("products") if c["Id"] not in linked]
    assert crm_only
    product = crm_only[0]
    world.crm.patch(f"/products/{product['Id']}", json={"ShortDescription": None})
    for other in crm_only[1:]:
        world.crm.patch(f"/products/{other['Id']}", json={"ShortDescription": "made in Customcrm"})
    keap_before = {p["id"] for p in world.keap_all("products")}

    world.served()
    outcome = world.sync(variables=REVERSE)
    keap_served, _ = world.served()
    assert outcome.status == "ok", outcome.problems
    assert keap_served["by_status"].get("400", 0) == 0  # nothing Keap would refuse was sent
    assert outcome.push.mappings["products"].waiting == 1
    created = [p for p in world.keap_all("products") if p["id"] not in keap_before]
    assert product["Sku"] not in {p.get("sku") for p in created}
    assert len(created) == len(crm_only) - 1
    reason = world.sql(
        "select status, waiting_reason from sync_keap__products"
        f" where op = 'create' and customcrm_id = '{product['Id']}'"
    )
    assert reason == [("waiting", "Keap needs short_description to create it: set it in Customcrm")]

    world.crm.patch(f"/products/{product['Id']}", json={"ShortDescription": "now it has one"})
    again = world.sync(variables=REVERSE)
    assert again.status == "ok" and again.push.mappings["products"].created == 1
    assert product["Sku"] in {p.get("sku") for p in world.keap_all("products")}
