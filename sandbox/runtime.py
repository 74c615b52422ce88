"""What both sandboxes share: rate limits, fault injection, request counts, a server.

The sandboxes stand in for the world, so this module imports nothing of the
product. Each sandbox wraps its Starlette app in `SandboxMiddleware`, which does,
in this order, what a real API gateway does before and after the handler:
authenticate, rate-limit, inject faults, count, and stamp limit headers.

Admin endpoints live under `/_sandbox/` (outside the API prefix, not counted,
not rate-limited): `GET/POST /_sandbox/config`, `GET /_sandbox/stats`,
`POST /_sandbox/stats/reset`, `POST /_sandbox/release` (a write held by `hold_write`). Tests and benchmarks use them to set faults and
limits per run and to count the requests a sync made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from email.utils import formatdate
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


class DroppedConnection(ConnectionAbortedError):
    """Raised on purpose to make uvicorn drop a connection mid-answer."""


class _QuietDrops(logging.Filter):
    """uvicorn logs every exception from an app; an injected drop is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class TokenBucket:
    """A bucket of `capacity` tokens refilled at `rate` tokens a second."""

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic):
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def available(self) -> int:
        self._refill()
        return int(self.tokens)

    def try_take(self) -> bool:
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def seconds_until_token(self) -> float:
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass
class Faults:
    """Fault injection, set per run. Shares are probabilities in [0, 1]."""

    error_500: float = 0.0  # answer 500 before the handler runs (nothing applied)
    error_429: float = 0.0  # answer 429 before the handler runs
    commit_then_fail: float = 0.0  # writes only: apply, then answer 500 or drop the connection
    latency_ms: float = 0.0  # added to every answer
    seed: int = 0
    # the Nth write from now is held until POST /_sandbox/release: "before" it is applied (it
    # never is), or "after" it is applied (its answer never comes: the connection drops);
    # GET /_sandbox/stats says `held` meanwhile, so a test can kill the client right there
    hold_write: int = 0
    hold_when: str = "before"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faults:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        if data.get("hold_when", "before") not in ("before", "after"):
            raise ValueError("hold_when: 'before' or 'after'")
        return cls(**data)


@dataclass
class RequestLog:
    """Counts of the requests a sandbox answered, by method and resource."""

    counts: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        reads = sum(n for k, n in self.counts.items() if k.startswith("GET "))
        writes = sum(n for k, n in self.counts.items() if k.split(" ", 1)[0] in WRITE_METHODS)
        return {
            "total": sum(self.counts.values()),
            "reads": reads,
            "writes": writes,
            "by_endpoint": dict(sorted(self.counts.items())),
            "by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "injected": dict(self.injected),
        }


@dataclass
class Limit:
    """What the middleware decided about one request's rate limit."""

    allowed: bool
    headers: dict[str, str]
    error_body: dict[str, Any] | None = None
    retry_after: float | None = None


Authenticator = Callable[[Scope], str | None]
"""Returns the caller's identity (used as the rate-limit key) or None when refused."""


class RateLimiter:
    """Per-identity limits; subclasses decide the buckets and the headers."""

    def check(self, identity: str) -> Limit:
        return Limit(allowed=True, headers={})

    def describe(self) -> Any:
        return "off"


