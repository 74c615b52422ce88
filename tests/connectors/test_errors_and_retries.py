"""Status, body and headers -> error class, and what the client retries."""

from __future__ import annotations

import httpx
import pytest

from connectors.customcrm import CustomcrmClient
from connectors.errors import (
    AuthError,
    Conflict,
    NotFound,
    PreconditionFailed,
    RateLimited,
    RecordRejected,
    ServerError,
    TransportFailure,
)
from connectors.http import ApiClient, RetryPolicy
from connectors.keap import KeapClient

KEAP_400 = {
    "code": 400,
    "message": "Invalid given_name: must be at most 40 characters",
    "status": "Bad Request",
    "details": [{"domain": "given_name", "resource": "contacts"}],
}
PROBLEM_422 = {
    "type": "t",
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "invalid",
    "errors": [{"field": "Email", "message": "not an email"}],
}
FAULT_401 = {
    "fault": {
        "faultstring": "Invalid Access Token",
        "detail": {"errorcode": "keymanagement.service.invalid_access_token"},
    }
}
FAULT_429 = {
    "fault": {
        "faultstring": "Rate limit quota violation",
        "detail": {"errorcode": "policies.ratelimit.QuotaViolation"},
    }
}
QUOTA_429 = {"code": "429", "message": "Quota Exceeded", "status": "Request Throttled", "details": None}


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "field", "reason"),
    [
        (400, KEAP_400, {}, RecordRejected, "given_name", "at most 40"),
        (422, PROBLEM_422, {}, RecordRejected, "Email", "invalid"),
        (
            404,
            {"code": 404, "message": "Contact 9 not found", "status": "Not Found", "details": []},
            {},
            NotFound,
            None,
            "not found",
        ),
        (
            409,
            {
                "type": "t",
                "title": "Conflict",
                "status": 409,
                "detail": "Email is used",
                "errors": [{"field": "Email", "message": "already used"}],
            },
            {},
            Conflict,
            "Email",
            "used",
        ),
        (
            412,
            {"type": "t", "title": "Precondition Failed", "status": 412, "detail": "stale"},
            {},
            PreconditionFailed,
            None,
            "stale",
        ),
        (401, FAULT_401, {}, AuthError, None, "invalid_access_token"),
        (
            403,
            {"code": 403, "message": "Forbidden", "status": "Forbidden", "details": []},
            {},
            AuthError,
            None,
            "Forbidden",
        ),
        (429, FAULT_429, {}, RateLimited, None, "QuotaViolation"),
        (429, QUOTA_429, {"Retry-After": "7"}, RateLimited, None, "Quota Exceeded"),
        (
            500,
            {"code": 500, "message": "Internal Server Error", "status": "x", "details": []},
            {},
            ServerError,
            None,
            "Internal",
        ),
        (503, "upstream down", {}, ServerError, None, "upstream"),
    ],
)
def test_status_body_and_headers_map_to_one_error_class(
    status: int, body: object, headers: dict, error: type, field: str | None, reason: str
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    client = KeapClient(
        "https://keap.test/crm/rest/v2",
        transport=httpx.MockTransport(answer),
        retry=RetryPolicy(max_attempts=1),
        sleep=lambda s: None,
    )
    with pytest.raises(error) as caught:
        client.request("GET", "/contacts/9", record_id="9", params={"filter": "email==a@b.example"})
    raised = caught.value
    assert raised.status == status and raised.record_id == "9"
    assert reason in raised.reason or reason in str(raised)
    if field:
        assert field in [f.field for f in raised.field_errors]
    assert "a@b.example" not in str(raised)  # the query (filters hold emails) stays out of messages
    if headers.get("Retry-After"):
        assert raised.retry_after == 7  # type: ignore[attr-defined]


def _flaky(sequence: list[object]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = sequence[min(len(seen) - 1, len(sequence) - 1)]
        if isinstance(step, Exception):
            raise step
        status, headers = step if isinstance(step, tuple) else (step, {})
        return httpx.Response(
            status, json={"ok": True} if status < 400 else {"message": "x"}, headers=headers
        )

    return httpx.MockTransport(answer), seen


def test_idempotent_requests_are_retried_through_5xx_429_and_dropped_connections() -> None:
    transport, seen = _flaky([500, httpx.RemoteProtocolError("dropped"), (429, {"Retry-After": "2"}), 200])
    slept: list[float] = []
    client = ApiClient("https://x.test", transport=transport, sleep=slept.append, seed=1)
    assert client.request("GET", "/things").status_code == 200
    assert len(seen) == 4 and client.stats.retries == 3 and client.stats.rate_limited == 1
    assert 2.0 in slept  # Retry-After honoured
    assert all(s <= 30 for s in slept)


def test_a_non_idempotent_post_is_not_retried_after_it_may_have_been_applied() -> None:
    for failure in (500, httpx.RemoteProtocolError("dropped")):
        transport, seen = _flaky([failure, 201])
        client = ApiClient("https://x.test", transport=transport, sleep=lambda s: None)
        with pytest.raises((ServerError, TransportFailure)):
            client.request("POST", "/things", json={})
        assert len(seen) == 1


def test_a_post_is_retried_on_429_which_is_answered_before_anything_happens() -> None:
    transport, seen = _flaky([429, 201])
    client = ApiClient("https://x.test", transport=transport, sleep=lambda s: None)
    assert client.request("POST", "/things", json={}).status_code == 201 and len(seen) == 2


def test_retries_are_bounded() -> None:
    transport, seen = _flaky([503])
    client = ApiClient(
        "https://x.test", transport=transport, retry=RetryPolicy(max_attempts=4), sleep=lambda s: None
    )
    with pytest.raises(ServerError):
        client.request("GET", "/things")
    assert len(seen) == 4


def test_backoff_without_retry_after_grows_exponentially_with_jitter() -> None:
    transport, _ = _flaky([503] * 7 + [200])
    slept: list[float] = []
    client = ApiClient(
        "https://x.test",
        transport=transport,
        sleep=slept.append,
        seed=3,
        retry=RetryPolicy(max_attempts=10, base_delay=1, max_delay=100),
    )
    client.request("GET", "/things")
    assert len(slept) == 7 and len(set(slept)) == 7
    assert all(0 <= s <= 2 ** (n + 1) for n, s in enumerate(slept))
    assert max(slept[4:]) > 2  # later pauses can be long


def test_auth_errors_stop_at_once() -> None:
    transport, seen = _flaky([401])
    client = CustomcrmClient("https://x.test", transport=transport, sleep=lambda s: None)
    with pytest.raises(AuthError, match="CUSTOMCRM_"):
        client.request("GET", "/customers")
    assert len(seen) == 1


def test_credentials_written_into_a_url_never_reach_a_message() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json=FAULT_401)

    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    for answer, error in ((refuse, AuthError), (drop, TransportFailure)):
        client = KeapClient(
            "https://keapuser:keappass@keap.test/crm/rest/v2",
            transport=httpx.MockTransport(answer),
            retry=RetryPolicy(max_attempts=1),
            sleep=lambda s: None,
        )
        with pytest.raises(error) as caught:
            client.request("GET", "/contacts")
        shown = str(caught.value)
        assert "https://***@keap.test/crm/rest/v2/contacts" in shown
        assert "keapuser" not in shown and "keappass" not in shown
