"""Keap's REST hooks (REST v1 `/hooks`), as the Keap sandbox offers them.

What Keap documents (docs/keap-api.md, REST hooks), and the sandbox does:

- `GET /crm/rest/v1/hooks/event_keys` lists the event keys Keap offers; `POST /hooks
  {eventKey, hookUrl}` creates a subscription, Unverified, and the verification request
  follows at once: a POST to the hookUrl with an `X-Hook-Secret` header, which the receiver
  must echo in a 200 answer (the subscription is then Verified). `GET /hooks`,
  `GET|PUT|DELETE /hooks/{key}`, `POST /hooks/{key}/verify` (verify again now, answered
  with the result) and `POST /hooks/{key}/delayedVerify` (the receiver sends the secret
  back itself). The same credentials as v2, the same rate limits, counted in the same
  request log (`/v1/hooks...`).
- A change made through the v2 API (a record created, PATCHed, deleted; an opportunity's
  stage moved) is delivered to every Verified subscription of its event key, batched
  (up to 1,000 object keys a POST: `{event_key, object_type, object_keys: [{id, apiUrl,
  timestamp}]}`), 30 to 60 s after the change; a failed attempt (no answer within the
  timeout, a status under 200 or from 400, but 410) is retried after 30 to 60 s, 5 min
  and 30 min; a 410, or the 4th failed attempt, makes the subscription Inactive (its
  pending deliveries are dropped, and nothing is queued for it) until it is verified again.

Delivery runs in a background thread of the sandbox process, with httpx. The sandbox's
setting `{"hooks": {"delay_s": [lo, hi], "timeout_s": t}}` (POST /_sandbox/config) sets
the delivery delay (Keap's [30, 60] by default); the retry delays are scaled by the same
factor (hi / 60), so tests run Keap's schedule in fractions of a second.
`GET /_sandbox/hooks` shows the subscriptions and every delivery attempt;
`POST /_sandbox/hooks/emit {"event_key", "ids"}` queues events as if those records had
changed (a flood, without changing data).
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.keap.store import KeapStore

V1_PREFIX = "/crm/rest/v1"
V2_PREFIX = "/crm/rest/v2"

# What `GET /hooks/event_keys` answers: the keys Keap's REST v1 offers (docs/keap-api.md).
EVENT_KEYS = (
    "appointment.add", "appointment.delete", "appointment.edit",
    "company.add", "company.delete", "company.edit",
    "contact.add", "contact.delete", "contact.edit",
    "contactGroup.add", "contactGroup.applied", "contactGroup.delete", "contactGroup.edit",
    "contactGroup.removed",
    "invoice.add", "invoice.delete", "invoice.edit",
    "invoice.payment.add", "invoice.payment.delete", "invoice.payment.edit",
    "leadsource.add", "leadsource.delete", "leadsource.edit",
    "note.add", "note.delete", "note.edit",
    "opportunity.add", "opportunity.delete", "opportunity.edit", "opportunity.stage_move",
    "order.add", "order.delete", "order.edit",
    "product.add", "product.delete", "product.edit",
    "subscription.add", "subscription.delete", "subscription.edit",
    "task.add", "task.complete", "task.delete", "task.edit", "task.incomplete",
    "user.activate", "user.add", "user.edit",
)  # fmt: skip

# v2 resource -> the object type its events name
OBJECT_TYPES = {
    "contacts": "contact",
    "companies": "company",
    "opportunities": "opportunity",
    "products": "product",
}
MAX_OBJECT_KEYS = 1000  # a delivery carries at most this many
# after the 1st, 2nd and 3rd failed attempt, seconds at Keap's pace; the 4th failure is final
RETRY_AFTER_S = ((30.0, 60.0), (300.0, 300.0), (1800.0, 1800.0))
ATTEMPTS = len(RETRY_AFTER_S) + 1
KEEP_ATTEMPTS = 5000  # the attempt log shown at /_sandbox/hooks keeps the latest

_SCHEMA = """
create table if not exists hooks (
    key        integer primary key,
    event_key  text not null,
    hook_url   text not null,
    status     text not null,   -- Verified, Unverified, Inactive
    secret     text             -- the last X-Hook-Secret sent to it
);
"""


@dataclass
class HookSettings:
    delay_s: tuple[float, float] = (30.0, 60.0)  # Keap: 30 to 60 s after the change
    timeout_s: float = 30.0  # Keap: an answer within 30 s
    seed: int | None = None

    @property
    def scale(self) -> float:
        """Keap's schedule times this: the retry delays follow the delivery delay."""
        return self.delay_s[1] / 60.0

    def retry_after(self, failures: int, rng: random.Random) -> float:
        low, high = RETRY_AFTER_S[failures - 1]
        if failures == 1:  # the second attempt: the same 30 to 60 s as the first
            return rng.uniform(*self.delay_s)
        return rng.uniform(low, high) * self.scale

    @classmethod
    def parse(cls, value: Any, current: HookSettings) -> HookSettings:
        if not isinstance(value, dict):
            raise ValueError("hooks: an object like {'delay_s': [30, 60], 'timeout_s': 30}")
        unknown = set(value) - {"delay_s", "timeout_s", "seed"}
        if unknown:
            raise ValueError(f"unknown hooks settings: {sorted(unknown)}")
        delay = value.get("delay_s", current.delay_s)
        if isinstance(delay, int | float):
            delay = (delay, delay)
        try:
            low, high = (float(x) for x in delay)
        except (TypeError, ValueError):
            raise ValueError("hooks.delay_s: seconds, or [lowest, highest]") from None
        if not 0 < low <= high:
            raise ValueError("hooks.delay_s: 0 < lowest <= highest")
        timeout = float(value.get("timeout_s", current.timeout_s))
        if timeout <= 0:
            raise ValueError("hooks.timeout_s: a positive number of seconds")
        return cls((low, high), timeout, value.get("seed", current.seed))


