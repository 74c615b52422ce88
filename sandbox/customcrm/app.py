"""The Customcrm sandbox: serves the Customcrm contract (docs/customcrm-api.md) exactly.

Request bodies are validated against the project's OpenAPI 3.1 document of the
contract (`openapi.yaml` beside this file, served at `/api/v1/openapi.yaml`),
so the document and the server cannot drift apart; what a schema cannot say
(uniqueness among live records, references to live records, If-Match,
idempotency) is checked here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from sandbox.customcrm.store import RESOURCES, CustomcrmStore, Row
from sandbox.runtime import Limit, RateLimiter, SandboxMiddleware, TokenBucket
from sandbox.timefmt import parse_ts, rfc3339_us, to_us

API_PREFIX = "/api/v1"
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
MAX_BODY = 1024 * 1024
SCHEMA_NAMES = {"customers": "Customer", "contacts": "Contact", "orders": "Order", "products": "Product"}
REFERENCES = {  # field -> the resource it must name a live record of
    "contacts": {"CustomerId": "customers"},
    "orders": {"ContactId": "contacts", "CustomerId": "customers"},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "orders": {"Status": "open", "Currency": "USD"},
    "products": {"Currency": "USD", "Active": True},
}


class Problem(Exception):
    """An RFC 9457 answer."""

    TITLES: ClassVar[dict[int, str]] = {
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        409: "Conflict",
        412: "Precondition Failed",
        413: "Content Too Large",
        422: "Unprocessable Content",
        429: "Too Many Requests",
        500: "Internal Server Error",
    }

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://customcrm.example/problems/{self.status}",
            "title": self.TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        return body

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body(), self.status, headers=self.headers, media_type="application/problem+json"
        )


def problem_body(status: int, detail: str) -> dict[str, Any]:
    return Problem(status, detail).body()


class CustomcrmLimiter(RateLimiter):
    """Per token: `rate` requests a second with bursts of `burst` (default 20/s, 40)."""

    def __init__(self, settings: Any = None) -> None:
        settings = "default" if settings is None else settings
        if settings == "off":
            self.rate, self.burst = 1e9, 1e9
        elif settings == "default":
            self.rate, self.burst = 20.0, 40.0
        elif isinstance(settings, dict) and set(settings) <= {"rate", "burst"}:
            self.rate = float(settings.get("rate", 20))
            self.burst = float(settings.get("burst", self.rate * 2))
        else:
            raise ValueError("customcrm limits: 'default', 'off' or {'rate': n, 'burst': n}")
        self.settings = settings
        self.buckets: dict[str, TokenBucket] = {}

    def describe(self) -> Any:
        return self.settings

    def check(self, identity: str) -> Limit:
        bucket = self.buckets.setdefault(identity, TokenBucket(self.burst, self.rate))
        allowed = bucket.try_take()
        wait = bucket.seconds_until_token()
        headers = {
            "RateLimit-Limit": str(int(min(self.burst, 10**9))),
            "RateLimit-Remaining": str(bucket.available()),
            "RateLimit-Reset": str(math.ceil(wait)),
        }
        return Limit(allowed=allowed, headers=headers, retry_after=None if allowed else max(wait, 1))


@dataclass
class CustomcrmCredentials:
    token: str = "sandbox-customcrm-token"


class CustomcrmSandbox:
    def __init__(self, data_dir: str | Path, credentials: CustomcrmCredentials | None = None) -> None:
        self.store = CustomcrmStore(Path(data_dir) / "customcrm.sqlite3")
        self.credentials = credentials or CustomcrmCredentials()
        self.max_body = MAX_BODY  # a deployment may take less: `max_body_bytes`
        routes = [Route(f"{API_PREFIX}/openapi.yaml", self.openapi, methods=["GET"])]
        for resource in RESOURCES:
            routes += [
                Route(f"{API_PREFIX}/{resource}", self.list_or_create, methods=["GET", "POST"]),
                Route(f"{API_PREFIX}/{resource}/batch", self.batch, methods=["POST"]),
                Route(f"{API_PREFIX}/{resource}/{{record_id}}", self.one, methods=["GET", "PATCH", "DELETE"]),
            ]
        self.app = Starlette(routes=routes, exception_handlers={Problem: self._on_problem})
        self.gateway = SandboxMiddleware(
            self.app,
            api_prefix=API_PREFIX,
            authenticate=self.authenticate,
            limiter_for=CustomcrmLimiter,
            unauthorized=lambda: (
                problem_body(401, "Missing or wrong bearer token"),
                "application/problem+json",
            ),
            server_error=lambda: (problem_body(500, "Internal error"), "application/problem+json"),
            throttled=lambda: (problem_body(429, "Rate limit exceeded"), "application/problem+json"),
            configure_app=self.configure,
            extra_admin=self.admin,
            clock=self.store.clock.wall,
        )
        self.asgi = self.gateway

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The sandbox's own settings: `stamp_lag_ms`, writes stamped that long before they are
        visible (a server that stamps UpdatedAt when a transaction begins, not when it
        commits); `max_body_bytes` (1 MiB by the contract); `clock_offset_s` (its clock
        against the machine's: records' stamps and Date)."""
        for key, value in settings.items():
            if key == "stamp_lag_ms":
                if not isinstance(value, int | float) or value < 0:
                    raise ValueError("stamp_lag_ms: a number of milliseconds, 0 or more")
                self.store.stamp_lag_us = int(value * 1000)
            elif key == "max_body_bytes":
                if not isinstance(value, int) or value < 1:
                    raise ValueError("max_body_bytes: a positive number of bytes")
                self.max_body = value
            elif key == "clock_offset_s":
                self.store.clock.offset_us = round(float(value) * 1_000_000)
            else:
                raise ValueError(f"unknown customcrm sandbox setting: {key}")
        return {
            "stamp_lag_ms": self.store.stamp_lag_us / 1000,
            "max_body_bytes": self.max_body,
            "clock_offset_s": self.store.clock.offset_us / 1_000_000,
        }

    # --- the contract document ----------------------------------------------------
    @cached_property
    def contract(self) -> dict[str, Any]:
        return yaml.safe_load(OPENAPI_PATH.read_text())

    @cached_property
    def external_ref(self) -> re.Pattern[str]:
        """The `external_ref` query's pattern, as the contract writes it (matched whole)."""
        return re.compile(self.contract["components"]["parameters"]["external_ref"]["schema"]["pattern"])

    @cached_property
    def _registry(self) -> Registry:
        return Registry().with_resource(
            "urn:contract", Resource.from_contents(self.contract, default_specification=DRAFT202012)
        )

    def validator(self, schema_name: str) -> Draft202012Validator:
        cache = self.__dict__.setdefault("_validators", {})
        if schema_name not in cache:
            cache[schema_name] = Draft202012Validator(
                {"$ref": f"urn:contract#/components/schemas/{schema_name}"},
                registry=self._registry,
                format_checker=FormatChecker(["date", "email"]),
            )
        return cache[schema_name]  # type: ignore[no-any-return]

    def admin(self, method: str, path: str, body: dict[str, Any]) -> Any:
        if path == "/_sandbox/counts" and method == "GET":
            return self.store.counts()
        raise LookupError(path)

    async def openapi(self, request: Request) -> Response:
        return Response(OPENAPI_PATH.read_text(), media_type="application/yaml")

    async def _on_problem(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return exc.response()

    def authenticate(self, scope: Scope) -> str | None:
        if scope["path"] == f"{API_PREFIX}/openapi.yaml":
            return "anonymous"
        for key, value in scope["headers"]:
            if key.lower() == b"authorization":
                text = value.decode()
                if text.lower().startswith("bearer ") and text[7:].strip() == self.credentials.token:
                    return "token:" + hashlib.sha256(text.encode()).hexdigest()[:12]
        return None

    # --- rendering ---------------------------------------------------------------------
    @staticmethod
    def render(row: Row) -> dict[str, Any]:
        if row.deleted_us is not None:
            return {
                "Id": row.id,
                "DeletedAt": rfc3339_us(row.deleted_us),
                "UpdatedAt": rfc3339_us(row.updated_us),
                "ExternalRefs": row.doc.get("ExternalRefs") or {},
            }
        return {
            "Id": row.id,
            "ExternalRefs": row.doc.get("ExternalRefs") or {},
            "CreatedAt": rfc3339_us(row.created_us),
            "UpdatedAt": rfc3339_us(row.updated_us),
            "Version": row.version,
            "DeletedAt": None,
            **{k: v for k, v in row.doc.items() if k != "ExternalRefs"},
        }

    def _fields_of(self, resource: str) -> list[str]:
        props = self.contract["components"]["schemas"][f"{SCHEMA_NAMES[resource]}Create"]["properties"]
        return [k for k in props if k != "ExternalRefs"]

    # --- validation ---------------------------------------------------------------------
    def _validate(self, resource: str, kind: str, data: Any) -> None:
        errors = sorted(
            self.validator(f"{SCHEMA_NAMES[resource]}{kind}").iter_errors(data),
            key=lambda e: list(e.absolute_path),
        )
        if errors:
            raise Problem(
                422, "The request does not satisfy the contract", [_field_error(e) for e in errors[:20]]
            )

    def _check_rules(self, resource: str, doc: dict[str, Any], own_id: str | None) -> None:
        if resource == "contacts" and not any(doc.get(k) for k in ("FirstName", "LastName", "Email")):
            raise Problem(
                422,
                "A contact needs at least one of FirstName, LastName, Email",
                [{"field": "FirstName", "message": "FirstName, LastName or Email is required"}],
            )
        for field_name, target in REFERENCES.get(resource, {}).items():
            ref = doc.get(field_name)
            if ref is not None:
                found = self.store.get(target, ref)
                if found is None or found.deleted_us is not None:
                    raise Problem(
                        422,
                        f"{field_name} {ref!r} does not name a live {target[:-1]}",
                        [{"field": field_name, "message": "must reference a live record"}],
                    )
        key = self.store.unique_key(resource, doc)
        if key is not None:
            holder = self.store.live_id_with_key(resource, key)
            if holder is not None and holder != own_id:
                field_name = "Email" if resource == "contacts" else "Sku"
                raise Problem(
                    409,
                    f"{field_name} {doc[field_name]!r} is already used by {holder}",
                    [{"field": field_name, "message": f"already used by {holder}"}],
                )

    # --- operations (shared by the single endpoints and the batch) ---------------------------
    def do_create(
        self, resource: str, data: Any, idempotency_key: str | None, scope: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        body_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        if idempotency_key is not None:
            if not 0 < len(idempotency_key) <= 255:
                raise Problem(
                    422,
                    "Idempotency-Key must be 1 to 255 characters",
                    [{"field": "Idempotency-Key", "message": "length 1-255"}],
                )
            seen = self.store.idempotent(f"{scope}:{resource}", idempotency_key)
            if seen is not None:
                if seen[0] != body_hash:
                    raise Problem(
                        422,
                        "This Idempotency-Key was used with another body",
                        [{"field": "Idempotency-Key", "message": "reused with another body"}],
                    )
                return seen[1], seen[2], {**_etag_location(resource, seen[2]), "Idempotent-Replayed": "true"}
        self._validate(resource, "Create", data)
        doc: dict[str, Any] = {k: None for k in self._fields_of(resource)}
        doc.update(data)
        for key, default in DEFAULTS.get(resource, {}).items():
            if doc.get(key) is None:
                doc[key] = default
        doc["ExternalRefs"] = data.get("ExternalRefs") or {}
        self._check_rules(resource, doc, None)
        row = self.store.insert(resource, doc)
        rendered = self.render(row)
        if idempotency_key is not None:
            self.store.remember(f"{scope}:{resource}", idempotency_key, body_hash, 201, rendered)
        return 201, rendered, _etag_location(resource, rendered)

    def _live(self, resource: str, record_id: str) -> Row:
        row = self.store.get(resource, record_id)
        if row is None or row.deleted_us is not None:
            raise Problem(404, f"No {resource[:-1]} {record_id!r}")
        return row

    @staticmethod
    def _precondition(row: Row, if_match: str | None) -> None:
        if if_match is None or if_match.strip() == "*":
            return
        tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
        if f'"{row.version}"' not in tags:
            raise Problem(
                412,
                f'If-Match {if_match} does not match the current version "{row.version}"',
                headers={"ETag": f'"{row.version}"'},
            )

    def do_update(
        self, resource: str, record_id: str, data: Any, if_match: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        row = self._live(resource, record_id)
        self._validate(resource, "Patch", data)
        self._precondition(row, if_match)
        doc = dict(row.doc)
        for key, value in data.items():
            if key == "ExternalRefs":
                refs = dict(doc.get("ExternalRefs") or {})
                for system, ref in value.items():
                    if ref is None:
                        refs.pop(system, None)
                    else:
                        refs[system] = ref
                doc["ExternalRefs"] = refs
            elif value is None and key in _required(self.contract, resource):
                raise Problem(
                    422, f"{key} is required and cannot be cleared", [{"field": key, "message": "required"}]
                )
            elif value is None and key in DEFAULTS.get(resource, {}):
                doc[key] = DEFAULTS[resource][key]
            else:
                doc[key] = value
        if doc == row.doc:  # a patch that changes nothing changes neither Version nor UpdatedAt
            rendered = self.render(row)
            return 200, rendered, {"ETag": f'"{row.version}"'}
        self._check_rules(resource, doc, row.id)
        rendered = self.render(self.store.update(resource, row, doc))
        return 200, rendered, {"ETag": f'"{rendered["Version"]}"'}

    def do_delete(
        self, resource: str, record_id: str, if_match: str | None
    ) -> tuple[int, None, dict[str, str]]:
        row = self._live(resource, record_id)
        self._precondition(row, if_match)
        self.store.soft_delete(resource, row)
        return 204, None, {}

    # --- endpoints -------------------------------------------------------------------------
    async def _json(self, request: Request) -> Any:
        raw = await request.body()
        if len(raw) > self.max_body:
            raise Problem(413, f"The body is {len(raw)} bytes; the limit is {self.max_body} bytes")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Problem(400, f"The body is not JSON: {exc}") from None

    def _scope(self, request: Request) -> str:
        return hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()[:12]

    async def list_or_create(self, request: Request) -> Response:
        resource = request.url.path.rsplit("/", 1)[1]
        if request.method == "POST":
            data = await self._json(request)
            status, body, headers = self.do_create(
                resource, data, request.headers.get("idempotency-key"), self._scope(request)
            )
            return JSONResponse(body, status, headers=headers)
        return JSONResponse(self._list(resource, request))

    def _list(self, resource: str, request: Request) -> dict[str, Any]:
        params = request.query_params
        errors = [
            {"field": name, "message": "unknown query parameter"}
            for name in params
            if name not in ("updated_since", "include_deleted", "external_ref", "limit", "cursor")
        ]
        limit = 100
        if "limit" in params:
            try:
                limit = int(params["limit"])
                if not 1 <= limit <= 500:
                    raise ValueError
            except ValueError:
                errors.append({"field": "limit", "message": "an integer from 1 to 500"})
        include_deleted = params.get("include_deleted", "false").lower()
        if include_deleted not in ("true", "false"):
            errors.append({"field": "include_deleted", "message": "true or false"})
        since_us = None
        if "updated_since" in params:
            try:
                since = params["updated_since"]
                if "T" not in since:
                    raise ValueError
                since_us = to_us(parse_ts(since))
            except ValueError:
                errors.append({"field": "updated_since", "message": "an RFC 3339 timestamp"})
        external_ref = None
        if "external_ref" in params:
            system, _, value = params["external_ref"].partition(":")
            if not self.external_ref.fullmatch(params["external_ref"]):
                errors.append({"field": "external_ref", "message": "system:id"})
            external_ref = (system, value)
        after = None
        if params.get("cursor"):
            after = _decode_cursor(params["cursor"])
            if after is None:
                errors.append({"field": "cursor", "message": "not a cursor this server issued"})
        if errors:
            raise Problem(422, "Invalid query parameters", errors)
        rows = self.store.page(
            resource,
            after=after,
            updated_since_us=since_us,
            include_deleted=include_deleted == "true",
            external_ref=external_ref,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1].updated_us, rows[-1].id) if more else None
        return {"data": [self.render(r) for r in rows], "next_cursor": next_cursor}

    async def one(self, request: Request) -> Response:
        resource = request.url.path.rsplit("/", 2)[1]
        record_id = request.path_params["record_id"]
        if_match = request.headers.get("if-match")
        if request.method == "GET":
            row = self._live(resource, record_id)
            return JSONResponse(self.render(row), headers={"ETag": f'"{row.version}"'})
        if request.method == "DELETE":
            self.do_delete(resource, record_id, if_match)
            return Response(status_code=204)
        data = await self._json(request)
        status, body, headers = self.do_update(resource, record_id, data, if_match)
        return JSONResponse(body, status, headers=headers)

    async def batch(self, request: Request) -> Response:
        resource = request.url.path.rsplit("/", 2)[1]
        data = await self._json(request)
        self._validate(resource, "BatchRequest", data)
        scope = self._scope(request)
        results = []
        with self.store.transaction():  # one commit per batch; each operation all or nothing
            for op in data["operations"]:
                result: dict[str, Any]
                body: dict[str, Any] | None
                try:
                    with self.store.operation():
                        if op["op"] == "create":
                            status, body, _ = self.do_create(
                                resource, op.get("data", {}), op.get("idempotency_key"), scope
                            )
                        elif "id" not in op:
                            raise Problem(
                                422, f"{op['op']} needs an id", [{"field": "id", "message": "required"}]
                            )
                        elif op["op"] == "update":
                            status, body, _ = self.do_update(
                                resource, op["id"], op.get("data", {}), op.get("if_match")
                            )
                        else:
                            status, body, _ = self.do_delete(resource, op["id"], op.get("if_match"))
                    result = {"status": status}
                    if body is not None:
                        result["data"] = body
                except Problem as exc:
                    result = {"status": exc.status, "error": exc.body()}
                results.append(result)
        return JSONResponse({"results": results})


def _required(contract: dict[str, Any], resource: str) -> list[str]:
    return list(contract["components"]["schemas"][f"{SCHEMA_NAMES[resource]}Create"].get("required", []))


def _field_error(error: ValidationError) -> dict[str, str]:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return {
            "field": ".".join(filter(None, [path, extra[0] if extra else ""])),
            "message": "unknown field",
        }
    if error.validator == "anyOf" and all("required" in sub for sub in error.validator_value):
        names = [name for sub in error.validator_value for name in sub["required"]]
        return {
            "field": ".".join(filter(None, [path, names[0]])),
            "message": f"at least one of {', '.join(names)} must have a value",
        }
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return {"field": ".".join(filter(None, [path, missing])), "message": "required"}
    message = error.message if len(error.message) < 200 else error.message[:197] + "..."
    return {"field": path or "(body)", "message": message}


def _etag_location(resource: str, rendered: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{rendered["Version"]}"', "Location": f"{API_PREFIX}/{resource}/{rendered['Id']}"}


def _encode_cursor(updated_us: int, record_id: str) -> str:
    return base64.urlsafe_b64encode(f"{updated_us}|{record_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str] | None:
    try:
        text = base64.urlsafe_b64decode(cursor.encode() + b"===").decode()
        stamp, _, record_id = text.partition("|")
        return int(stamp), record_id
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return None
