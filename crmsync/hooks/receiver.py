"""The receiver Keap POSTs its hooks to: a small ASGI app, served by uvicorn.

- Only `POST /hooks/<secret>` is answered; anything else, a wrong secret included, is
  404 (compared in constant time). No access log: the path holds the secret.
- The verification handshake: a POST carrying `X-Hook-Secret` is answered 200 with the
  same header and value.
- A delivery `{event_key, object_type, object_keys: [{id, ...}]}` is appended to the spool
  (event key and ids only; `apiUrl` and the rest are never followed nor kept) and answered
  200 once on disk. No API call happens here: the answer takes milliseconds.
- A body over `MAX_BODY` bytes is refused with 413 (Keap's largest, 1,000 object keys, is
  about 100 KB); a body that is not a delivery gets 400; an event key the sync does not
  subscribe to is answered 200 and dropped.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from crmsync.hooks import EVENT_KEYS
from crmsync.hooks.files import hook_path
from crmsync.hooks.spool import Spool

MAX_BODY = 1024 * 1024
MAX_SECRET_HEADER = 512


class ReceiverApp:
    def __init__(
        self,
        secret: str,
        spool: Spool,
        on_events: Callable[[], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.path = hook_path(secret).encode()
        self.spool = spool
        self.on_events = on_events
        self.log = log
        self.counts: Counter[str] = Counter()  # deliveries, events, verifications, refused, ignored

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("raw_path") or scope["path"].encode()
        if not hmac.compare_digest(path.split(b"?", 1)[0], self.path):
            self.counts["refused"] += 1
            await _answer(send, 404, b"not found")
            return
        if scope["method"] != "POST":
            await _answer(send, 405, b"method not allowed", [(b"allow", b"POST")])
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            await _answer(send, 413, b"body over 1 MiB")
            return
        body = await _read(receive)
        if body is None:
            await _answer(send, 413, b"body over 1 MiB")
            return
        handshake = headers.get(b"x-hook-secret")
        if handshake is not None:
            if not handshake or len(handshake) > MAX_SECRET_HEADER:
                await _answer(send, 400, b"bad X-Hook-Secret")
                return
            self.counts["verifications"] += 1
            await _answer(send, 200, b"", [(b"x-hook-secret", handshake)])
            return
        parsed = _delivery(body)
        if parsed is None:
            await _answer(send, 400, b"not a hook delivery")
            return
        event_key, ids = parsed
        self.counts["deliveries"] += 1
        if event_key not in EVENT_KEYS:
            self.counts["ignored"] += len(ids)
            await _answer(send, 200, b"ignored")
            return
        received_at = time.time()
        stored = await asyncio.to_thread(self.spool.append, event_key, ids, received_at)
        self.counts["events"] += stored
        await _answer(send, 200, b"ok")
        if self.log:
            self.log(f"received {event_key} for {stored} record{'s' if stored != 1 else ''}")
        if self.on_events:
            self.on_events()


def _delivery(body: bytes) -> tuple[str, list[str]] | None:
    """(event key, ids) of a delivery, or None when it is not one. Ids are Keap's
    integer ids; an entry without one is left out."""
    try:
        found: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    event_key, keys = found.get("event_key"), found.get("object_keys")
    if not isinstance(event_key, str) or not isinstance(keys, list) or len(event_key) > 100:
        return None
    ids = []
    for item in keys:
        value = item.get("id") if isinstance(item, dict) else None
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value > 0:
            ids.append(str(value))
        elif isinstance(value, str) and value.isdigit() and len(value) <= 20:
            ids.append(str(int(value)))
    return event_key, ids


async def _read(receive: Receive) -> bytes | None:
    """The body, or None once it passes MAX_BODY (chunked bodies have no length to check)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body"):
            return body


async def _answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    raw = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Receiver:
    """uvicorn serving the app in a thread of this process."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,  # the path holds the secret
            lifespan="off",
            server_header=False,
            timeout_keep_alive=30,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="hooks-receiver", daemon=True)

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", None) or []
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.config.port)

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{self.port}"

    def start(self, timeout: float = 10.0) -> Receiver:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the hooks receiver could not listen on {self.config.host}:{self.config.port}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
