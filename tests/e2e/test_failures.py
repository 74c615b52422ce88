"""A failure in the push is one line and a run closed as failed, never a traceback: Keap's
daily quota stops the run at once and says when it resets; an answer that is not JSON
fails the rows it carried, named in one line; the next runs converge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from tests.e2e.conftest import World

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


def test_a_used_up_quota_and_an_answer_that_is_not_json_are_one_line_each(world: World) -> None:
    assert world.sync().status == "ok"
    links = world.sql("select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' limit 3")
    (k1, c1), (k2, c2), (k3, _) = links
    world.crm.patch(f"/contacts/{c1}", json={"Title": "to Keap 1"})
    world.crm.patch(f"/contacts/{c2}", json={"Title": "to Keap 2"})
    world.keap.patch(
        f"/contacts/{k3}", params={"update_mask": "job_title"}, json={"job_title": "to Customcrm"}
    )

    resets = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    quota = QuotaUsedUpAtTheFirstPatch(resets)
    stopped = world.sync(keap_transport=quota)
    assert stopped.status == "failed" and stopped.exit_code == 1
    assert quota.refused <= 2  # the two PATCHes in flight together, no retry, nothing sent after
    assert stopped.error == (
        f"Keap's daily request quota is spent; it resets at {resets:%Y-%m-%d} 00:00 UTC: the next run after "
        "that goes on where this one stopped [keap]"
    )
    assert stopped.push.mappings["contacts"].updated == 1  # Customcrm's write went before it
    status, summary = world.sql(
        f"select status, summary from sync_state.runs where run_id = '{stopped.run_id}'"
    )[0]
    assert status == "failed" and json.loads(summary)["error"] == stopped.error
    assert world.keap.get(f"/contacts/{k1}").json().get("job_title") != "to Keap 1"

    world.keap.patch(f"/contacts/{k3}", params={"update_mask": "job_title"}, json={"job_title": "again"})
    garbled = world.sync(customcrm_transport=HtmlForBatches())
    assert garbled.status == "failed" and garbled.exit_code == 1 and garbled.error is None
    assert garbled.problems == [
        "contacts: 1 write failed (customcrm: answered 200 with something that is not JSON (text/html): "
        "'<html><body>upstream timed out</body></html>' "
        f"[customcrm POST {world.boxes.customcrm_url}/contacts/batch]); the next run sends them again"
    ]
    assert world.keap.get(f"/contacts/{k2}").json()["job_title"] == "to Keap 2"  # Keap's writes went on

    assert world.sync().status == "ok"
    assert world.crm.get(f"/contacts/{links[2][1]}").json()["Title"] == "again"
    world.served()
    assert not world.sync().push.wrote
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0
