"""The Customcrm client (docs/customcrm-api.md): cursor lists, ETag/If-Match,
Idempotency-Key, merge patches, soft deletes and the batch endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from connectors.errors import ProtocolError, TooLarge
from connectors.http import ApiClient, Clock, ListPage, Pacer, RetryPolicy, Sleep, server_time

BATCH_LIMIT = 100
PAGE_LIMIT = 500
MAX_BODY = 1024 * 1024  # the contract: a request body over 1 MiB is refused with 413


class CustomcrmPacer(Pacer):
    """Reads `RateLimit-Remaining`/`RateLimit-Reset`: when nothing is left, waits for the reset.

    Several requests may be on the wire at once (the push keeps two batch calls going): an
    answer's `RateLimit-Remaining` was counted before the requests let go after it had
    arrived, so those are taken off what it says, or an answer read late would hand out
    tokens the others already spent (a 429)."""

    def __init__(self, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self.clock, self.sleep = clock, sleep
        self.remaining: float | None = None
        self.reset_at = 0.0
        self.lock = threading.Lock()
        self.let_go = 0  # requests let go so far, numbered
        self.local = threading.local()  # the number of this thread's request on the wire

    def before(self) -> float:
        with self.lock:
            wait = 0.0
            if self.remaining is not None and self.remaining < 1:
                wait = max(0.0, self.reset_at - self.clock())
            if self.remaining is not None:
                self.remaining -= 1
            self.let_go += 1
            self.local.number = self.let_go
        if wait > 0:
            self.sleep(wait)
        return wait

    def after(self, response: httpx.Response) -> None:
        try:
            remaining = float(response.headers["ratelimit-remaining"])
            reset = float(response.headers.get("ratelimit-reset", "1"))
        except (KeyError, ValueError):
            return
        with self.lock:
            later = self.let_go - getattr(self.local, "number", self.let_go)  # sent after this one
            self.remaining = remaining - later
            self.reset_at = self.clock() + max(reset, 0.05 if self.remaining < 1 else 0.0)


class CustomcrmClient(ApiClient):
    system = "customcrm"
    max_body = MAX_BODY

    def pages(
        self,
        resource: str,
        *,
        updated_since: str | None = None,
        include_deleted: bool = True,
        external_ref: str | None = None,
        limit: int = PAGE_LIMIT,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page, ordered by (UpdatedAt, Id); a cursor resumes strictly after the last record."""
        for page in self.walk(
            resource,
            updated_since=updated_since,
            include_deleted=include_deleted,
            external_ref=external_ref,
            limit=limit,
        ):
            yield page.items

    def walk(
        self,
        resource: str,
        *,
        updated_since: str | None = None,
        include_deleted: bool = True,
        external_ref: str | None = None,
        limit: int = PAGE_LIMIT,
    ) -> Iterator[ListPage]:
        """`pages`, each with the server's clock when it answered; a cursor that repeats or a
        page that does not parse stops the walk with an error naming the resource and page."""
        query: dict[str, Any] = {"limit": limit, "include_deleted": str(include_deleted).lower()}
        if updated_since:
            query["updated_since"] = updated_since
        if external_ref:
            query["external_ref"] = external_ref
        seen: set[str] = set()
        page = 0
        while True:
            page += 1
            response = self.request("GET", f"/{resource}", params=query)
            where = f"Customcrm {resource} page {page}"
            try:
                body = response.json()
                items, cursor = body["data"], body["next_cursor"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ProtocolError(
                    f"{where} does not parse: {type(exc).__name__} {exc}",
                    system="customcrm",
                    method="GET",
                    url=f"/{resource}",
                ) from None
            if not isinstance(items, list):
                raise ProtocolError(f"{where}: 'data' is not a list", system="customcrm", url=f"/{resource}")
            if cursor is not None and not isinstance(cursor, str):
                raise ProtocolError(
                    f"{where}: next_cursor is not text", system="customcrm", url=f"/{resource}"
                )
            yield ListPage(items, cursor or None, server_time(response))
            if not cursor:
                return
            if cursor in seen:
                raise ProtocolError(
                    f"{where}: next_cursor repeats; the walk stopped (it would never end)",
                    system="customcrm",
                    url=f"/{resource}",
                )
            seen.add(cursor)
            query = {**query, "cursor": cursor}

    def get(self, resource: str, record_id: str) -> dict[str, Any]:
        return self.parse(self.request("GET", f"/{resource}/{record_id}", record_id=record_id))  # type: ignore[no-any-return]

    def create(
        self,
        resource: str,
        data: dict[str, Any],
        idempotency_key: str | None = None,
        record_id: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.parse(  # type: ignore[no-any-return]
            self.request(
                "POST",
                f"/{resource}",
                json=data,
                headers=headers,
                idempotent=idempotency_key is not None,
                record_id=record_id,
            )
        )

    def update(
        self, resource: str, record_id: str, patch: dict[str, Any], if_match: str | None = None
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        if if_match:
            headers["If-Match"] = if_match
        return self.parse(  # type: ignore[no-any-return]
            self.request(
                "PATCH", f"/{resource}/{record_id}", json=patch, headers=headers, record_id=record_id
            )
        )

    def delete(self, resource: str, record_id: str, if_match: str | None = None) -> None:
        headers = {"If-Match": if_match} if if_match else None
        self.request("DELETE", f"/{resource}/{record_id}", headers=headers, record_id=record_id)

    def plan_batches(self, operations: list[dict[str, Any]]) -> list[list[int]]:
        """The operations' indexes in batches of up to 100 whose body stays within the server's
        limit (`max_body`, measured on the bytes sent). An operation over the limit alone
        is a batch of its own, which `batch` refuses without sending."""
        envelope = len(encode({"operations": []}))
        batches: list[list[int]] = []
        current: list[int] = []
        size = envelope
        for index, operation in enumerate(operations):
            length = len(encode(operation))
            if current and (len(current) == BATCH_LIMIT or size + 1 + length > self.max_body):
                batches.append(current)
                current, size = [], envelope
            size += length + (1 if current else 0)
            current.append(index)
        if current:
            batches.append(current)
        return batches

    def batch(self, resource: str, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Up to 100 operations; each result stands on its own. Safe to retry only
        when every create carries an idempotency key.

        A body over the limit is not sent: it is halved, and so is a batch the server
        answers 413 (its limit may be lower than ours); a single operation that is too large
        alone gets a 413 result of its own, with the sizes, and the others go on."""
        if not 0 < len(operations) <= BATCH_LIMIT:
            raise ValueError(f"a batch holds 1 to {BATCH_LIMIT} operations, not {len(operations)}")
        body = encode({"operations": operations})
        if len(body) > self.max_body:
            return self._halve(resource, operations, len(body), self.max_body)
        idempotent = all(op["op"] != "create" or op.get("idempotency_key") for op in operations)
        try:
            response = self.request(
                "POST",
                f"/{resource}/batch",
                content=body,
                headers={"Content-Type": "application/json"},
                idempotent=idempotent,
            )
        except TooLarge:
            return self._halve(resource, operations, len(body), None)
        answer = self.parse(response)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(operations):
            raise ProtocolError(
                f"Customcrm {resource}/batch answered {len(results or [])} results for "
                f"{len(operations)} operations",
                system="customcrm",
            )
        return results

    def _halve(
        self, resource: str, operations: list[dict[str, Any]], size: int, limit: int | None
    ) -> list[dict[str, Any]]:
        if len(operations) == 1:
            within = f"the limit of {limit:,} bytes" if limit else "what the server takes (it answered 413)"
            detail = f"the operation is {size:,} bytes, over {within}: shorten its longest fields"
            return [{"status": 413, "error": {"title": "Content Too Large", "status": 413, "detail": detail}}]
        middle = len(operations) // 2
        return self.batch(resource, operations[:middle]) + self.batch(resource, operations[middle:])


def encode(body: Any) -> bytes:
    """A request body exactly as sent (compact UTF-8 JSON), so that its size can be measured."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def customcrm_client(
    *,
    base_url: str,
    token: str,
    pacer: Pacer | None = None,
    retry: RetryPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Sleep = time.sleep,
) -> CustomcrmClient:
    return CustomcrmClient(
        base_url,
        headers={"Authorization": f"Bearer {token}"},
        pacer=pacer or CustomcrmPacer(sleep=sleep),
        retry=retry,
        transport=transport,
        sleep=sleep,
    )
