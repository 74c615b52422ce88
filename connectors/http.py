"""The HTTP floor both clients stand on: pacing, bounded retries, request counts.

A `Pacer` decides when the next request may go (before) and learns from each
answer's limit headers (after). `ApiClient.request` retries what is worth
retrying (429 always, since an API answers it before doing anything; 5xx and
transport failures only when the request is idempotent), honours `Retry-After`,
and otherwise backs off exponentially with full jitter.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from connectors.errors import (
    ApiError,
    ProtocolError,
    QuotaExhausted,
    RateLimited,
    RetryableError,
    RunDeadline,
    TransportFailure,
    WriterLockLost,
    error_for_response,
    safe_url,
)

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int, error: ApiError, rng: random.Random) -> float:
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))  # full jitter


@dataclass
class RequestStats:
    """What a client sent: the figures benchmarks and `sync` summaries print."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    slept_s: float = 0.0
    by_endpoint: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "slept_s": round(self.slept_s, 3),
            "by_endpoint": dict(self.by_endpoint),
        }


@dataclass(frozen=True)
class ClockReading:
    """A server's clock against ours, from a run's answers: the server's time is ours plus
    `offset_s`, give or take `uncertainty_s`."""

    offset_s: float
    uncertainty_s: float
    samples: int
    lowest_s: float  # the smallest and largest single estimates (Date less the request's midpoint)
    highest_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "offset_s": round(self.offset_s, 3),
            "uncertainty_s": round(self.uncertainty_s, 3),
            "samples": self.samples,
            "lowest_s": round(self.lowest_s, 3),
            "highest_s": round(self.highest_s, 3),
        }


class ServerClock:
    """Where a server's clock stands against ours, from the `Date` header of every answer.

    `Date` has whole seconds: the server's time when it answered lies in [Date, Date + 1),
    and it answered between our sending (`sent`) and our receiving (`received`), so its
    offset from our clock lies in [Date - received, Date + 1 - sent]. Every answer narrows
    that interval; its middle is the estimate and its half-width the uncertainty. (Should
    the intervals not meet, a clock jumped: the spread of the single estimates is used.)"""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.low, self.high = float("-inf"), float("inf")
            self.lowest, self.highest = float("inf"), float("-inf")
            self.samples = 0

    def observe(self, date: str | None, sent: float, received: float) -> None:
        """One answer: its Date header, and our wall-clock times of sending and receiving."""
        if not date:
            return
        try:
            stamp = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            return
        single = stamp + 0.5 - (sent + received) / 2
        with self.lock:
            self.low, self.high = max(self.low, stamp - received), min(self.high, stamp + 1 - sent)
            self.lowest, self.highest = min(self.lowest, single), max(self.highest, single)
            self.samples += 1

    def reading(self) -> ClockReading | None:
        with self.lock:
            if not self.samples:
                return None
            if self.low <= self.high:
                middle, half = (self.low + self.high) / 2, (self.high - self.low) / 2
            else:
                middle, half = (self.lowest + self.highest) / 2, (self.highest - self.lowest) / 2 + 0.5
            return ClockReading(middle, half, self.samples, self.lowest, self.highest)


class Pacer:
    """No pacing; subclasses read an API's limit headers."""

    def before(self) -> float:
        """Block until a request may go; return the seconds waited."""
        return 0.0

    def after(self, response: httpx.Response) -> None:
        return None

    def exhausted(self) -> QuotaExhausted | None:
        """The error to raise instead of sending, when the API's quota is known to be spent."""
        return None


class LocalBucket:
    """A token bucket on this side of the wire, thread-safe."""

    def __init__(self, capacity: float, rate: float, clock: Clock = time.monotonic) -> None:
        self.capacity, self.rate, self.clock = capacity, rate, clock
        self.tokens, self.stamp = capacity, clock()
        self.lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self) -> float:
        """Take a token (possibly going negative) and return how long to wait for it."""
        with self.lock:
            self._refill()
            self.tokens -= 1
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def cap(self, available: float) -> None:
        """The server says fewer tokens are left than we think: believe it."""
        with self.lock:
            self._refill()
            self.tokens = min(self.tokens, available)

    def reconfigure(self, capacity: float, rate: float) -> None:
        with self.lock:
            self._refill()
            if (capacity, rate) != (self.capacity, self.rate):
                self.tokens = min(self.tokens, capacity)
                self.capacity, self.rate = capacity, rate


