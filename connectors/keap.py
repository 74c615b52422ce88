"""The Keap REST v2 client: auth (API key or OAuth with rotating refresh
tokens), pacing from Keap's throttle headers, paging, and the record calls
the ingest and the push share."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from connectors.errors import (
    ApiError,
    AuthError,
    ProtocolError,
    QuotaExhausted,
    RetryableError,
    TokenEndpointUnavailable,
    TransportFailure,
    error_for_response,
    safe_url,
)
from connectors.http import (
    ApiClient,
    Clock,
    ListPage,
    LocalBucket,
    Pacer,
    RetryPolicy,
    Sleep,
    server_time,
)
from connectors.tokens import TokenSet, TokenStore
from registry import STAGES, keap_resource
from registry.mappings import STAGES_LIST_KEY
from support.times import parse_time

MAX_PAGE_SIZE = 1000  # Keap's largest page (docs/keap-api.md)

# How each resource is read, narrowed, walked and searched is the registry's (registry/):
# a time filter where Keap has one, else newest first, stopping past the cursor; walks by
# id, ordered by id where Keap offers it (else Keap's default order, checked); `fields`
# where it picks the properties returned (contacts, companies: opportunities' `fields` only
# adds optional properties, products take none).


def filter_timestamp(value: datetime) -> str:
    """Keap filters want full ISO-8601 with milliseconds and a zone."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass
class WalkPage:
    items: list[Any]
    server_time: datetime | None
    last_id: int | None  # a walk by id: the last id so far (where an interrupted walk resumes)
    complete: bool  # the last page of the walk


def _fresh(items: list[Any], stamp: str | None, since: datetime) -> list[Any]:
    """The items updated at or after `since` (and those that are not records: the ingest
    records why they cannot be loaded)."""
    name = stamp or "update_time"
    return [i for i in items if not isinstance(i, dict) or (parse_time(i.get(name)) or since) >= since]


