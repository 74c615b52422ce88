"""Fault injection, set per run, on both sandboxes: the ground the sync's
reliability tests stand on."""

from __future__ import annotations

import time

import httpx
import pytest

from sandbox.bundle import Sandboxes
from tests.conftest import admin

SANDBOXES = ["keap", "customcrm"]


def _client(sandboxes: Sandboxes, which: str) -> tuple[httpx.Client, str]:
    if which == "keap":
        client = httpx.Client(
            base_url=sandboxes.keap_url, headers={"X-Keap-API-Key": sandboxes.keap.credentials.api_key}
        )
        return client, sandboxes.keap_root
    client = httpx.Client(
        base_url=sandboxes.customcrm_url,
        headers={"Authorization": f"Bearer {sandboxes.customcrm.credentials.token}"},
    )
    return client, sandboxes.customcrm_root


def _list_path(which: str) -> str:
    return "/contacts"


def _create(client: httpx.Client, which: str, n: int) -> httpx.Response:
    if which == "keap":
        return client.post("/companies", json={"company_name": f"Fault {n}"})
    return client.post("/customers", json={"Name": f"Fault {n}"})


def _count(client: httpx.Client, which: str) -> int:
    if which == "keap":
        return len(client.get("/companies", params={"page_size": 1000}).json()["companies"])
    return len(client.get("/customers", params={"limit": 500}).json()["data"])


@pytest.mark.parametrize("which", SANDBOXES)
def test_a_share_of_500s_and_429s(sandboxes: Sandboxes, which: str) -> None:
    client, root = _client(sandboxes, which)
    admin(
        client,
        root,
        "/_sandbox/config",
        {"limits": "off", "faults": {"error_500": 0.3, "error_429": 0.2, "seed": 5}},
    )
    statuses = [client.get(_list_path(which)).status_code for _ in range(200)]
    share_500, share_429 = statuses.count(500) / 200, statuses.count(429) / 200
    assert 0.2 < share_500 < 0.4 and 0.1 < share_429 < 0.3
    assert set(statuses) == {200, 429, 500}
    stats = admin(client, root, "/_sandbox/stats")
    assert stats["injected"]["error_500"] == statuses.count(500)
    admin(client, root, "/_sandbox/config", {"faults": {}})
    assert {client.get(_list_path(which)).status_code for _ in range(20)} == {200}


@pytest.mark.parametrize("which", SANDBOXES)
def test_injected_errors_apply_nothing(sandboxes: Sandboxes, which: str) -> None:
    client, root = _client(sandboxes, which)
    admin(client, root, "/_sandbox/config", {"faults": {"error_500": 1.0}})
    assert _create(client, which, 1).status_code == 500
    admin(client, root, "/_sandbox/config", {"faults": {}})
    assert _count(client, which) == 0


@pytest.mark.parametrize("which", SANDBOXES)
def test_commit_then_fail_applies_the_write_then_loses_the_answer(sandboxes: Sandboxes, which: str) -> None:
    client, root = _client(sandboxes, which)
    admin(client, root, "/_sandbox/config", {"faults": {"commit_then_fail": 1.0, "seed": 3}})
    outcomes = []
    for n in range(12):
        try:
            outcomes.append(_create(client, which, n).status_code)
        except httpx.TransportError as exc:  # the connection dropped mid-answer
            outcomes.append(type(exc).__name__)
    assert 500 in outcomes and any(isinstance(o, str) for o in outcomes)
    assert 201 not in outcomes
    reads = [client.get(_list_path(which)).status_code for _ in range(3)]
    assert reads == [200, 200, 200]  # reads are never "committed then failed"
    admin(client, root, "/_sandbox/config", {"faults": {}})
    assert _count(client, which) == 12  # every write was applied
    stats = admin(client, root, "/_sandbox/stats")["injected"]
    assert stats["commit_then_500"] + stats["commit_then_drop"] == 12


@pytest.mark.parametrize("which", SANDBOXES)
def test_added_latency(sandboxes: Sandboxes, which: str) -> None:
    client, root = _client(sandboxes, which)
    admin(client, root, "/_sandbox/config", {"faults": {"latency_ms": 150}})
    started = time.perf_counter()
    client.get(_list_path(which))
    assert time.perf_counter() - started >= 0.15


def test_unknown_settings_are_refused(sandboxes: Sandboxes) -> None:
    client, root = _client(sandboxes, "keap")
    answer = client.post(root + "/_sandbox/config", json={"faults": {"error_501": 0.5}})
    assert answer.status_code == 400 and "error_501" in answer.json()["error"]


@pytest.mark.parametrize("which", SANDBOXES)
def test_stats_count_requests_by_endpoint(sandboxes: Sandboxes, which: str) -> None:
    client, root = _client(sandboxes, which)
    client.get(_list_path(which))
    _create(client, which, 1)
    stats = admin(client, root, "/_sandbox/stats")
    assert stats["reads"] == 1 and stats["writes"] == 1 and stats["total"] == 2
    admin(client, root, "/_sandbox/stats/reset", {})
    assert admin(client, root, "/_sandbox/stats")["total"] == 0


@pytest.mark.parametrize("which", SANDBOXES)
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_held_write_waits_applied_or_not_until_released(
    sandboxes: Sandboxes, which: str, when: str
) -> None:
    import threading

    client, root = _client(sandboxes, which)
    admin(client, root, "/_sandbox/config", {"faults": {"hold_write": 2, "hold_when": when}})
    assert _create(client, which, 1).status_code == 201  # the first write goes through
    answers: list[object] = []

    def second() -> None:
        try:
            answers.append(_create(client, which, 2).status_code)
        except httpx.TransportError as exc:
            answers.append(type(exc).__name__)

    writer = threading.Thread(target=second)
    writer.start()
    watcher = httpx.Client()
    while admin(watcher, root, "/_sandbox/stats")["held"] != when:
        assert writer.is_alive()
        time.sleep(0.02)
    assert not answers  # held: no answer yet
    assert admin(watcher, root, "/_sandbox/release", {}) == {"released": when}
    writer.join(timeout=10)
    assert answers and isinstance(answers[0], str)  # the connection dropped
    assert admin(watcher, root, "/_sandbox/stats")["held"] == ""
    admin(client, root, "/_sandbox/config", {"faults": {}})
    assert _count(client, which) == (2 if when == "after" else 1)
