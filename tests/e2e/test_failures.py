"""What goes wrong in the push, one run after another in one world, and the runs after it
converge with no duplicate, no lost edit and nothing left to write: a Customcrm batch
resent after its answer was lost finds its own writes done (not stale, not refused); a
create whose body changed since an earlier attempt gets a key of its own; Keap's daily
quota stops the run at once and says when it resets; an answer that is not JSON fails
the rows it carried, named in one line; a run closed as failed, never a traceback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pipelines.ingest import IngestOptions
from tests.e2e.conftest import World

DELETE_ORDERS = {
    "delete_counterparts": {"customers": False, "contacts": False, "orders": True, "products": False}
}

QUOTA_BODY = {"code": "429", "message": "Quota Exceeded", "status": "Request Throttled", "details": None}


class QuotaUsedUpAtTheFirstPatch(httpx.HTTPTransport):
    """Keap once the day's quota is spent: every request from the first PATCH on is a 429
    whose headers say 0 left, and when the quota resets."""

    def __init__(self, resets: datetime) -> None:
        super().__init__()
        self.resets, self.refused = resets, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refused or request.method == "PATCH":
            self.refused += 1
            headers = {
                "x-keap-product-quota-available": "0",
                "x-keap-product-quota-used": "30000",
                "x-keap-product-quota-expiry-time": str(int(self.resets.timestamp() * 1000)),
            }
            return httpx.Response(429, json=QUOTA_BODY, headers=headers, request=request)
        return super().handle_request(request)


class HtmlForBatches(httpx.HTTPTransport):
    """A proxy in front of Customcrm answering its batch calls with an HTML page."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/batch"):
            page = "<html><body>upstream timed out</body></html>"
            return httpx.Response(200, text=page, headers={"content-type": "text/html"}, request=request)
        return super().handle_request(request)


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


@pytest.mark.synced
def test_lost_answers_a_spent_quota_and_an_answer_that_is_not_json_converge(world: World) -> None:
    links = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id"
    )
    (k0, c0), (k1, c1), (k2, c2), (k3, c3), (k4, c4) = links[:5]

    # a batch resent after its answer was lost: two updates, a create and a delete, all done
    for keap_id in (k0, k1):
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
    assert [world.crm.get(f"/contacts/{c}").json()["Title"] for c in (c0, c1)] == ["edited", "edited"]
    assert [c["ExternalRefs"].get("keap") for c in world.crm_all("contacts")].count(new["id"]) == 1

    # Keap's daily quota spent at the first PATCH: the run stops at once, in one line
    world.crm.patch(f"/contacts/{c2}", json={"Title": "to Keap 2"})
    world.crm.patch(f"/contacts/{c3}", json={"Title": "to Keap 3"})
    world.keap.patch(
        f"/contacts/{k4}", params={"update_mask": "job_title"}, json={"job_title": "to Customcrm"}
    )
    resets = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    quota = QuotaUsedUpAtTheFirstPatch(resets)
    stopped = world.sync(keap_transport=quota, variables=DELETE_ORDERS)
    assert stopped.status == "failed" and stopped.exit_code == 1
    assert quota.refused <= 2  # the two PATCHes in flight together, no retry, nothing sent after
    assert stopped.error == (
        f"Keap's daily request quota is spent; it resets at {resets:%Y-%m-%d} 00:00 UTC: the next run after "
        "that goes on where this one stopped [keap]"
    )
    assert stopped.push.mappings["contacts"].updated == 1  # Customcrm's write went before it
    status, summary_json = world.sql(
        f"select status, summary from sync_state.runs where run_id = '{stopped.run_id}'"
    )[0]
    assert status == "failed" and json.loads(summary_json)["error"] == stopped.error
    assert world.keap.get(f"/contacts/{k2}").json().get("job_title") != "to Keap 2"

    # an HTML page for Customcrm's batches: those rows fail, named in one line; Keap's go on
    world.keap.patch(f"/contacts/{k4}", params={"update_mask": "job_title"}, json={"job_title": "again"})
    garbled = world.sync(customcrm_transport=HtmlForBatches(), variables=DELETE_ORDERS)
    assert garbled.status == "failed" and garbled.exit_code == 1 and garbled.error is None
    assert garbled.problems == [
        "contacts: 1 write failed (customcrm: answered 200 with something that is not JSON (text/html): "
        "'<html><body>upstream timed out</body></html>' "
        f"[customcrm POST {world.boxes.customcrm_url}/contacts/batch]); the next run sends them again"
    ]
    assert world.keap.get(f"/contacts/{k2}").json()["job_title"] == "to Keap 2"

    # a create applied while every retry was refused; the record is then deleted in
    # Customcrm and the Keap contact edited: the next create has another body, so another key
    later = _new_contact(world, "Later")
    refused = world.sync(customcrm_transport=LoseFirstAnswers(refuse_retries=True), variables=DELETE_ORDERS)
    assert refused.push.mappings["contacts"].failed >= 1
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
    assert world.crm.get(f"/contacts/{c4}").json()["Title"] == "again"
    assert [world.keap.get(f"/contacts/{k}").json()["job_title"] for k in (k2, k3)] == [
        "to Keap 2",
        "to Keap 3",
    ]
    world.served()
    assert not world.sync(variables=DELETE_ORDERS).push.wrote
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0
