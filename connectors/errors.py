"""One rooted error hierarchy for both APIs; the class says what to do.

    ApiError
    ├── RetryableError      retry later: 429, 5xx, transport failures
    │   ├── RateLimited     (carries retry_after when the API gave one)
    │   ├── ServerError
    │   └── TransportFailure
    ├── RecordRejected      skip this row, record why, retry on the next run
    │   ├── NotFound        404
    │   ├── Conflict        409 (a uniqueness rule)
    │   ├── PreconditionFailed  412 (the record changed since it was read)
    │   └── TooLarge        413 (the request body is over the server's limit)
    ├── ProtocolError       an answer that does not parse as the API promised:
    │                       stop reading that resource, keep what was read
    └── FatalError          stop the run with one clear line
        ├── AuthError       401, 403, a refused OAuth refresh
        ├── RunDeadline     the run's deadline passed
        ├── WriterLockLost  the PostgreSQL warehouse's writer lock was lost mid-run
        └── TokenEndpointUnavailable  Keap's OAuth token endpoint kept failing (5xx,
                            429, no answer): try again later, the grant is fine

Status codes map to classes in one place: `error_for_response`. Errors carry
their context (system, method, URL without query secrets, status, the API's
reason, record id), never a credential: URLs lose their query and any
`user:password@` (`redact`), in every message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class FieldError:
    field: str
    message: str


class ApiError(Exception):
    def __init__(
        self,
        message: str,
        *,
        system: str = "",
        method: str = "",
        url: str = "",
        status: int | None = None,
        reason: str = "",
        field_errors: list[FieldError] | None = None,
        record_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system = system
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.field_errors = field_errors or []
        self.record_id = record_id

    def __str__(self) -> str:
        where = f"{self.system} {self.method} {self.url}".strip()
        status = f" -> {self.status}" if self.status else ""
        record = f" (record {self.record_id})" if self.record_id else ""
        fields = "; ".join(f"{f.field}: {f.message}" for f in self.field_errors)
        detail = f": {fields}" if fields else (f": {self.reason}" if self.reason else "")
        return redact(f"{self.message}{record} [{where}{status}]{detail}")


class RetryableError(ApiError):
    """Worth another try after a pause."""


class RateLimited(RetryableError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(RetryableError):
    pass


class TransportFailure(RetryableError):
    """No (complete) answer: the request may or may not have been applied."""


class QuotaExhausted(ApiError):
    """The API's quota for the day is spent: ask it for nothing more until `resets_at`.
    Not retried; the run stops asking that API and says when to try again."""

    def __init__(self, message: str, *, resets_at: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.resets_at = resets_at


class RecordRejected(ApiError):
    """The API refused this one record; the others go on."""


class NotFound(RecordRejected):
    pass


class Conflict(RecordRejected):
    pass


class PreconditionFailed(RecordRejected):
    pass


class TooLarge(RecordRejected):
    pass


class FatalError(ApiError):
    """The run cannot go on (credentials, configuration, a broken API)."""


class AuthError(FatalError):
    pass


class RunDeadline(FatalError):
    """The run's deadline passed (CRMSYNC_RUN_DEADLINE_MINUTES): it stops where it is."""


class WriterLockLost(FatalError):
    """The writers' lock on the PostgreSQL warehouse is no longer held (its connection
    ended): another crmsync may be writing, so nothing more is sent."""


class TokenEndpointUnavailable(FatalError):
    """The token endpoint failed past the retries; re-authorizing would not help."""


class ProtocolError(ApiError):
    """The answer does not parse; the message names the resource and the page."""


@dataclass
class Reason:
    text: str
    fields: list[FieldError] = field(default_factory=list)


def parse_reason(response: httpx.Response) -> Reason:
    """The API's own words: Keap v2 bodies, gateway faults, RFC 9457 problems, OAuth errors."""
    try:
        body = response.json()
    except ValueError:
        return Reason(response.text[:300])
    if not isinstance(body, dict):
        return Reason(str(body)[:300])
    if "fault" in body:  # Keap's gateway
        fault = body["fault"] or {}
        code = (fault.get("detail") or {}).get("errorcode", "")
        return Reason(f"{fault.get('faultstring', '')} ({code})".strip())
    if "errors" in body and isinstance(body["errors"], list):  # RFC 9457 with field errors
        fields = [FieldError(str(e.get("field", "")), str(e.get("message", ""))) for e in body["errors"]]
        return Reason(str(body.get("detail") or body.get("title") or ""), fields)
    if "detail" in body or "title" in body:
        return Reason(str(body.get("detail") or body.get("title")))
    if "message" in body:  # Keap v2: {"code", "message", "status", "details"}
        fields = [
            FieldError(str(d.get("domain", "")), str(body["message"]))
            for d in body.get("details") or []
            if isinstance(d, dict) and d.get("domain")
        ]
        return Reason(str(body["message"]), fields)
    if "error" in body:  # OAuth
        return Reason(f"{body['error']}: {body.get('error_description', '')}")
    return Reason(str(body)[:300])


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for_response(system: str, response: httpx.Response, record_id: str | None = None) -> ApiError:
    """The one place where a status code becomes an error class."""
    status = response.status_code
    reason = parse_reason(response)
    context: dict[str, Any] = {
        "system": system,
        "method": response.request.method,
        "url": safe_url(response.request.url),
        "status": status,
        "reason": reason.text,
        "field_errors": reason.fields,
        "record_id": record_id,
    }
    if status == 429:
        return RateLimited("rate limited", retry_after=retry_after_seconds(response), **context)
    if status >= 500:
        return ServerError("server error", **context)
    if status in (401, 403):
        return AuthError(
            f"{system} refused the credentials ({status}); check the {system.upper()}_* settings",
            **context,
        )
    if status == 404:
        return NotFound("not found", **context)
    if status == 409:
        return Conflict("conflict", **context)
    if status == 412:
        return PreconditionFailed("changed since it was read", **context)
    if status == 413:
        return TooLarge("the request body is too large", **context)
    if 400 <= status < 500:
        return RecordRejected("refused", **context)
    return ProtocolError(f"unexpected status {status}", **context)


def safe_url(url: httpx.URL) -> str:
    """The URL without its query (filters may hold emails) and without credentials in it
    (`https://user:password@host/`): never a secret in logs."""
    return redact(str(url.copy_with(query=None)))


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")


def redact(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://***@host`, wherever it stands in `text`."""
    return _USERINFO.sub(r"\1***@", text)
