"""The Keap REST v2 client: auth (API key or OAuth with rotating refresh
tokens), pacing from Keap's throttle headers, paging, and the record calls
the ingest and the push share."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from connectors.errors import (
    ApiError,
    AuthError,
    ProtocolError,
    RetryableError,
    TokenEndpointUnavailable,
    TransportFailure,
    error_for_response,
    safe_url,
)
from connectors.http import ApiClient, Clock, LocalBucket, Pacer, RetryPolicy, Sleep, parse_time
from connectors.tokens import TokenSet, TokenStore

# How each resource can be read incrementally (docs/keap-api.md): a time filter
# (oldest first where Keap can sort so), or newest first, stopping past the cursor.
INCREMENTAL: dict[str, dict[str, str | None]] = {
    "companies": {"filter": "since_time", "order_by": None, "stamp": "update_time"},
    "contacts": {"filter": "start_update_time", "order_by": "update_time asc", "stamp": "update_time"},
    "opportunities": {"filter": None, "order_by": "update_time desc", "stamp": "last_updated_time"},
    "products": {"filter": None, "order_by": "last_updated_time desc", "stamp": "update_time"},
}

# Whether a list's `fields` parameter picks the properties returned. Contacts and companies:
# yes. Opportunities: `fields` only adds optional properties (custom_fields, created_by, ...)
# to the default ones, so `fields=id,...` is refused (400). Products: no `fields` at all.
NARROWABLE = frozenset({"contacts", "companies"})


def filter_timestamp(value: datetime) -> str:
    """Keap filters want full ISO-8601 with milliseconds and a zone."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


LIST_KEYS = {
    "contacts": "contacts",
    "companies": "companies",
    "opportunities": "opportunities",
    "products": "products",
    "opportunities/stages": "stages",
}


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
        if quota is not None and quota <= 0:
            self.quota_exhausted_until = headers.get("x-keap-product-quota-expiry-time", "tomorrow")


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

    def pages(
        self, resource: str, params: dict[str, Any] | None = None, page_size: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list, following `next_page_token` (opaque, or a whole URL)."""
        key = LIST_KEYS[resource]
        query: dict[str, Any] = {**(params or {}), "page_size": page_size}
        page = 0
        while True:
            page += 1
            response = self.request("GET", f"/{resource}", params=query)
            try:
                body = response.json()
                items = body[key]
            except (ValueError, KeyError, TypeError) as exc:
                raise ProtocolError(
                    f"Keap {resource} page {page} does not parse: {type(exc).__name__} {exc}",
                    system="keap",
                    method="GET",
                    url=f"/{resource}",
                ) from None
            if not isinstance(items, list):
                raise ProtocolError(f"Keap {resource} page {page}: '{key}' is not a list", system="keap")
            yield items
            token = body.get("next_page_token")
            if not token:
                return
            if token.startswith(("http://", "https://")):  # captured once: a whole URL as token
                token = parse_qs(urlparse(token).query).get("page_token", [""])[0]
            query = {**query, "page_token": token}

    def changed_since(
        self, resource: str, since: datetime | None, fields: list[str] | None = None, page_size: int = 1000
    ) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        """Pages of the records updated at or after `since` (all when None), each with a flag
        that is True on the last page: the cheapest incremental read each resource allows."""
        spec = INCREMENTAL[resource]
        params: dict[str, Any] = {}
        if fields:
            if resource not in NARROWABLE:
                raise ValueError(f"Keap's {resource} list cannot be narrowed with `fields`")
            params["fields"] = ",".join(fields)
        if spec["order_by"]:
            params["order_by"] = spec["order_by"]
        if since is not None and spec["filter"]:
            params["filter"] = f"{spec['filter']}=={filter_timestamp(since)}"
        stamp = spec["stamp"] or "update_time"
        pages = self.pages(resource, params, page_size)
        for items in pages:
            if since is None or spec["filter"]:
                yield items, False
                continue
            fresh = [i for i in items if (parse_time(i.get(stamp)) or since) >= since]
            if len(fresh) < len(items):  # newest first: past the cursor, the rest is older
                yield fresh, True
                return
            yield fresh, False
        yield [], True

    def get(self, resource: str, record_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        return self.request("GET", f"/{resource}/{record_id}", params=params, record_id=record_id).json()  # type: ignore[no-any-return]

    def create(
        self,
        resource: str,
        body: dict[str, Any],
        params: dict[str, str] | None = None,
        record_id: str | None = None,
    ) -> dict[str, Any]:
        """POST is not idempotent in Keap: a failure without an answer is not retried here."""
        return self.request("POST", f"/{resource}", json=body, params=params, record_id=record_id).json()  # type: ignore[no-any-return]

    def update(
        self, resource: str, record_id: str, body: dict[str, Any], update_mask: list[str]
    ) -> dict[str, Any]:
        return self.request(  # type: ignore[no-any-return]
            "PATCH",
            f"/{resource}/{record_id}",
            params={"update_mask": ",".join(update_mask)},
            json=body,
            record_id=record_id,
        ).json()

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
