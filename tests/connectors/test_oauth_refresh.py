"""Keap OAuth refreshes: one per rotation across processes, transient token-endpoint
failures retried and told apart from a refused grant."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.errors import AuthError, TokenEndpointUnavailable
from connectors.http import RetryPolicy
from connectors.keap import KeapClient, keap_client
from connectors.tokens import TokenStore
from sandbox.bundle import Sandboxes
from tests.conftest import admin


def _client(
    keap_url: str, token_url: str, creds: dict[str, str], tokens: dict[str, str], store: Path
) -> KeapClient:
    return keap_client(
        base_url=keap_url,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
        token_url=token_url,
        token_store=TokenStore(store),
        retry=RetryPolicy(max_attempts=1),
    )


def _refresh_in_a_process(args: tuple[Any, ...], start: Any, results: Any) -> None:
    """One crmsync process: its first request meets an expired token and refreshes."""
    client = _client(*args)
    start.wait(timeout=60)
    try:
        status = client.request("GET", "/contacts", params={"page_size": 1}).status_code
        results.put(("ok", status, client.http.auth.refreshes))  # type: ignore[attr-defined]
    except Exception as exc:
        results.put(("failed", str(exc), 0))


def _setup(sandboxes: Sandboxes) -> tuple[dict[str, str], dict[str, str]]:
    sandboxes.seed_demo(size=3, seed=5)
    tokens = admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/oauth/issue", {})
    admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/oauth/expire", {})
    admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/stats/reset", {})
    creds = sandboxes.keap.credentials
    return {"client_id": creds.client_id, "client_secret": creds.client_secret}, tokens


def _refreshes_seen(sandboxes: Sandboxes) -> int:
    stats = admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/stats")
    return stats["by_endpoint"].get("POST /token", 0)  # type: ignore[no-any-return]


def test_two_processes_refreshing_one_grant_at_once_both_go_on_with_one_refresh(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    creds, tokens = _setup(sandboxes)
    # every answer takes a while: both processes are waiting on the token endpoint at once
    admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/config", {"faults": {"latency_ms": 400}})
    store = tmp_path / "state" / "keap_oauth.json"
    args = (sandboxes.keap_url, sandboxes.keap_root + "/token", creds, tokens, store)
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(2), spawn.Queue()
    processes = [spawn.Process(target=_refresh_in_a_process, args=(args, start, results)) for _ in range(2)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert outcomes == [("ok", 200, 0), ("ok", 200, 1)]  # one refreshed, the other used its rotation
    assert _refreshes_seen(sandboxes) == 1
    assert json.loads(store.read_text())["refresh_token"] != tokens["refresh_token"]
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "state" / "keap_oauth.json.lock").stat().st_mode & 0o777) == "0o600"


def test_a_rotation_stored_by_another_process_is_used_instead_of_refreshing(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    creds, tokens = _setup(sandboxes)
    store = tmp_path / "keap_oauth.json"
    args = (sandboxes.keap_url, sandboxes.keap_root + "/token", creds, tokens, store)
    first, second = _client(*args), _client(*args)  # both started from the same grant
    first.request("GET", "/contacts")
    assert _refreshes_seen(sandboxes) == 1
    second.request("GET", "/contacts")  # its token was refused: it finds the stored rotation
    assert _refreshes_seen(sandboxes) == 1
    assert second.http.auth.tokens == first.http.auth.tokens  # type: ignore[attr-defined]


def _mock_token_endpoint(answers: list[Any]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """The API answers 200 to a fresh token and 401 to an old one; /token answers in turn."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            seen.append(request)
            step = answers[min(len(seen) - 1, len(answers) - 1)]
            if isinstance(step, Exception):
                raise step
            return step  # type: ignore[no-any-return]
        fresh = request.headers.get("authorization") == "Bearer fresh-access"
        return httpx.Response(200 if fresh else 401, json={"contacts": []} if fresh else {"fault": {}})

    return httpx.MockTransport(answer), seen


