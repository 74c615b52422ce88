"""Keap's rate limits: per-second and per-minute throttles, a daily quota, and its headers.

Published figures (docs/keap-api.md): a personal access token or service
account key gets 10/s, 240/min and 30,000/day; an OAuth client 1,500/min and
150,000/day. `limits` settings: "published" (those figures), "off" (no limit,
headers still sent), or a dict {"per_second", "per_minute", "per_day"} applied
to every credential.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.runtime import Limit, RateLimiter, TokenBucket

PUBLISHED = {
    "key": {"per_second": 10, "per_minute": 240, "per_day": 30_000},
    "oauth": {"per_second": 25, "per_minute": 1_500, "per_day": 150_000},
}
UNLIMITED = {"per_second": 1_000_000, "per_minute": 1_000_000, "per_day": 1_000_000_000}

SPIKE_BODY = {
    "fault": {
        "faultstring": "Rate limit quota violation. Quota limit exceeded.",
        "detail": {"errorcode": "policies.ratelimit.QuotaViolation"},
    }
}
QUOTA_BODY = {"code": "429", "message": "Quota Exceeded", "status": "Request Throttled", "details": None}


@dataclass
class _Window:
    second: TokenBucket
    minute: TokenBucket
    day_limit: int
    day_used: int = 0
    day: str = ""


class KeapLimiter(RateLimiter):
    def __init__(self, settings: Any = None) -> None:
        self.mode = settings if settings is not None else "off"
        if isinstance(self.mode, str) and self.mode not in ("off", "published"):
            raise ValueError("keap limits: 'off', 'published' or a dict of per_second/per_minute/per_day")
        if isinstance(self.mode, dict):
            unknown = set(self.mode) - {"per_second", "per_minute", "per_day"}
            if unknown:
                raise ValueError(f"unknown keap limit settings: {sorted(unknown)}")
        self.windows: dict[str, _Window] = {}

    def describe(self) -> Any:
        return self.mode

    def _figures(self, identity: str) -> dict[str, int]:
        if self.mode == "off":
            return UNLIMITED
        if self.mode == "published":
            return PUBLISHED["oauth" if identity.startswith("oauth:") else "key"]
        assert isinstance(self.mode, dict)
        return {**UNLIMITED, **self.mode}

    def check(self, identity: str) -> Limit:
        figures = self._figures(identity)
        window = self.windows.get(identity)
        if window is None:
            window = _Window(
                second=TokenBucket(figures["per_second"], figures["per_second"]),
                minute=TokenBucket(figures["per_minute"], figures["per_minute"] / 60),
                day_limit=figures["per_day"],
            )
            self.windows[identity] = window
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        if window.day != today:
            window.day, window.day_used = today, 0

        body: dict[str, Any] | None = None
        if window.day_used >= window.day_limit or window.minute.available() < 1:
            body = QUOTA_BODY
        elif window.second.available() < 1:
            body = SPIKE_BODY
        else:
            window.second.try_take()
            window.minute.try_take()
            window.day_used += 1
        return Limit(allowed=body is None, headers=self._headers(window, figures), error_body=body)

    @staticmethod
    def _headers(window: _Window, figures: dict[str, int]) -> dict[str, str]:
        minute_available = window.minute.available()
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        expiry_ms = int(midnight.timestamp() * 1000)
        return {
            "x-keap-product-quota-limit": str(window.day_limit),
            "x-keap-product-quota-time-unit": "day",
            "x-keap-product-quota-interval": "1",
            "x-keap-product-quota-available": str(max(0, window.day_limit - window.day_used)),
            "x-keap-product-quota-used": str(window.day_used),
            "x-keap-product-quota-expiry-time": str(expiry_ms),
            "x-keap-product-throttle-limit": str(figures["per_minute"]),
            "x-keap-product-throttle-time-unit": "minute",
            "x-keap-product-throttle-interval": "1",
            "x-keap-product-throttle-available": str(minute_available),
            "x-keap-product-throttle-used": str(figures["per_minute"] - minute_available),
            "x-keap-tenant-throttle-limit": "10000|250000",
            "x-keap-tenant-throttle-time-unit": "minute|day",
            "x-keap-tenant-throttle-interval": "1|1",
            "x-keap-tenant-throttle-available": f"{10000 - min(10000, window.day_used)}|"
            f"{250000 - min(250000, window.day_used)}",
            "x-keap-tenant-throttle-used": f"{min(10000, window.day_used)}|{window.day_used}",
        }
