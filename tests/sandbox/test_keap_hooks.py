"""The Keap sandbox's REST hooks (v1 `/hooks`): registration, the verification handshake,
batched delivery of the changes made through v2, Keap's retries, and Inactive after a 410
or the 4th failed attempt. A small receiver stands in for whatever listens at the hookUrl."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandbox.bundle import Sandboxes
from sandbox.keap.hooks import EVENT_KEYS, MAX_OBJECT_KEYS, HookSettings
from sandbox.runtime import ServerThread
from tests.conftest import admin

# the keys crmsync subscribes to: every one must be among those the sandbox (and Keap) offer
NEEDED = {f"{kind}.{verb}" for kind in ("contact", "company", "opportunity", "product")
          for verb in ("add", "edit", "delete")} | {"opportunity.stage_move"}  # fmt: skip


@dataclass
class Listener:
    """A hook receiver whose answers the test decides: `echo` the X-Hook-Secret or not, and
    the status to answer deliveries with."""

    echo: bool = True
    status: int = 200
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        secret = request.headers.get("x-hook-secret")
        if secret is not None:
            response = Response(headers={"X-Hook-Secret": secret} if self.echo else {})
        else:
            body = await request.json()
            with self.lock:
                response = Response(status_code=self.status)  # decided before the test hears of it
                self.deliveries.append(body)
                self.lock.notify_all()
        await response(scope, receive, send)

    def wait(self, condition: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not condition():
                left = deadline - time.monotonic()
                assert left > 0, f"never happened; deliveries: {self.deliveries}"
                self.lock.wait(timeout=min(left, 0.05))

    def ids(self, event_key: str) -> list[str]:
        return [
            str(item["id"])
            for d in self.deliveries
            if d["event_key"] == event_key
            for item in d["object_keys"]
        ]


@pytest.fixture
def listener() -> Iterator[tuple[Listener, str]]:
    found = Listener()
    server = ServerThread(found).start()
    try:
        yield found, server.url + "/keap-events"
    finally:
        server.stop()


@pytest.fixture
def v1(sandboxes: Sandboxes) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sandboxes.keap_root + "/crm/rest/v1",
        headers={"X-Keap-API-Key": sandboxes.keap.credentials.api_key},
        timeout=10,
    ) as client:
        yield client


def fast(keap: httpx.Client, boxes: Sandboxes, delay_s: Any = (0.02, 0.04)) -> None:
    """Keap's schedule, shrunk: the delivery delay and, by the same factor, the retries."""
    admin(keap, boxes.keap_root, "/_sandbox/config", {"hooks": {"delay_s": list(delay_s), "seed": 3}})


def state(keap: httpx.Client, boxes: Sandboxes) -> dict[str, Any]:
    return admin(keap, boxes.keap_root, "/_sandbox/hooks")