def _mocked(transport: httpx.MockTransport, tmp_path: Path, slept: list[float]) -> KeapClient:
    return keap_client(
        base_url="https://keap.test/crm/rest/v2",
        access_token="old-access",
        refresh_token="held-refresh",
        client_id="client",
        client_secret="client-secret",
        token_url="https://keap.test/token",
        token_store=TokenStore(tmp_path / "keap_oauth.json"),
        transport=transport,
        retry=RetryPolicy(max_attempts=1),
        sleep=slept.append,
    )


GRANTED = httpx.Response(
    200, json={"access_token": "fresh-access", "refresh_token": "next-refresh", "expires_in": 3600}
)


@pytest.mark.parametrize(
    ("failure", "shown"),
    [
        (httpx.Response(503, text="upstream unavailable"), "(HTTP 503)"),
        (httpx.Response(500, json={"error": "server_error"}), "(HTTP 500)"),
        (httpx.Response(429, json={"fault": {"faultstring": "Rate limit"}}, headers={"Retry-After": "2"}), "(HTTP 429)"),
        (httpx.ConnectError("connection refused"), "(no answer: ConnectError)"),
    ],
)  # fmt: skip
def test_a_token_endpoint_that_keeps_failing_is_unavailable_not_a_reason_to_reauthorize(
    tmp_path: Path, failure: Any, shown: str
) -> None:
    transport, seen = _mock_token_endpoint([failure])
    slept: list[float] = []
    client = _mocked(transport, tmp_path, slept)
    with pytest.raises(TokenEndpointUnavailable) as caught:
        client.request("GET", "/contacts")
    message = str(caught.value)
    assert message.startswith(f"Keap's token endpoint is unavailable {shown}; try again later")
    assert "re-authorize" not in message and "\n" not in message
    assert "held-refresh" not in message and "client-secret" not in message
    assert len(seen) == 5 and len(slept) == 4  # retried with pauses in between
    if shown == "(HTTP 429)":
        assert slept == [2.0] * 4  # Retry-After honoured
    assert not (tmp_path / "keap_oauth.json").exists()  # the held grant is untouched


def test_a_token_endpoint_failing_for_a_while_is_waited_out(tmp_path: Path) -> None:
    transport, seen = _mock_token_endpoint([httpx.Response(502), httpx.ReadTimeout("slow"), GRANTED])
    slept: list[float] = []
    client = _mocked(transport, tmp_path, slept)
    assert client.request("GET", "/contacts").status_code == 200
    assert len(seen) == 3 and len(slept) == 2
    assert json.loads((tmp_path / "keap_oauth.json").read_text())["refresh_token"] == "next-refresh"


@pytest.mark.parametrize(
    ("refusal", "message"),
    [
        (httpx.Response(400, json={"error": "invalid_grant", "error_description": "Invalid Refresh Token"}),
         "Keap refused the OAuth refresh; re-authorize and set KEAP_REFRESH_TOKEN"),
        (httpx.Response(400, json={"error": "invalid_request", "error_description": "Invalid Refresh Token"}),
         "Keap refused the OAuth refresh; re-authorize and set KEAP_REFRESH_TOKEN"),
        (httpx.Response(401, json={"error": "invalid_client", "error_description": "Invalid client credentials"}),
         "Keap refused the OAuth client; check KEAP_CLIENT_ID and KEAP_CLIENT_SECRET, or re-authorize and set "
         "KEAP_REFRESH_TOKEN"),
    ],
)  # fmt: skip
def test_only_a_refused_grant_or_client_asks_for_reauthorization(
    tmp_path: Path, refusal: httpx.Response, message: str
) -> None:
    transport, seen = _mock_token_endpoint([refusal])
    slept: list[float] = []
    with pytest.raises(AuthError) as caught:
        _mocked(transport, tmp_path, slept).request("GET", "/contacts")
    assert str(caught.value).startswith(message + " [keap POST https://keap.test/token -> ")
    assert not isinstance(caught.value, TokenEndpointUnavailable)
    assert len(seen) == 1 and slept == []  # a refusal is final: not retried