@dataclass
class Hook:
    key: str
    event_key: str
    hook_url: str
    status: str
    secret: str | None = None

    def shown(self) -> dict[str, str]:
        return {"key": self.key, "eventKey": self.event_key, "hookUrl": self.hook_url, "status": self.status}


@dataclass
class Batch:
    """Object keys waiting for one subscription: sent when due, retried until it gives up."""

    hook_key: str
    event_key: str
    object_type: str
    due: float
    object_keys: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0
    verification: bool = False  # the verification request, not an event


class KeapHooks:
    """Subscriptions (kept in the sandbox's SQLite file), their verification and delivery."""

    def __init__(self, store: KeapStore, authenticate: Callable[[Scope], str | None]) -> None:
        self.store = store
        self.authenticate = authenticate
        self.settings = HookSettings()
        self.rng = random.Random()
        with store.lock:
            store.db.executescript(_SCHEMA)
        self.hooks: dict[str, Hook] = {
            str(k): Hook(str(k), e, u, s, secret)
            for k, e, u, s, secret in store.db.execute(
                "select key, event_key, hook_url, status, secret from hooks order by key"
            )
        }
        self.batches: list[Batch] = []
        self.attempts: list[dict[str, Any]] = []
        # events: changes seen; queued/delivered/dropped: object keys per subscription (queued ==
        # delivered + dropped + pending once nothing is in flight)
        self.counts = {"events": 0, "queued_objects": 0, "delivered_objects": 0, "dropped_objects": 0,
                       "failed_attempts": 0}  # fmt: skip
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.gateway: Any = None  # the v2 gateway: its auth, limits and request log serve v1 too
        self.app = Starlette(
            routes=[
                Route(f"{V1_PREFIX}/hooks", self.list_or_create, methods=["GET", "POST"]),
                Route(f"{V1_PREFIX}/hooks/event_keys", self.event_keys, methods=["GET"]),
                Route(f"{V1_PREFIX}/hooks/{{key}}", self.one, methods=["GET", "PUT", "DELETE"]),
                Route(f"{V1_PREFIX}/hooks/{{key}}/verify", self.verify, methods=["POST"]),
                Route(f"{V1_PREFIX}/hooks/{{key}}/delayedVerify", self.delayed_verify, methods=["POST"]),
            ],
            exception_handlers={_V1Error: _on_v1_error},
        )

    # --- settings and admin -------------------------------------------------------
    def configure(self, value: Any) -> None:
        with self.cond:
            self.settings = HookSettings.parse(value, self.settings)
            if self.settings.seed is not None:
                self.rng = random.Random(self.settings.seed)
            self.cond.notify_all()

    def describe(self) -> dict[str, Any]:
        return {"delay_s": list(self.settings.delay_s), "timeout_s": self.settings.timeout_s}

    def admin(self, method: str, path: str, body: dict[str, Any]) -> Any:
        if path == "/_sandbox/hooks" and method == "GET":
            with self.cond:
                return {
                    "settings": self.describe(),
                    "hooks": [h.shown() for h in self.hooks.values()],
                    "pending_objects": sum(len(b.object_keys) for b in self.batches),
                    **self.counts,
                    "attempts": list(self.attempts),
                }
        if path == "/_sandbox/hooks/emit" and method == "POST":
            event_key = body.get("event_key")
            ids = body.get("ids")
            if event_key not in EVENT_KEYS or not isinstance(ids, list):
                raise ValueError("emit: {'event_key': one of Keap's event keys, 'ids': [...]}")
            queued = self.events(str(event_key), [str(i) for i in ids], body.get("api_root", ""))
            return {"queued": queued}
        raise LookupError(path)

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=10)

    # --- what happened: events --------------------------------------------------------
    def events(self, event_key: str, ids: list[str], api_root: str = "") -> int:
        """Queue `event_key` for these ids on every Verified subscription of it; the count queued."""
        object_type = event_key.split(".", 1)[0]
        resource = next((r for r, t in OBJECT_TYPES.items() if t == object_type), None)
        stamp = datetime.fromtimestamp(self.store.clock.wall(), UTC).isoformat(
            timespec="milliseconds"
        )  # Keap's clock.replace("+00:00", "Z")
        keys = [
            {
                "id": int(i) if i.isdigit() else i,
                "apiUrl": (
                    f"{api_root}{V1_PREFIX}/{resource}/{i}"
                    if api_root and resource and not event_key.endswith(".delete")
                    else ""
                ),
                "timestamp": stamp,
            }
            for i in ids
        ]
        queued = 0
        with self.cond:
            self.counts["events"] += len(keys)
            now = time.monotonic()
            for hook in self.hooks.values():
                if hook.event_key != event_key or hook.status != "Verified":
                    continue
                for item in keys:
                    self._join(hook, object_type, item, now)
                    queued += 1
            self.counts["queued_objects"] += queued
            if queued:
                self._wake()
        return queued

    def _join(self, hook: Hook, object_type: str, item: dict[str, Any], now: float) -> None:
        """Into the batch still collecting for this subscription (not yet attempted, not
        full), or a new one due after Keap's delay."""
        for batch in self.batches:
            if (
                batch.hook_key == hook.key
                and not batch.verification
                and batch.failures == 0
                and len(batch.object_keys) < MAX_OBJECT_KEYS
            ):
                batch.object_keys.append(item)
                return
        due = now + self.rng.uniform(*self.settings.delay_s)
        self.batches.append(Batch(hook.key, hook.event_key, object_type, due, [item]))

    def _wake(self) -> None:
        """Start the delivery thread on first use; tell it something changed."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._deliver_forever, name="keap-hooks", daemon=True)
            self.thread.start()
        self.cond.notify_all()

    # --- delivery ---------------------------------------------------------------------
    def _deliver_forever(self) -> None:
        with httpx.Client(follow_redirects=False) as client:
            while True:
                with self.cond:
                    while not self.stopping:
                        now = time.monotonic()
                        due = [b for b in self.batches if b.due <= now]
                        if due:
                            break
                        wait = min((b.due for b in self.batches), default=now + 60) - now
                        self.cond.wait(timeout=max(0.001, wait))
                    if self.stopping:
                        return
                    batch = min(due, key=lambda b: b.due)
                    self.batches.remove(batch)
                    hook = self.hooks.get(batch.hook_key)
                    timeout = self.settings.timeout_s
                if hook is None:  # removed meanwhile
                    continue
                if batch.verification:
                    self._verify_now(client, hook, timeout)
                else:
                    self._attempt(client, hook, batch, timeout)

    def _attempt(self, client: httpx.Client, hook: Hook, batch: Batch, timeout: float) -> None:
        body = {
            "event_key": batch.event_key,
            "object_type": batch.object_type,
            "object_keys": batch.object_keys,
        }
        try:
            answer = client.post(hook.hook_url, json=body, timeout=timeout)
            status: int | None = answer.status_code
            outcome = str(status)
        except httpx.HTTPError as exc:  # no answer (within the timeout): a failed attempt
            status, outcome = None, type(exc).__name__
        delivered = status is not None and 200 <= status < 400
        with self.cond:
            self.attempts.append(
                {"key": hook.key, "event_key": batch.event_key, "objects": len(batch.object_keys),
                 "attempt": batch.failures + 1, "result": outcome, "at": time.time()}
            )  # fmt: skip
            del self.attempts[:-KEEP_ATTEMPTS]
            if delivered:
                self.counts["delivered_objects"] += len(batch.object_keys)
                return
            batch.failures += 1
            self.counts["failed_attempts"] += 1
            if status == 410 or batch.failures >= ATTEMPTS:
                self._set_status(hook, "Inactive")  # and what was waiting for it is dropped
                dropped = [b for b in self.batches if b.hook_key == hook.key] + [batch]
                self.counts["dropped_objects"] += sum(len(b.object_keys) for b in dropped)
                self.batches = [b for b in self.batches if b.hook_key != hook.key]
                return
            batch.due = time.monotonic() + self.settings.retry_after(batch.failures, self.rng)
            self.batches.append(batch)
            self.cond.notify_all()

    # --- verification ---------------------------------------------------------------------
    def _handshake(self, hook: Hook) -> str:
        secret = secrets.token_hex(16)
        with self.cond:
            hook.secret = secret
            self._save(hook)
        return secret

    def _judge(self, hook: Hook, secret: str, answer: httpx.Response | None) -> None:
        echoed = (
            answer is not None and answer.status_code == 200 and answer.headers.get("x-hook-secret") == secret
        )
        with self.cond:
            self.attempts.append(
                {"key": hook.key, "event_key": hook.event_key, "objects": 0, "attempt": 1,
                 "result": "verified" if echoed else "not verified", "at": time.time()}
            )  # fmt: skip
            if echoed:
                self._set_status(hook, "Verified")

    def _verify_now(self, client: httpx.Client, hook: Hook, timeout: float) -> None:
        secret = self._handshake(hook)
        try:
            answer: httpx.Response | None = client.post(
                hook.hook_url, headers={"X-Hook-Secret": secret}, timeout=timeout
            )
        except httpx.HTTPError:
            answer = None
        self._judge(hook, secret, answer)

    async def _verify_async(self, hook: Hook) -> None:
        secret = self._handshake(hook)
        try:
            async with httpx.AsyncClient(follow_redirects=False) as client:
                answer: httpx.Response | None = await client.post(
                    hook.hook_url, headers={"X-Hook-Secret": secret}, timeout=self.settings.timeout_s
                )
        except httpx.HTTPError:
            answer = None
        self._judge(hook, secret, answer)

    def _verify_soon(self, hook: Hook) -> None:
        """Keap POSTs the verification request right after a subscription is created or changed."""
        with self.cond:
            dropped = [b for b in self.batches if b.hook_key == hook.key]
            self.counts["dropped_objects"] += sum(len(b.object_keys) for b in dropped)
            self.batches = [b for b in self.batches if b.hook_key != hook.key]
            self.batches.append(Batch(hook.key, hook.event_key, "", time.monotonic(), verification=True))
            self._wake()

    def _set_status(self, hook: Hook, status: str) -> None:
        hook.status = status
        self._save(hook)

    def _save(self, hook: Hook) -> None:
        with self.store.lock:
            self.store.db.execute(
                "insert into hooks values (?, ?, ?, ?, ?) on conflict(key) do update set "
                "event_key = excluded.event_key, hook_url = excluded.hook_url, status = excluded.status, "
                "secret = excluded.secret",
                (int(hook.key), hook.event_key, hook.hook_url, hook.status, hook.secret),
            )

    # --- the v1 API ------------------------------------------------------------------------
    async def event_keys(self, request: Request) -> Response:
        return JSONResponse(list(EVENT_KEYS))

    async def list_or_create(self, request: Request) -> Response:
        if request.method == "GET":
            with self.cond:
                return JSONResponse([h.shown() for h in self.hooks.values()])
        event_key, hook_url = await _hook_body(request)
        with self.cond, self.store.lock:
            (last,) = self.store.db.execute("select coalesce(max(key), 0) from hooks").fetchone()
            hook = Hook(str(last + 1), event_key, hook_url, "Unverified")
            self.hooks[hook.key] = hook
            self._save(hook)
            shown = hook.shown()
        self._verify_soon(hook)
        return JSONResponse(shown)

    def _hook(self, request: Request) -> Hook:
        hook = self.hooks.get(request.path_params["key"])
        if hook is None:
            raise _V1Error(404, f"Hook with key {request.path_params['key']} not found")
        return hook

    async def one(self, request: Request) -> Response:
        hook = self._hook(request)
        if request.method == "GET":
            return JSONResponse(hook.shown())
        if request.method == "DELETE":
            with self.cond, self.store.lock:
                self.hooks.pop(hook.key, None)
                dropped = [b for b in self.batches if b.hook_key == hook.key]
                self.counts["dropped_objects"] += sum(len(b.object_keys) for b in dropped)
                self.batches = [b for b in self.batches if b.hook_key != hook.key]
                self.store.db.execute("delete from hooks where key = ?", (int(hook.key),))
            return Response(status_code=204)
        event_key, hook_url = await _hook_body(request)
        with self.cond:
            hook.event_key, hook.hook_url, hook.status = event_key, hook_url, "Unverified"
            self._save(hook)
            shown = hook.shown()
        self._verify_soon(hook)
        return JSONResponse(shown)

    async def verify(self, request: Request) -> Response:
        hook = self._hook(request)
        await self._verify_async(hook)
        return JSONResponse(hook.shown())

    async def delayed_verify(self, request: Request) -> Response:
        hook = self._hook(request)
        sent = request.headers.get("x-hook-secret")
        if not sent or sent != hook.secret:
            raise _V1Error(400, "X-Hook-Secret does not match the secret sent to the hook URL")
        with self.cond:
            self._set_status(hook, "Verified")
        return JSONResponse(hook.shown())

    # --- ASGI: v1 in front of the gateway, events behind it --------------------------------
    def v1(self, gateway: Any) -> ASGIApp:
        """In front of the v2 gateway: `/crm/rest/v1/...` answered here, with the gateway's
        authentication, rate limits and request log; everything else goes to the gateway."""
        self.gateway = gateway

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "")
            if scope["type"] != "http" or not path.startswith(V1_PREFIX + "/"):
                await gateway(scope, receive, send)
                return
            gateway.log.counts[f"{scope['method']} {_v1_endpoint(path)}"] += 1
            identity = gateway.authenticate(scope)
            if identity is None:
                body, _ = gateway.unauthorized()
                await _reply(send, gateway, 401, body, {})
                return
            limit = gateway.limiter.check(identity)
            if not limit.allowed:
                gateway.log.injected["rate_limited"] += 1
                body, _ = gateway.throttled()
                await _reply(send, gateway, 429, limit.error_body or body, limit.headers)
                return
            if not path.startswith(V1_PREFIX + "/hooks"):
                await _reply(
                    send, gateway, 501, {"message": "The sandbox implements REST v1 /hooks only"}, {}
                )
                return

            async def stamped(message: Message) -> None:
                if message["type"] == "http.response.start":
                    gateway.log.statuses[message["status"]] += 1
                    message["headers"] = list(message.get("headers", [])) + [
                        (k.encode(), v.encode()) for k, v in limit.headers.items()
                    ]
                await send(message)

            await self.app(scope, receive, stamped)

        return serve

    def observe(self, app: ASGIApp) -> ASGIApp:
        """Behind the v2 gateway, around the app: each write that went through becomes an
        event (`contact.add`, `company.edit`, `product.delete`, `opportunity.stage_move`...)."""

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] not in ("POST", "PATCH", "DELETE"):
                await app(scope, receive, send)
                return
            parts = scope["path"][len(V2_PREFIX) :].strip("/").split("/")
            if (
                not scope["path"].startswith(V2_PREFIX + "/")
                or parts[0] not in OBJECT_TYPES
                or len(parts) > 2
            ):
                await app(scope, receive, send)
                return
            resource, record_id = parts[0], (parts[1] if len(parts) == 2 else None)
            stage_before = None
            if resource == "opportunities" and record_id and scope["method"] == "PATCH":
                found = self.store.get(resource, record_id)
                stage_before = found[0].get("stage_id") if found else None
            answer: dict[str, Any] = {"status": 0, "body": b""}

            async def watched(message: Message) -> None:
                if message["type"] == "http.response.start":
                    answer["status"] = message["status"]
                elif message["type"] == "http.response.body" and scope["method"] == "POST":
                    answer["body"] += message.get("body", b"")
                await send(message)

            await app(scope, receive, watched)
            status = answer["status"]
            if status not in (200, 201, 204):
                return
            action = {"PATCH": "edit", "DELETE": "delete"}.get(
                scope["method"], "add" if status == 201 else "edit"
            )
            if record_id is None:
                try:
                    record_id = str(json.loads(answer["body"])["id"])
                except (ValueError, KeyError, TypeError):
                    return
            object_type = OBJECT_TYPES[resource]
            root = _root(scope)
            self.events(f"{object_type}.{action}", [record_id], root)
            if stage_before is not None:
                found = self.store.get(resource, record_id)
                if found and found[0].get("stage_id") != stage_before:
                    self.events(f"{object_type}.stage_move", [record_id], root)

        return observed


class _V1Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _on_v1_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _V1Error)
    return JSONResponse({"message": exc.message}, status_code=exc.status)


async def _hook_body(request: Request) -> tuple[str, str]:
    try:
        body = json.loads(await request.body() or b"null")
    except json.JSONDecodeError:
        raise _V1Error(400, "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _V1Error(400, "The request body must be a JSON object")
    event_key, hook_url = body.get("eventKey"), body.get("hookUrl")
    if event_key not in EVENT_KEYS:
        raise _V1Error(400, f"Invalid eventKey: {event_key!r} is not one of GET /hooks/event_keys")
    if not isinstance(hook_url, str) or not hook_url.startswith(("http://", "https://")):
        raise _V1Error(400, "Invalid hookUrl: an http(s) URL is required")
    return str(event_key), hook_url


def _v1_endpoint(path: str) -> str:
    """`/crm/rest/v1/hooks/12/verify` -> `/v1/hooks/{key}/verify`: one key per endpoint."""
    parts = path[len(V1_PREFIX) :].strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "hooks" and parts[1] != "event_keys":
        parts[1] = "{key}"
    return "/v1/" + "/".join(parts)


def _root(scope: Scope) -> str:
    headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
    host = headers.get("host")
    return f"{scope.get('scheme', 'http')}://{host}" if host else ""


async def _reply(send: Send, gateway: Any, status: int, body: Any, headers: dict[str, str]) -> None:
    gateway.log.statuses[status] += 1
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
