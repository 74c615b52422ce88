"""Customcrm batches: capped by bytes as well as by count, split when the server says 413,
one operation too large refused alone, the others go through."""

from __future__ import annotations

from tests.conftest import admin
from tests.e2e.conftest import World

DELETE_ORDERS = {
    "delete_counterparts": {"customers": False, "contacts": False, "orders": True, "products": False}
}


def _new_products(world: World, count: int, description: str) -> list[str]:
    ids = []
    for n in range(count):
        body = {"name": f"Long {n}", "sku": f"LONG-{n:03d}", "price": 1000 + n, "short_description": "long", "active": True,
                "description": description}  # fmt: skip
        answer = world.keap.post("/products", json=body)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    return ids


def test_batches_stay_under_the_body_limit_split_on_413_and_refuse_one_oversized_row(world: World) -> None:
    ids = _new_products(world, 100, "ø" * 10_000)  # 20,000 bytes each: 2 MB for 100
    created = world.sync()
    assert created.status == "ok", (created.push.rejections, created.problems)
    assert created.push.mappings["products"].created >= 100
    stored = {p["ExternalRefs"].get("keap"): p for p in world.crm_all("products")}
    assert stored[ids[0]]["Description"] == "ø" * 10_000 and set(ids) <= set(stored)

    # a server that takes less than the contract says: halved on 413 until each batch fits;
    # a row too large alone is refused with its size, the rest goes through
    admin(world.crm, world.boxes.customcrm_root, "/_sandbox/config", {"max_body_bytes": 30_000})
    for n, keap_id in enumerate(ids[:10]):
        world.keap.patch(f"/products/{keap_id}", params={"update_mask": "description"},
                         json={"description": f"shorter {n} " + "x" * 5_000})  # fmt: skip
    world.keap.patch(f"/products/{ids[10]}", params={"update_mask": "description"},
                     json={"description": "😀" * 10_000})  # 40,000 bytes alone  # fmt: skip
    split = world.sync()
    products = split.push.mappings["products"]
    assert (products.updated, products.rejected, products.failed) == (10, 1, 0), split.push.as_dict()
    (refused,) = split.push.rejections
    assert refused["keap_id"] == ids[10] and refused["status"] == 413
    assert (
        refused["reason"].startswith("the operation is 40,")
        and "over what the server takes" in refused["reason"]
    )
    assert world.crm.get(f"/products/{stored[ids[3]]['Id']}").json()["Description"].startswith("shorter 3 ")
