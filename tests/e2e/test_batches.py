"""Customcrm batches: capped by bytes as well as by count, split when the server says 413,
one operation too large refused alone; a batch resent after its answer was lost finds
its own writes done, not stale or refused; a create whose body changed since an earlier
attempt gets a key of its own."""

from __future__ import annotations

from typing import Any

import httpx

from pipelines.ingest import IngestOptions
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


class LoseFirstAnswers(httpx.HTTPTransport):
    """Customcrm applies each first batch call, then the answer is lost (the connection
    drops); `refuse_retries`: every later call to that endpoint is a 503 (the retries run out)."""

    def __init__(self, refuse_retries: bool = False) -> None:
        super().__init__()
        self.refuse_retries = refuse_retries
        self.seen: dict[str, int] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/batch"):
            seen = self.seen[request.url.path] = self.seen.get(request.url.path, 0) + 1
            if seen == 1:
                super().handle_request(request).read()  # applied...
                raise httpx.ReadError("connection dropped", request=request)  # ...answer lost
            if self.refuse_retries:
                return httpx.Response(503, json={"title": "Unavailable", "status": 503}, request=request)
        return super().handle_request(request)


def _new_contact(world: World, name: str) -> dict[str, Any]:
    body = {
        "given_name": name,
        "email_addresses": [{"email": f"{name.lower()}@new.example", "field": "EMAIL1"}],
    }
    return world.keap.post("/contacts", json=body).json()  # type: ignore[no-any-return]


def test_a_batch_resent_after_its_answer_was_lost_counts_its_own_writes_as_done(world: World) -> None:
    assert world.sync(variables=DELETE_ORDERS).status == "ok"
    contacts = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' limit 2"
    )
    for keap_id, _ in contacts:
        world.keap.patch(
            f"/contacts/{keap_id}", params={"update_mask": "job_title"}, json={"job_title": "edited"}
        )
    order_keap, order_crm = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'orders'"
    )[0]
    world.keap.delete(f"/opportunities/{order_keap}")
    new = _new_contact(world, "Resent")

    resent = world.sync(customcrm_transport=LoseFirstAnswers(), variables=DELETE_ORDERS,
                        ingest=IngestOptions(full_pass=True))  # fmt: skip
    summary = resent.push.mappings
    assert resent.status == "ok", resent.push.as_dict()
    assert (summary["contacts"].updated, summary["contacts"].created, summary["orders"].deleted) == (2, 1, 1)
    assert sum(s.stale + s.rejected + s.failed for s in summary.values()) == 0
    assert world.crm.get(f"/orders/{order_crm}").status_code == 404
    for _, customcrm_id in contacts:
        assert world.crm.get(f"/contacts/{customcrm_id}").json()["Title"] == "edited"
    assert [c["ExternalRefs"].get("keap") for c in world.crm_all("contacts")].count(new["id"]) == 1

    # a create applied while every retry was refused; the record is then deleted in
    # Customcrm and the Keap contact edited: the next create has another body, so another key
    later = _new_contact(world, "Later")
    refused = world.sync(customcrm_transport=LoseFirstAnswers(refuse_retries=True), variables=DELETE_ORDERS)
    assert refused.push.mappings["contacts"].failed == 1
    (applied,) = [c for c in world.crm_all("contacts") if c["ExternalRefs"].get("keap") == later["id"]]
    assert world.crm.delete(f"/contacts/{applied['Id']}").status_code == 204
    world.keap.patch(
        f"/contacts/{later['id']}", params={"update_mask": "given_name"}, json={"given_name": "Renamed"}
    )
    again = world.sync(variables=DELETE_ORDERS)
    assert again.status == "ok", again.push.rejections
    assert again.push.mappings["contacts"].created == 1
    (made,) = [c for c in world.crm_all("contacts") if c["ExternalRefs"].get("keap") == later["id"]]
    assert made["FirstName"] == "Renamed" and made["Id"] != applied["Id"]
    world.served()
    assert not world.sync(variables=DELETE_ORDERS).push.wrote
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0
