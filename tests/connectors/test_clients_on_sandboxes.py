"""The two clients against the sandboxes: paging, pacing, OAuth rotation, idempotent retries."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from connectors.customcrm import customcrm_client, encode
from connectors.errors import AuthError
from connectors.keap import KeapPacer, keap_client
from connectors.tokens import TokenStore
from sandbox.bundle import Sandboxes
from support.times import parse_time
from tests.conftest import admin


def _keap(sandboxes: Sandboxes, **kw: object):  # type: ignore[no-untyped-def]
    return keap_client(base_url=sandboxes.keap_url, api_key=sandboxes.keap.credentials.api_key, **kw)


def test_keap_pages_follow_opaque_and_url_tokens(sandboxes: Sandboxes) -> None:
    sandboxes.seed_demo(size=230, seed=4)
    client = _keap(sandboxes)
    pages = list(client.pages("contacts", page_size=100))
    assert [len(p) for p in pages] == [100, 100, 30]
    admin(client.http, sandboxes.keap_root, "/_sandbox/config", {"page_token_style": "url"})
    ids = [c["id"] for page in client.pages("companies", page_size=100) for c in page]
    assert len(ids) == len(set(ids)) == 230
    assert client.stats.requests == 6


def test_keap_reads_a_resource_without_time_filter_newest_first_not_whole(sandboxes: Sandboxes) -> None:
    """Products have no time filter: a read of what changed since a time is a newest-first
    page. When every record on a small page is newer, one of Keap's largest pages is asked
    before a walk by id through every record (a re-read between writes, which the push's
    own writes can fill, once walked the whole account each time)."""
    from datetime import UTC, datetime

    sandboxes.seed_demo(size=300, seed=4)
    client = _keap(sandboxes)
    since = datetime(2000, 1, 1, tzinfo=UTC)  # before every record: all 300 changed since
    pages = list(client.changed_since("products", since, page_size=50))
    assert sum(len(items) for items, _ in pages) == 300 and pages[-1][1]
    served = admin(client.http, sandboxes.keap_root, "/_sandbox/stats")["by_endpoint"]
    assert served == {"GET /products": 2}  # 50 newest, then 1,000 newest: no walk of 6 pages by id
    newest = max(parse_time(p["update_time"]) for items, _ in pages for p in items)
    assert newest is not None
    recent = list(client.changed_since("products", newest, page_size=50))  # a page that reaches past it
    assert [len(items) for items, _ in recent] == [1]


def test_keap_pacing_keeps_under_the_published_limits(sandboxes: Sandboxes) -> None:
    """35 requests against 10/s: paced on our side, no 429 at all."""
    admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/config", {"limits": "published"})
    slept: list[float] = []
    import time

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    client = _keap(sandboxes, pacer=KeapPacer(sleep=sleep), sleep=sleep)
    for _ in range(35):
        client.request("GET", "/opportunities/stages")
    stats = admin(client.http, sandboxes.keap_root, "/_sandbox/stats")
    assert stats["by_status"] == {"200": 35}
    assert client.stats.rate_limited == 0
    assert sum(slept) >= 2.0  # 35 requests at 10/s after a burst of 10


def test_keap_throttle_headers_correct_the_local_bucket(sandboxes: Sandboxes) -> None:
    admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/config", {"limits": {"per_minute": 20}})
    slept: list[float] = []
    client = _keap(sandboxes, pacer=KeapPacer(per_second=1000, sleep=slept.append), sleep=slept.append)
    for _ in range(18):
        client.request("GET", "/opportunities/stages")
    assert client.pacer.minute.capacity == 19  # type: ignore[attr-defined]  # 20 from the header, less margin
    assert client.stats.rate_limited == 0 and not slept
    # the server says 2 are left; we keep one as margin: one more may go, the next must wait
    assert client.pacer.before() == 0
    assert client.pacer.before() > 1


def _oauth(sandboxes: Sandboxes, store_path: Path, tokens: dict) -> object:
    creds = sandboxes.keap.credentials
    return keap_client(
        base_url=sandboxes.keap_url,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        client_id=creds.client_id,
        client_secret=creds.client_secret,
        token_url=sandboxes.keap_root + "/token",
        token_store=TokenStore(store_path),
    )


def test_oauth_refresh_mid_run_rotates_and_persists_the_token(sandboxes: Sandboxes, tmp_path: Path) -> None:
    sandboxes.seed_demo(size=30, seed=1)
    tokens = admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/oauth/issue", {})
    store_path = tmp_path / "state" / "keap_oauth.json"
    client = _oauth(sandboxes, store_path, tokens)
    pages = client.pages("contacts", page_size=10)  # type: ignore[attr-defined]
    first = next(pages)
    admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/oauth/expire", {})  # expires mid-run
    rest = [c for page in pages for c in page]
    assert len(first) + len(rest) == 30
    assert client.http.auth.refreshes == 1  # type: ignore[attr-defined]
    saved = json.loads(store_path.read_text())
    assert saved["refresh_token"] != tokens["refresh_token"]
    assert oct(store_path.stat().st_mode & 0o777) == "0o600"

    # a new process, same environment (still holding the old, now dead refresh token):
    # the stored rotation wins, and it still works after another expiry
    admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/oauth/expire", {})
    again = _oauth(sandboxes, store_path, tokens)
    assert len(next(again.pages("contacts", page_size=10))) == 10  # type: ignore[attr-defined]
    assert json.loads(store_path.read_text())["refresh_token"] != saved["refresh_token"]


def test_a_refused_refresh_stops_the_run_with_one_clear_error(sandboxes: Sandboxes, tmp_path: Path) -> None:
    tokens = admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/oauth/issue", {})
    admin(httpx.Client(), sandboxes.keap_root, "/_sandbox/oauth/expire", {})
    client = _oauth(sandboxes, tmp_path / "oauth.json", {**tokens, "refresh_token": "revoked"})
    with pytest.raises(AuthError, match="re-authorize") as caught:
        client.request("GET", "/contacts")  # type: ignore[attr-defined]
    assert "Invalid Refresh Token" in str(caught.value)
    assert "revoked" not in str(caught.value)


def test_customcrm_pages_and_batch(sandboxes: Sandboxes) -> None:
    sandboxes.seed_demo(size=100, seed=2)
    client = customcrm_client(base_url=sandboxes.customcrm_url, token=sandboxes.customcrm.credentials.token)
    customers = [c for page in client.pages("customers", limit=3) for c in page]
    assert len(customers) == len({c["Id"] for c in customers}) == 12
    results = client.batch("customers", [{"op": "create", "data": {"Name": f"B{i}"}} for i in range(100)])
    assert [r["status"] for r in results] == [201] * 100
    with pytest.raises(ValueError):
        client.batch("customers", [{"op": "create", "data": {"Name": "x"}}] * 101)


def test_customcrm_idempotent_creates_survive_commit_then_fail_without_duplicates(
    sandboxes: Sandboxes,
) -> None:
    admin(
        httpx.Client(),
        sandboxes.customcrm_root,
        "/_sandbox/config",
        {"faults": {"commit_then_fail": 0.3, "error_500": 0.1, "seed": 11}, "limits": "off"},
    )
    client = customcrm_client(
        base_url=sandboxes.customcrm_url, token=sandboxes.customcrm.credentials.token, sleep=lambda s: None
    )
    for n in range(20):
        client.create(
            "customers",
            {"Name": f"Once {n}", "ExternalRefs": {"keap": str(n)}},
            idempotency_key=f"customers:keap:{n}",
        )
    batch = [
        {
            "op": "create",
            "data": {"Name": f"Batch {n}", "ExternalRefs": {"keap": f"b{n}"}},
            "idempotency_key": f"customers:keap:b{n}",
        }
        for n in range(30)
    ]
    for _ in range(3):  # a re-run sends the same keys again
        assert {r["status"] for r in client.batch("customers", batch)} == {201}
    admin(httpx.Client(), sandboxes.customcrm_root, "/_sandbox/config", {"faults": {}})
    names = [c["Name"] for page in client.pages("customers", include_deleted=False) for c in page]
    assert len(names) == len(set(names)) == 50
    assert client.stats.retries > 0


def test_customcrm_batches_are_planned_by_bytes_and_an_operation_over_the_limit_is_not_sent(
    sandboxes: Sandboxes,
) -> None:
    client = customcrm_client(base_url=sandboxes.customcrm_url, token=sandboxes.customcrm.credentials.token)
    client.max_body = 20_000
    operations = [{"op": "create", "data": {"Name": f"P{n}", "Description": "é" * 2_000}} for n in range(12)]
    operations[5]["data"]["Description"] = "é" * 9_999 + "😀"  # 20,002 bytes of description alone
    planned = client.plan_batches(operations)
    assert [i for batch in planned for i in batch] == list(range(12))  # all, in order
    assert [5] in planned and all(len(encode({"operations": [operations[i] for i in b]})) <= 20_000
                                  for b in planned if b != [5])  # fmt: skip
    before = client.stats.requests
    (alone,) = client.batch("customers", [operations[5]])
    assert client.stats.requests == before  # known to be too large: not sent
    assert alone["status"] == 413 and alone["error"]["detail"].startswith("the operation is 20,")
    assert "over the limit of 20,000 bytes" in alone["error"]["detail"]
    results = [r for batch in planned for r in client.batch("customers", [operations[i] for i in batch])]
    assert [r["status"] for r in results] == [201] * 5 + [413] + [201] * 6