def wait_for(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


def subscribe(v1: httpx.Client, boxes: Sandboxes, event_key: str, url: str) -> str:
    """Create a subscription; return its key once Keap's verification request was answered."""
    made = v1.post("/hooks", json={"eventKey": event_key, "hookUrl": url})
    assert made.status_code == 200, made.text
    assert made.json()["status"] == "Unverified" and made.json()["eventKey"] == event_key
    key = str(made.json()["key"])
    wait_for(lambda: any(a["key"] == key and "verified" in a["result"] for a in boxes.keap.hooks.attempts))
    return key


def test_event_keys_offer_what_the_sync_needs_and_registration_verifies_by_echo(
    sandboxes: Sandboxes, keap: httpx.Client, v1: httpx.Client, listener: tuple[Listener, str]
) -> None:
    found, url = listener
    offered = v1.get("/hooks/event_keys").json()
    assert offered == list(EVENT_KEYS) and set(offered) >= NEEDED
    assert v1.post("/hooks", json={"eventKey": "contact.merge", "hookUrl": url}).status_code == 400
    assert v1.post("/hooks", json={"eventKey": "contact.add", "hookUrl": "ftp://x"}).status_code == 400
    unauthenticated = httpx.get(sandboxes.keap_root + "/crm/rest/v1/hooks")
    assert unauthenticated.status_code == 401

    key = subscribe(v1, sandboxes, "contact.add", url)
    assert v1.get(f"/hooks/{key}").json() == {
        "key": key, "eventKey": "contact.add", "hookUrl": url, "status": "Verified"}  # fmt: skip

    found.echo = False  # a receiver that does not echo the secret is never verified
    other = subscribe(v1, sandboxes, "contact.edit", url)
    assert v1.get(f"/hooks/{other}").json()["status"] == "Unverified"
    assert v1.post(f"/hooks/{other}/verify").json()["status"] == "Unverified"
    found.echo = True
    assert v1.post(f"/hooks/{other}/verify").json()["status"] == "Verified"  # answered with the result
    assert {h["key"] for h in v1.get("/hooks").json()} == {key, other}

    changed = v1.put(f"/hooks/{other}", json={"eventKey": "contact.delete", "hookUrl": url})
    assert changed.json()["eventKey"] == "contact.delete"
    wait_for(lambda: v1.get(f"/hooks/{other}").json()["status"] == "Verified")
    assert v1.delete(f"/hooks/{other}").status_code == 204
    assert v1.get(f"/hooks/{other}").status_code == 404
    assert [h["key"] for h in v1.get("/hooks").json()] == [key]
    served = admin(keap, sandboxes.keap_root, "/_sandbox/stats")["by_endpoint"]
    assert (
        served["GET /v1/hooks/{key}"] >= 3 and served["POST /v1/hooks/{key}/verify"] == 2
    )  # counted as Keap's


def test_delayed_verification_takes_the_secret_the_hook_url_was_sent(
    sandboxes: Sandboxes, keap: httpx.Client, v1: httpx.Client, listener: tuple[Listener, str]
) -> None:
    found, url = listener
    found.echo = False
    key = subscribe(v1, sandboxes, "product.add", url)
    assert v1.post(f"/hooks/{key}/delayedVerify", headers={"X-Hook-Secret": "guessed"}).status_code == 400
    with sandboxes.keap.hooks.cond:
        sent = sandboxes.keap.hooks.hooks[key].secret
    assert sent
    done = v1.post(f"/hooks/{key}/delayedVerify", headers={"X-Hook-Secret": sent})
    assert done.json()["status"] == "Verified"


def test_changes_through_v2_are_delivered_in_batches_of_their_event_key(
    sandboxes: Sandboxes, keap: httpx.Client, v1: httpx.Client, listener: tuple[Listener, str]
) -> None:
    found, url = listener
    sandboxes.seed_demo(size=3, seed=5)
    fast(keap, sandboxes, delay_s=(0.3, 0.3))  # long enough for the three edits to share a batch
    for event_key in ("contact.add", "contact.edit", "contact.delete", "opportunity.stage_move"):
        subscribe(v1, sandboxes, event_key, url)
    contacts = [c["id"] for c in keap.get("/contacts").json()["contacts"]]
    for contact_id in contacts:
        assert keap.patch(f"/contacts/{contact_id}", json={"job_title": "Edited"}).status_code == 200
    created = keap.post("/contacts", json={"given_name": "New", "email_addresses": [
        {"email": "new@example.com", "field": "EMAIL1"}]}).json()["id"]  # fmt: skip
    assert keap.delete(f"/contacts/{contacts[0]}").status_code == 204
    opportunity = keap.get("/opportunities").json()["opportunities"][0]
    stages = [s["id"] for s in keap.get("/opportunities/stages").json()["stages"]]
    other_stage = next(s for s in stages if s != opportunity["stage"]["id"])
    assert (
        keap.patch(
            f"/opportunities/{opportunity['id']}",
            params={"update_mask": "stage_id"},
            json={"stage_id": other_stage},
        ).status_code
        == 200
    )

    found.wait(lambda: len(found.ids("contact.edit")) == 3 and found.ids("contact.delete") and
               found.ids("contact.add") and found.ids("opportunity.stage_move"))  # fmt: skip
    edits = [d for d in found.deliveries if d["event_key"] == "contact.edit"]
    assert len(edits) == 1 and sorted(found.ids("contact.edit")) == sorted(contacts)  # one batch
    assert edits[0]["object_type"] == "contact"
    item = edits[0]["object_keys"][0]
    assert set(item) == {"id", "apiUrl", "timestamp"} and item["apiUrl"].endswith(
        f"/crm/rest/v1/contacts/{item['id']}"
    )
    assert found.ids("contact.add") == [created]
    assert found.ids("contact.delete") == [contacts[0]]
    assert found.ids("opportunity.stage_move") == [opportunity["id"]]
    assert not any(d["event_key"] == "opportunity.edit" for d in found.deliveries)  # not subscribed

    # a flood: at most 1,000 object keys a delivery
    found.deliveries.clear()
    queued = admin(keap, sandboxes.keap_root, "/_sandbox/hooks/emit",
                   {"event_key": "contact.edit", "ids": [str(i) for i in range(2500)]})  # fmt: skip
    assert queued == {"queued": 2500}
    found.wait(lambda: len(found.ids("contact.edit")) == 2500)
    assert sorted(len(d["object_keys"]) for d in found.deliveries) == [500, MAX_OBJECT_KEYS, MAX_OBJECT_KEYS]


def test_failed_deliveries_are_retried_then_the_subscription_goes_inactive_until_verified_again(
    sandboxes: Sandboxes, keap: httpx.Client, v1: httpx.Client, listener: tuple[Listener, str]
) -> None:
    found, url = listener
    fast(keap, sandboxes)
    key = subscribe(v1, sandboxes, "contact.edit", url)

    found.status = 503  # down for the first two attempts, then up: the third one delivers
    admin(keap, sandboxes.keap_root, "/_sandbox/hooks/emit", {"event_key": "contact.edit", "ids": ["1001"]})
    found.wait(lambda: len(found.deliveries) == 2)
    found.status = 200
    found.wait(lambda: len(found.deliveries) == 3)
    wait_for(lambda: len([a for a in state(keap, sandboxes)["attempts"] if a["objects"]]) == 3)
    attempts = [a for a in state(keap, sandboxes)["attempts"] if a["objects"]]
    assert [(a["attempt"], a["result"]) for a in attempts] == [(1, "503"), (2, "503"), (3, "200")]
    assert v1.get(f"/hooks/{key}").json()["status"] == "Verified"

    found.status = 500  # down for good: four attempts, then Inactive, and nothing more is queued
    found.deliveries.clear()
    admin(keap, sandboxes.keap_root, "/_sandbox/hooks/emit", {"event_key": "contact.edit", "ids": ["1002"]})
    wait_for(lambda: v1.get(f"/hooks/{key}").json()["status"] == "Inactive")
    assert len(found.deliveries) == 4 and state(keap, sandboxes)["pending_objects"] == 0
    queued = admin(
        keap, sandboxes.keap_root, "/_sandbox/hooks/emit", {"event_key": "contact.edit", "ids": ["1"]}
    )
    assert queued == {"queued": 0}

    found.status = 200  # verified again: deliveries resume
    assert v1.post(f"/hooks/{key}/verify").json()["status"] == "Verified"
    found.deliveries.clear()
    admin(keap, sandboxes.keap_root, "/_sandbox/hooks/emit", {"event_key": "contact.edit", "ids": ["1003"]})
    found.wait(lambda: found.ids("contact.edit") == ["1003"])


def test_the_retry_schedule_is_keaps_scaled_by_the_delivery_delay() -> None:
    rng = random.Random(1)
    keap = HookSettings()
    assert [30 <= keap.retry_after(1, rng) <= 60, keap.retry_after(2, rng), keap.retry_after(3, rng)] == [
        True, 300, 1800]  # fmt: skip
    tests = HookSettings.parse({"delay_s": [0.05, 0.1]}, keap)
    assert 0.05 <= tests.retry_after(1, rng) <= 0.1
    assert (tests.retry_after(2, rng), tests.retry_after(3, rng)) == pytest.approx((0.5, 3.0))
    assert HookSettings.parse({"delay_s": 1}, keap).delay_s == (1.0, 1.0)
    with pytest.raises(ValueError, match="delay_s"):
        HookSettings.parse({"delay_s": [2, 1]}, keap)


def test_a_410_makes_the_subscription_inactive_at_once(
    sandboxes: Sandboxes, keap: httpx.Client, v1: httpx.Client, listener: tuple[Listener, str]
) -> None:
    found, url = listener
    fast(keap, sandboxes)
    key = subscribe(v1, sandboxes, "company.add", url)
    found.status = 410
    admin(keap, sandboxes.keap_root, "/_sandbox/hooks/emit", {"event_key": "company.add", "ids": ["2001"]})
    wait_for(lambda: v1.get(f"/hooks/{key}").json()["status"] == "Inactive")
    assert len(found.deliveries) == 1


def test_subscriptions_survive_a_restart_of_the_sandbox(
    sandboxes: Sandboxes, keap: httpx.Client, v1: httpx.Client, listener: tuple[Listener, str]
) -> None:
    _, url = listener
    key = subscribe(v1, sandboxes, "product.edit", url)
    sandboxes.stop()
    again = Sandboxes(sandboxes.data_dir).start()
    try:
        assert again.keap.hooks.hooks[key].status == "Verified"
    finally:
        again.stop()