class SandboxMiddleware:
    """Gateway behaviour around a sandbox app: auth, limits, faults, counts."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_prefix: str,
        authenticate: Authenticator,
        limiter_for: Callable[[Any], RateLimiter],
        unauthorized: Callable[[], tuple[dict[str, Any], str]],
        server_error: Callable[[], tuple[dict[str, Any], str]],
        throttled: Callable[[], tuple[dict[str, Any], str]],
        open_paths: tuple[str, ...] = (),
        configure_app: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        extra_admin: Callable[[str, str, dict[str, Any]], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.api_prefix = api_prefix
        self.authenticate = authenticate
        self.limiter_for = limiter_for
        self.unauthorized = unauthorized
        self.server_error = server_error
        self.throttled = throttled
        self.open_paths = open_paths
        self.configure_app = configure_app or (lambda settings: {})
        self.extra_admin = extra_admin
        self.clock = clock  # the sandbox's own clock: every answer's Date header is written by it
        self.faults = Faults()
        self.writes_seen = 0  # writes since the faults were set (hold_write counts them)
        self.held = ""  # "before" or "after" while a write is held
        self.release: asyncio.Event | None = None
        self.rng = random.Random(0)
        self.log = RequestLog()
        self.limiter = limiter_for(None)

    # --- admin -----------------------------------------------------------
    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Set faults, limits and the app's own settings (unknown keys go to the app)."""
        own = {k: v for k, v in settings.items() if k not in ("faults", "limits")}
        if own:
            self.configure_app(own)
        if "faults" in settings:
            self.faults = Faults.from_dict(settings["faults"] or {})
            self.rng = random.Random(self.faults.seed)
            self.writes_seen = 0
        if "limits" in settings:
            self.limiter = self.limiter_for(settings["limits"])
        return self.settings()

    def settings(self) -> dict[str, Any]:
        return {
            "faults": asdict(self.faults),
            "limits": self.limiter.describe(),
            **self.configure_app({}),
        }

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            if path == "/_sandbox/config" and method == "POST":
                result: Any = self.configure(json.loads(body or b"{}"))
            elif path == "/_sandbox/config":
                result = self.settings()
            elif path == "/_sandbox/stats" and method == "GET":
                result = {**self.log.as_dict(), "held": self.held}
            elif path == "/_sandbox/release" and method == "POST":
                if self.release is not None:
                    self.release.set()
                result = {"released": self.held}
            elif path == "/_sandbox/stats/reset" and method == "POST":
                self.log = RequestLog()
                result = {"reset": True}
            elif self.extra_admin is not None:
                result = self.extra_admin(method, path, json.loads(body or b"{}"))
            else:
                raise LookupError(path)
        except LookupError:
            await _send_json(send, 404, {"error": "no such admin endpoint"})
            return
        except (ValueError, TypeError) as exc:
            await _send_json(send, 400, {"error": str(exc)})
            return
        await _send_json(send, 200, result)

    # --- the request path ---------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/_sandbox/"):
            await self._admin(scope, receive, send)
            return
        if not (path.startswith(self.api_prefix) or path in self.open_paths):
            await self.app(scope, receive, send)
            return

        method: str = scope["method"]
        key = f"{method} {_endpoint(path, self.api_prefix)}"
        self.log.counts[key] += 1
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)

        if path in self.open_paths:  # the OAuth token endpoint: no API auth, no limits
            await self._forward(scope, receive, send, {}, key)
            return

        identity = self.authenticate(scope)
        if identity is None:
            body, ctype = self.unauthorized()
            await self._reply(send, 401, body, ctype, {})
            return

        limit = self.limiter.check(identity)
        if not limit.allowed:
            self.log.injected["rate_limited"] += 1
            body, ctype = self.throttled()
            if limit.error_body is not None:
                body = limit.error_body
            extra = dict(limit.headers)
            if limit.retry_after is not None:
                extra["retry-after"] = str(max(1, round(limit.retry_after)))
            await self._reply(send, 429, body, ctype, extra)
            return

        roll = self.rng.random()
        if roll < faults.error_429:
            self.log.injected["error_429"] += 1
            body, ctype = self.throttled()
            await self._reply(send, 429, body, ctype, {**limit.headers, "retry-after": "1"})
            return
        if roll < faults.error_429 + faults.error_500:
            self.log.injected["error_500"] += 1
            body, ctype = self.server_error()
            await self._reply(send, 500, body, ctype, limit.headers)
            return
        if method in WRITE_METHODS and faults.hold_write:
            self.writes_seen += 1
            if self.writes_seen == faults.hold_write:
                await self._hold(scope, receive, send, faults.hold_when)
                return
        if method in WRITE_METHODS and self.rng.random() < faults.commit_then_fail:
            await self._commit_then_fail(scope, receive, send, limit.headers)
            return
        await self._forward(scope, receive, send, limit.headers, key)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], key: str
    ) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.log.statuses[message["status"]] += 1
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (k.encode(), v.encode()) for k, v in {**headers, "date": self._date()}.items()
                ]
            await send(message)

        await self.app(scope, receive, stamped)

    async def _hold(self, scope: Scope, receive: Receive, send: Send, when: str) -> None:
        """Hold a write until released: not applied ("before"), or applied with its answer
        never sent ("after"); then the connection drops."""
        self.release = asyncio.Event()
        if when == "after":

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
        self.held = when
        self.log.injected[f"held_{when}"] += 1
        try:
            await self.release.wait()
        finally:
            self.held, self.release = "", None
        await self._drop(send, f"a write held {when} it was applied")

    async def _commit_then_fail(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        """Run the write to the end, then lose its answer."""

        async def swallow(message: Message) -> None:
            return None

        await self.app(scope, receive, swallow)
        if self.rng.random() < 0.5:
            self.log.injected["commit_then_500"] += 1
            body, ctype = self.server_error()
            await self._reply(send, 500, body, ctype, headers)
            return
        self.log.injected["commit_then_drop"] += 1
        await self._drop(send, "connection dropped after commit")

    async def _drop(self, send: Send, why: str) -> None:
        """Announce a body, send part of it, and abort: the client sees the connection drop
        mid-answer (httpx: RemoteProtocolError)."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"4096"),
                    (b"date", self._date().encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        raise DroppedConnection(f"sandbox fault: {why}")

    async def _reply(
        self, send: Send, status: int, body: dict[str, Any], ctype: str, headers: dict[str, str]
    ) -> None:
        self.log.statuses[status] += 1
        await _send_json(send, status, body, ctype, {**headers, "date": self._date()})

    def _date(self) -> str:
        """An HTTP Date (whole seconds) by the sandbox's clock."""
        return formatdate(self.clock(), usegmt=True)


async def _send_json(
    send: Send,
    status: int,
    body: Any,
    ctype: str = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", ctype.encode()), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _endpoint(path: str, prefix: str) -> str:
    """`/crm/rest/v2/contacts/123` -> `/contacts/{id}`: one key per endpoint."""
    rest = path[len(prefix) :] if path.startswith(prefix) else path
    parts = [p for p in rest.split("/") if p]
    out = []
    for part in parts:
        out.append("{id}" if any(ch.isdigit() for ch in part) and part != "v2" else part)
    return "/" + "/".join(out)


# --- running a sandbox ---------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """Serve an ASGI app with uvicorn in a background thread (tests, `crmsync sync`)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandboxes bind to the loopback interface only")
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(  # the apps write Date themselves, by their own clocks
            app, host=host, port=self.port, log_level="warning", access_log=False, lifespan="off",
            date_header=False,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox did not start on {self.url}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(app: ASGIApp, port: int = 0) -> Iterator[ServerThread]:
    server = ServerThread(app, port=port).start()
    try:
        yield server
    finally:
        server.stop()