def _int_id(item: Any) -> int | None:
    try:
        return int(item["id"]) if isinstance(item, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def list_key(resource: str) -> str:
    """The property a list's records come in: the resource's name (the stages: `stages`)."""
    return STAGES_LIST_KEY if resource == STAGES.name else resource


class KeapPacer(Pacer):
    """Stays under Keap's limits: a per-second and a per-minute bucket on our side,
    corrected by what `x-keap-product-throttle-*` says is left.

    Defaults are the published figures for keys (10/s, 240/min); the per-minute
    figure follows the `x-keap-product-throttle-limit` header (1,500 for OAuth).
    Requests arrive at Keap a little unevenly, so the buckets keep a margin:
    one token of burst and a few percent of rate.
    """

    MARGIN = 0.97

    def __init__(
        self,
        per_second: float = 10,
        per_minute: float = 240,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.second = LocalBucket(per_second - 1, per_second * self.MARGIN, clock)
        self.minute = LocalBucket(per_minute - 1, per_minute / 60 * self.MARGIN, clock)
        self.sleep = sleep
        self.quota_exhausted_until: str | None = None
        # what Keap's last answer said of the day's quota: requests left, and when it resets
        self.quota_left: int | None = None
        self.quota_resets: str | None = None

    def before(self) -> float:
        wait = max(self.minute.reserve(), self.second.reserve())
        if wait > 0:
            self.sleep(wait)
        return wait

    def after(self, response: httpx.Response) -> None:
        headers = response.headers
        limit = _number(headers.get("x-keap-product-throttle-limit"))
        unit = headers.get("x-keap-product-throttle-time-unit", "minute")
        if limit and unit == "minute":
            self.minute.reconfigure(limit - 1, limit / 60 * self.MARGIN)
        available = _number(headers.get("x-keap-product-throttle-available"))
        if available is not None:
            self.minute.cap(available - 1)
        quota = _number(headers.get("x-keap-product-quota-available"))
        if quota is not None:
            self.quota_left = int(quota)
            self.quota_resets = headers.get("x-keap-product-quota-expiry-time")
        if quota is not None and quota <= 0:
            self.quota_exhausted_until = headers.get("x-keap-product-quota-expiry-time", "tomorrow")
        elif quota is not None:
            self.quota_exhausted_until = None

    def exhausted(self) -> QuotaExhausted | None:
        """Keap's daily quota is spent (its headers said so): until it resets, nothing is sent."""
        if self.quota_exhausted_until is None:
            return None
        resets = quota_reset_time(self.quota_exhausted_until)
        if resets is not None and datetime.now(UTC) >= resets:
            self.quota_exhausted_until = None
            return None
        when = quota_reset_text(self.quota_exhausted_until)
        return QuotaExhausted(
            f"Keap's daily request quota is spent; it resets at {when}: the next run after that "
            "goes on where this one stopped",
            system="keap",
            resets_at=resets.isoformat() if resets else None,
        )


def quota_reset_text(expiry: str | None) -> str:
    """When Keap's daily quota resets, for a person: `2026-12-01 00:00 UTC`."""
    resets = quota_reset_time(expiry) if expiry else None
    return resets.strftime("%Y-%m-%d %H:%M UTC") if resets else "tomorrow (00:00 UTC)"


def quota_reset_time(expiry: str) -> datetime | None:
    """`x-keap-product-quota-expiry-time`: epoch milliseconds, or a timestamp."""
    try:
        return datetime.fromtimestamp(float(expiry) / 1000, UTC)
    except ValueError:
        return parse_time(expiry)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.split("|")[0])
    except ValueError:
        return None


class ApiKeyAuth(httpx.Auth):
    def __init__(self, key: str) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Keap-API-Key"] = self.key
        yield request


class OAuth(httpx.Auth):
    """Bearer access token; refreshed when expired or answered 401, rotation stored first.

    A refresh holds the token store's lock across processes and reads the stored tokens
    again first: when another process (or thread) rotated the grant meanwhile, its tokens
    are used instead of refreshing again (a second refresh would send a rotated-away
    token). A token endpoint that fails (5xx, 429, no answer) is retried with backoff,
    then reported as unavailable; only a refused grant asks for re-authorization."""

    RETRY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=10.0, max_retry_after=60.0)

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str | None,
        client_secret: str | None,
        access_token: str | None,
        refresh_token: str | None,
        store: TokenStore,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id, self.client_secret = client_id, client_secret
        self.env_access, self.env_refresh = access_token, refresh_token
        self.store = store
        self.tokens: TokenSet = store.load(access_token, refresh_token)
        self.transport = transport
        self.clock = clock
        self.sleep = sleep
        self.retry = retry or self.RETRY
        self.rng = random.Random()
        self.lock = threading.Lock()
        self.refreshes = 0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.tokens.access_token is None or self.tokens.expired(self.clock()):
            self.refresh(stale=self.tokens.access_token)
        sent_with = self.tokens.access_token
        request.headers["Authorization"] = f"Bearer {sent_with}"
        response = yield request
        if response.status_code == 401 and self.tokens.refresh_token:
            self.refresh(stale=sent_with)
            request.headers["Authorization"] = f"Bearer {self.tokens.access_token}"
            yield request

    def refresh(self, stale: str | None) -> None:
        """Make sure the access token is a newer one than `stale` (the one that expired or
        was refused), refreshing only when nobody else did."""
        with self.lock, self.store.exclusive():
            stored = self.store.load(self.env_access, self.env_refresh)
            if (stored.access_token, stored.refresh_token) != (
                self.tokens.access_token,
                self.tokens.refresh_token,
            ):
                self.tokens = stored  # another process rotated the grant meanwhile
            if self.tokens.access_token not in (None, stale) and not self.tokens.expired(self.clock()):
                return
            if not (self.tokens.refresh_token and self.client_id and self.client_secret):
                raise AuthError(
                    "Keap's access token expired and no refresh token/client is configured", system="keap"
                )
            tokens = self._ask_for_tokens(self.tokens.refresh_token)
            self.store.save(tokens, self.env_refresh)  # durable before it is used
            self.tokens = tokens
            self.refreshes += 1

    def _ask_for_tokens(self, refresh_token: str) -> TokenSet:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        attempt = 0
        while True:
            attempt += 1
            error: ApiError
            try:
                with httpx.Client(transport=self.transport, timeout=30) as client:
                    response = client.post(
                        self.token_url,
                        headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
                        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                    )
            except httpx.TransportError as exc:
                error = TransportFailure(
                    f"no answer: {type(exc).__name__}",
                    system="keap",
                    method="POST",
                    url=safe_url(httpx.URL(self.token_url)),
                    reason=str(exc)[:200],
                )
            else:
                if response.status_code == 200:
                    body = response.json()
                    return TokenSet(
                        access_token=body["access_token"],
                        refresh_token=body.get("refresh_token", refresh_token),
                        expires_at=self.clock() + float(body.get("expires_in", 86400)),
                    )
                error = error_for_response("keap", response)
                if not (isinstance(error, RetryableError) or response.status_code == 408):
                    raise self._refused(error)
            if attempt >= self.retry.max_attempts:
                failure = f"HTTP {error.status}" if error.status else error.message
                raise TokenEndpointUnavailable(
                    f"Keap's token endpoint is unavailable ({failure}); try again later",
                    system="keap",
                    method="POST",
                    url=error.url,
                    status=error.status,
                    reason=error.reason,
                )
            self.sleep(self.retry.delay(attempt, error, self.rng))

    @staticmethod
    def _refused(error: ApiError) -> AuthError:
        """Keap refused the grant (a revoked or rotated-away refresh token) or the client."""
        message = (
            "Keap refused the OAuth client; check KEAP_CLIENT_ID and KEAP_CLIENT_SECRET, "
            "or re-authorize and set KEAP_REFRESH_TOKEN"
            if error.status == 401
            else "Keap refused the OAuth refresh; re-authorize and set KEAP_REFRESH_TOKEN"
        )
        return AuthError(
            message, system="keap", method="POST", url=error.url, status=error.status, reason=error.reason
        )