class ApiClient:
    system = "api"

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        headers: dict[str, str] | None = None,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        sleep: Sleep = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=auth,
            headers={"Accept": "application/json", "User-Agent": "crmsync/0.1", **(headers or {})},
            timeout=timeout,
            transport=transport,
        )
        self.pacer = pacer or Pacer()
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.rng = random.Random(seed)
        self.stats = RequestStats()
        self._stats_lock = threading.Lock()
        self._local = threading.local()  # per thread: when its last request went out
        self.clock = ServerClock()  # the server's clock against ours, from every answer's Date
        self.deadline: float | None = None  # time.monotonic() past which no request is sent
        # asked before each request: why this run may no longer write (a lost writer lock), or None
        self.guard: Callable[[], str | None] | None = None

    def _request_context(self, method: str, path: str, record_id: str | None) -> dict[str, Any]:
        """What an error raised before sending says about the request it stopped."""
        url = safe_url(self.http.build_request(method, path).url)
        return {"system": self.system, "method": method.upper(), "url": url, "record_id": record_id}

    def _check_deadline(self, method: str, path: str, record_id: str | None) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise RunDeadline(
                "the run's deadline passed (CRMSYNC_RUN_DEADLINE_MINUTES): it stopped before "
                "this request; the next run goes on from here",
                **self._request_context(method, path, record_id),
            )

    def _check_guard(self, method: str, path: str, record_id: str | None) -> None:
        lost = self.guard() if self.guard is not None else None
        if lost is not None:
            raise WriterLockLost(lost, **self._request_context(method, path, record_id))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        record_id: str | None = None,
    ) -> httpx.Response:
        """Send, pacing and retrying; return a 2xx answer or raise an `ApiError`."""
        if idempotent is None:
            idempotent = method.upper() != "POST"
        endpoint = f"{method.upper()} {_template(path)}"
        attempt = 0
        while True:
            self._check_deadline(method, path, record_id)
            spent = self.pacer.exhausted()
            if spent is not None:
                raise spent
            waited = self.pacer.before()
            self._check_guard(method, path, record_id)  # after the pacer's wait, right before sending
            self._count(endpoint, waited)
            self._local.sent_at = time.monotonic()
            sent = time.time()
            try:
                response = self.http.request(
                    method, path, params=params, json=json, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                error: ApiError = TransportFailure(
                    f"no complete answer ({type(exc).__name__})",
                    system=self.system,
                    method=method.upper(),
                    url=safe_url(self.http.build_request(method, path).url),
                    reason=str(exc)[:200],
                    record_id=record_id,
                )
            else:
                self.clock.observe(response.headers.get("date"), sent, time.time())
                self.pacer.after(response)
                if response.is_success:
                    return response
                error = error_for_response(self.system, response, record_id)
            if isinstance(error, RateLimited):
                with self._stats_lock:
                    self.stats.rate_limited += 1
                spent = self.pacer.exhausted()
                if spent is not None:  # the day's quota, not a throttle: retrying cannot help
                    raise spent
            retry_ok = isinstance(error, RateLimited) or (isinstance(error, RetryableError) and idempotent)
            attempt += 1
            if not retry_ok or attempt >= self.retry.max_attempts:
                raise error
            pause = self.retry.delay(attempt, error, self.rng)
            if self.deadline is not None:
                pause = min(pause, max(0.0, self.deadline - time.monotonic()))
            with self._stats_lock:
                self.stats.retries += 1
                self.stats.slept_s += pause
            self.sleep(pause)

    def sent_at(self) -> float | None:
        """time.monotonic() when this thread's last request went out (after pacing)."""
        return getattr(self._local, "sent_at", None)

    def parse(self, response: httpx.Response) -> Any:
        """The answer's JSON, or a ProtocolError that says what came instead (a proxy's HTML
        page, a truncated body)."""
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise ProtocolError(
                f"answered {response.status_code} with something that is not JSON ({kind}): "
                f"{response.text[:80]!r}",
                system=self.system,
                method=response.request.method,
                url=safe_url(response.request.url),
            ) from None

    def _count(self, endpoint: str, waited: float) -> None:
        with self._stats_lock:
            self.stats.requests += 1
            self.stats.by_endpoint[endpoint] += 1
            self.stats.slept_s += waited


@dataclass
class ListPage:
    """One page of a list as an API answered it."""

    items: list[Any]
    next_token: str | None
    server_time: datetime | None  # the answer's `Date`


def server_time(response: httpx.Response) -> datetime | None:
    """The server's clock when it answered (HTTP `Date`, one-second resolution)."""
    try:
        return parsedate_to_datetime(response.headers["date"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _template(path: str) -> str:
    parts = [("{id}" if any(ch.isdigit() for ch in part) else part) for part in path.split("/")]
    return "/".join(parts)