class KeapClient(ApiClient):
    system = "keap"

    def quota(self) -> tuple[int | None, str]:
        """Keap's daily quota as its last answer told it: requests left (None before any
        answer, or from a Keap that sends no quota headers) and when it resets."""
        pacer = self.pacer
        if not isinstance(pacer, KeapPacer):
            return None, quota_reset_text(None)
        resets = quota_reset_time(pacer.quota_resets) if pacer.quota_resets else None
        if resets is not None and datetime.now(UTC) >= resets:  # a new day since: not known yet
            return None, quota_reset_text(None)
        return pacer.quota_left, quota_reset_text(pacer.quota_resets)

    def list_page(
        self, resource: str, params: dict[str, Any], page_size: int = 1000, number: int = 1
    ) -> ListPage:
        """One page of a list: its items, the next-page token (opaque; a whole URL is reduced
        to its token) and the server's clock (`Date`) when it answered."""
        key = list_key(resource)
        response = self.request("GET", f"/{resource}", params={**params, "page_size": page_size})
        where = f"Keap {resource} page {number}"
        try:
            body = response.json()
        except ValueError as exc:
            raise ProtocolError(
                f"{where} does not parse as JSON: {exc}", system="keap", method="GET", url=f"/{resource}"
            ) from None
        if not isinstance(body, dict):
            raise ProtocolError(
                f"{where} is not a JSON object", system="keap", method="GET", url=f"/{resource}"
            )
        items = body.get(key)
        if not isinstance(items, list):
            raise ProtocolError(
                f"{where}: '{key}' is {'missing' if key not in body else type(items).__name__}, not a list",
                system="keap",
                method="GET",
                url=f"/{resource}",
            )
        token = body.get("next_page_token")
        if token is not None and not isinstance(token, str):
            raise ProtocolError(f"{where}: next_page_token is not text", system="keap", url=f"/{resource}")
        if token and token.startswith(("http://", "https://")):  # captured once: a whole URL as token
            found = parse_qs(urlparse(token).query).get("page_token", [""])[0]
            if not found:
                raise ProtocolError(
                    f"{where}: the next-page URL carries no page_token; the walk stopped",
                    system="keap",
                    url=f"/{resource}",
                )
            token = found
        return ListPage(items, token or None, server_time(response))

    def pages(
        self, resource: str, params: dict[str, Any] | None = None, page_size: int = 1000
    ) -> Iterator[list[Any]]:
        """Every page of a list, following `next_page_token`. Only for small lists or single
        pages: Keap may page by position, so a record deleted or edited meanwhile can shift
        the next page by one (`walk` does not trust positions)."""
        for page in self.token_walk(resource, params or {}, page_size):
            yield page.items

    def token_walk(self, resource: str, params: dict[str, Any], page_size: int = 1000) -> Iterator[ListPage]:
        seen_tokens: set[str] = set()
        number = 1
        page = self.list_page(resource, params, page_size, number)
        while True:
            yield page
            if page.next_token is None:
                return
            if page.next_token in seen_tokens:
                raise ProtocolError(
                    f"Keap {resource} page {number}: the next-page token repeats; the walk stopped "
                    "(it would never end)",
                    system="keap",
                    url=f"/{resource}",
                )
            seen_tokens.add(page.next_token)
            number += 1
            page = self.list_page(resource, {**params, "page_token": page.next_token}, page_size, number)

    def walk(
        self,
        resource: str,
        since: datetime | None,
        fields: list[str] | None = None,
        page_size: int = 1000,
        after_id: int | None = None,
    ) -> Iterator[WalkPage]:
        """The records updated at or after `since` (all when None), page by page, without
        trusting page positions: each page is a fresh query for the ids after the last one
        seen (ordered by id where Keap sorts by id, else in Keap's default id order, which
        is checked). Opportunities and products have no time filter: one newest-first page
        answers an incremental read when it reaches past `since` (a page of `page_size`,
        then, when every record on it is newer, one of Keap's largest); otherwise the walk
        goes by id through them all. `after_id` resumes an interrupted walk by id."""
        spec = keap_resource(resource)
        params: dict[str, Any] = {}
        if fields:
            if not spec.narrowable:
                raise ValueError(f"Keap's {resource} list cannot be narrowed with `fields`")
            params["fields"] = ",".join(fields)
        if spec.time_filter is None and since is not None and after_id is None:
            # a small page is what a re-read between writes expects; when more changed (the
            # push's own writes, at a pace without limits), one large page before walking
            # every record: a walk by id is a page per thousand records of the account
            for size in dict.fromkeys((page_size, MAX_PAGE_SIZE)):
                newest = self.list_page(resource, {**params, "order_by": spec.newest_first}, size)
                fresh = _fresh(newest.items, spec.cursor_field, since)
                if newest.next_token is None or len(fresh) < len(newest.items):
                    yield WalkPage(fresh, newest.server_time, last_id=None, complete=True)
                    return
        yield from self._walk_by_id(resource, since, params, page_size, after_id)

    def _walk_by_id(
        self,
        resource: str,
        since: datetime | None,
        params: dict[str, Any],
        page_size: int,
        after_id: int | None,
    ) -> Iterator[WalkPage]:
        spec = keap_resource(resource)
        clauses = []
        if since is not None and spec.time_filter:
            clauses.append(f"{spec.time_filter}=={filter_timestamp(since)}")
        if spec.id_order:
            params = {**params, "order_by": spec.id_order}
        last = after_id
        number = 0
        while True:
            number += 1
            where = [*clauses, f"{spec.id_filter}>{last}"] if last is not None else clauses
            query = {**params, "filter": ";".join(where)} if where else params
            page = self.list_page(resource, query, page_size, number)
            ids = [_int_id(item) for item in page.items]
            known = [i for i in ids if i is not None]
            if (
                known != sorted(known)
                or len(set(known)) != len(known)
                or (last is not None and known and known[0] <= last)
            ):
                raise ProtocolError(
                    f"Keap {resource} page {number} is not in increasing id order: a walk by id "
                    "cannot be trusted; the walk stopped",
                    system="keap",
                    url=f"/{resource}",
                )
            if page.next_token is not None and not known:
                raise ProtocolError(
                    f"Keap {resource} page {number} promises more but carries no id to go on "
                    "from; the walk stopped",
                    system="keap",
                    url=f"/{resource}",
                )
            if known:
                last = known[-1]
            items = page.items
            if since is not None and not spec.time_filter:  # no time filter: everything came
                items = _fresh(items, spec.cursor_field, since)
            more = page.next_token is not None
            yield WalkPage(items, page.server_time, last_id=last, complete=not more)
            if not more:
                return

    def changed_since(
        self, resource: str, since: datetime | None, fields: list[str] | None = None, page_size: int = 1000
    ) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        """Pages of the records updated at or after `since`, each with a flag that is True on
        the last page (`walk` as (items, last) pairs)."""
        for page in self.walk(resource, since, fields, page_size):
            yield page.items, page.complete

    def get(self, resource: str, record_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        return self.parse(self.request("GET", f"/{resource}/{record_id}", params=params, record_id=record_id))  # type: ignore[no-any-return]

    def create(
        self,
        resource: str,
        body: dict[str, Any],
        params: dict[str, str] | None = None,
        record_id: str | None = None,
    ) -> dict[str, Any]:
        """POST is not idempotent in Keap: a failure without an answer is not retried here."""
        return self.parse(self.request("POST", f"/{resource}", json=body, params=params, record_id=record_id))  # type: ignore[no-any-return]

    def update(
        self, resource: str, record_id: str, body: dict[str, Any], update_mask: list[str]
    ) -> dict[str, Any]:
        return self.parse(  # type: ignore[no-any-return]
            self.request(
                "PATCH",
                f"/{resource}/{record_id}",
                params={"update_mask": ",".join(update_mask)},
                json=body,
                record_id=record_id,
            )
        )

    def delete(self, resource: str, record_id: str) -> None:
        self.request("DELETE", f"/{resource}/{record_id}", record_id=record_id)


def keap_client(
    *,
    base_url: str,
    api_key: str | None = None,
    access_token: str | None = None,
    refresh_token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    token_url: str = "https://api.infusionsoft.com/token",
    token_store: TokenStore | None = None,
    pacer: Pacer | None = None,
    retry: RetryPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Sleep = time.sleep,
) -> KeapClient:
    """A Keap client for a personal/service key, or for OAuth when no key is given."""
    auth: httpx.Auth
    if api_key:
        auth = ApiKeyAuth(api_key)
    elif access_token or refresh_token:
        if token_store is None:
            raise ValueError("OAuth needs a token store to keep rotated refresh tokens")
        auth = OAuth(
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            access_token=access_token,
            refresh_token=refresh_token,
            store=token_store,
            transport=transport,
            sleep=sleep,
        )
    else:
        raise AuthError("Keap needs KEAP_API_KEY, or KEAP_ACCESS_TOKEN/KEAP_REFRESH_TOKEN", system="keap")
    return KeapClient(
        base_url,
        auth=auth,
        pacer=pacer or KeapPacer(sleep=sleep),
        retry=retry,
        transport=transport,
        sleep=sleep,
    )
