"""A local server that a client cannot tell from Keap REST v2, for what the sync uses.

Serves `/crm/rest/v2/{contacts,companies,opportunities,products}` (list, get,
create, PATCH with `update_mask`, delete), `/crm/rest/v2/opportunities/stages`,
and the OAuth token endpoint `/token`, with Keap's quirks: string ids,
`page_size` <= 1000 and `page_token`, filters and `order_by`, company lists that
hide address/email/phone/notes/update_time unless asked for in `fields`, PATCH
replacing whole arrays, prices written in minor units and read as objects,
timestamps in both the `Z` and `+0000` forms, the v2 error body, gateway
`fault` bodies for auth and throttling, and rotating refresh tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from sandbox.keap.limits import KeapLimiter
from sandbox.keap.resources import SPECS, KeapValidationError, render
from sandbox.keap.store import RESOURCES, KeapStore
from sandbox.runtime import SandboxMiddleware
from sandbox.timefmt import keap_z, parse_filter_ts

API_PREFIX = "/crm/rest/v2"
DEFAULT_PAGE_SIZE = 50
ACCESS_TTL_S = 24 * 3600
_ID_FILTERS = frozenset(
    {
        ("contacts", "contact_id"),
        ("companies", "company_id"),
        ("opportunities", "opportunity_id"),
        ("products", "product_id"),
    }
)
REFRESH_TTL_S = 45 * 24 * 3600

_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    501: "Not Implemented",
}


class KeapError(Exception):
    def __init__(self, status: int, message: str, details: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []

    def response(self) -> JSONResponse:
        return JSONResponse(
            {
                "code": self.status,
                "message": self.message,
                "status": _STATUS_TEXT.get(self.status, "Error"),
                "details": self.details,
            },
            status_code=self.status,
        )


def v2_error_body(status: int, message: str) -> dict[str, Any]:
    return {"code": status, "message": message, "status": _STATUS_TEXT[status], "details": []}


@dataclass
class KeapCredentials:
    api_key: str = "sandbox-keap-api-key"
    client_id: str = "sandbox-keap-client"
    client_secret: str = "sandbox-keap-secret"


class KeapSandbox:
    """The app and its state; `asgi` is what a server runs."""

    def __init__(self, data_dir: str | Path, credentials: KeapCredentials | None = None) -> None:
        self.store = KeapStore(Path(data_dir) / "keap.sqlite3")
        self.credentials = credentials or KeapCredentials()
        self.page_token_style = "opaque"  # or "url": Keap once sent whole URLs as tokens
        self.access_ttl_s = ACCESS_TTL_S
        routes = [Route("/token", self.token, methods=["POST"])]
        routes.append(Route(f"{API_PREFIX}/opportunities/stages", self.list_stages, methods=["GET"]))
        for resource in RESOURCES:
            routes += [
                Route(f"{API_PREFIX}/{resource}", self.list_or_create, methods=["GET", "POST"]),
                Route(
                    f"{API_PREFIX}/{resource}/{{record_id}}",
                    self.one,
                    methods=["GET", "PATCH", "DELETE"],
                ),
            ]
        self.app = Starlette(routes=routes, exception_handlers={KeapError: self._on_error})
        self.gateway = SandboxMiddleware(
            self.app,
            api_prefix=API_PREFIX,
            authenticate=self.authenticate,
            limiter_for=KeapLimiter,
            unauthorized=lambda: (
                {
                    "fault": {
                        "faultstring": "Invalid Access Token",
                        "detail": {"errorcode": "keymanagement.service.invalid_access_token"},
                    }
                },
                "application/json",
            ),
            server_error=lambda: (v2_error_body(500, "Internal Server Error"), "application/json"),
            throttled=lambda: (
                {
                    "code": "429",
                    "message": "Quota Exceeded",
                    "status": "Request Throttled",
                    "details": None,
                },
                "application/json",
            ),
            open_paths=("/token",),
            configure_app=self.configure,
            extra_admin=self.admin,
        )
        self.asgi = self.gateway

    # --- settings and admin -----------------------------------------------------
    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        for key, value in settings.items():
            if key == "page_token_style":
                if value not in ("opaque", "url"):
                    raise ValueError("page_token_style: 'opaque' or 'url'")
                self.page_token_style = value
            elif key == "access_ttl_s":
                self.access_ttl_s = int(value)
            else:
                raise ValueError(f"unknown keap sandbox setting: {key}")
        return {"page_token_style": self.page_token_style, "access_ttl_s": self.access_ttl_s}

    def admin(self, method: str, path: str, body: dict[str, Any]) -> Any:
        if path == "/_sandbox/oauth/issue" and method == "POST":
            return self.issue_tokens()
        if path == "/_sandbox/oauth/expire" and method == "POST":
            return {"expired": self.store.expire_access_tokens()}
        if path == "/_sandbox/counts" and method == "GET":
            return {r: self.store.count(r) for r in RESOURCES}
        raise LookupError(path)

    async def _on_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KeapError)
        return exc.response()

    # --- auth ------------------------------------------------------------------------
    def authenticate(self, scope: Scope) -> str | None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = headers.get("x-keap-api-key")
        if key is not None:
            return "key:" + _digest(key) if key == self.credentials.api_key else None
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        token = auth[7:].strip()
        if token == self.credentials.api_key:  # Keap's own v2 samples send keys as Bearer
            return "key:" + _digest(token)
        found = self.store.token(token, "access")
        if found is None:
            return None
        client_id, expires_us, revoked = found
        if revoked or expires_us <= self.store.clock.now_us():
            return None
        return "oauth:" + client_id

    def issue_tokens(self) -> dict[str, Any]:
        now = self.store.clock.now_us()
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.store.save_token(access, "access", self.credentials.client_id, now + self.access_ttl_s * 10**6)
        self.store.save_token(refresh, "refresh", self.credentials.client_id, now + REFRESH_TTL_S * 10**6)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.access_ttl_s,
            "refresh_token": refresh,
            "scope": "full",
        }

    async def token(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        try:
            user, _, password = base64.b64decode(auth.split(" ", 1)[1]).decode().partition(":")
        except (IndexError, ValueError, binascii.Error):
            user = password = ""
        if (user, password) != (self.credentials.client_id, self.credentials.client_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client credentials"},
                status_code=401,
            )
        form = parse_qs((await request.body()).decode())
        grant = (form.get("grant_type") or [""])[0]
        refresh = (form.get("refresh_token") or [""])[0]
        if grant != "refresh_token":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": f"grant_type {grant!r}"},
                status_code=400,
            )
        found = self.store.token(refresh, "refresh")
        if found is None or found[2] or found[1] <= self.store.clock.now_us():
            return JSONResponse(
                {"error": "invalid_request", "error_description": "Invalid Refresh Token"},
                status_code=400,
            )
        self.store.revoke(refresh)  # every refresh rotates: the old token stops working
        return JSONResponse(self.issue_tokens())

    # --- lists -------------------------------------------------------------------------
    async def list_stages(self, request: Request) -> Response:
        page_size, offset, fingerprint = self._paging(request, "stages")
        stages = self.store.stages()
        page = stages[offset : offset + page_size]
        body: dict[str, Any] = {
            "stages": [
                {
                    "id": s["id"],
                    "name": s["name"],
                    "order": s["order"],
                    "probability": s["probability"],
                    "created_time": keap_z(s["_c"]),
                    "updated_time": keap_z(s["_u"]),
                }
                for s in page
            ]
        }
        if offset + page_size < len(stages):
            body["next_page_token"] = self._token(request, offset + page_size, fingerprint)
        return JSONResponse(body)

    async def list_or_create(self, request: Request) -> Response:
        resource = request.url.path.rsplit("/", 1)[1]
        if request.method == "POST":
            return await self.create(request, resource)
        spec = SPECS[resource]
        page_size, offset, fingerprint = self._paging(request, resource)
        where = self._filters(resource, request.query_params.get("filter"))
        order = self._order(resource, request.query_params.get("order_by"))
        wanted = self._fields(request) if spec.accepts_fields else None
        rows = self.store.query(resource, where, order, offset, page_size + 1)
        more = len(rows) > page_size
        items = [
            render(resource, doc, c, u, self._lookup, self.store.stage, wanted, listing=True)
            for doc, c, u in rows[:page_size]
        ]
        body: dict[str, Any] = {resource: items}
        if more:
            body["next_page_token"] = self._token(request, offset + page_size, fingerprint)
        elif resource in ("contacts", "companies"):
            body["next_page_token"] = ""  # an empty token ends these lists; others omit it
        return JSONResponse(body)

    def _paging(self, request: Request, resource: str) -> tuple[int, int, str]:
        params = request.query_params
        raw_size = params.get("page_size") or "0"
        try:
            page_size = int(raw_size)
        except ValueError:
            raise KeapError(400, f"Invalid page_size '{raw_size}'") from None
        if page_size < 0 or page_size > 1000:
            raise KeapError(400, "page_size must be between 0 and 1000")
        page_size = page_size or DEFAULT_PAGE_SIZE
        fingerprint = _digest(
            json.dumps([resource, params.get("filter"), params.get("order_by"), page_size])
        )[:12]
        offset = 0
        token = params.get("page_token")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode() + b"==="))
                offset = int(state["o"])
                if state["f"] != fingerprint:
                    raise ValueError("fingerprint")
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise KeapError(400, "Invalid page_token") from None
        return page_size, offset, fingerprint

    def _token(self, request: Request, offset: int, fingerprint: str) -> str:
        token = base64.urlsafe_b64encode(json.dumps({"o": offset, "f": fingerprint}).encode())
        text = token.decode().rstrip("=")
        if self.page_token_style == "url":
            query = {k: v for k, v in request.query_params.items() if k != "page_token"}
            query["page_token"] = text
            return f"{request.url.scheme}://{request.url.netloc}{request.url.path}?{urlencode(query)}"
        return text

    def _fields(self, request: Request) -> set[str] | None:
        raw = request.query_params.getlist("fields")
        if not raw:
            return None
        return {name.strip() for part in raw for name in part.split(",") if name.strip()}

    def _order(self, resource: str, order_by: str | None) -> str:
        spec = SPECS[resource]
        if not order_by:
            return "id asc"
        parts = order_by.replace(",", " ").split()
        name, direction = parts[0], (parts[1].lower() if len(parts) > 1 else "asc")
        if name not in spec.order_by or direction not in ("asc", "desc") or len(parts) > 2:
            raise KeapError(
                400,
                f"Invalid order_by '{order_by}': one of {sorted(spec.order_by)} then asc or desc",
            )
        return f"{spec.order_by[name]} {direction}, id {direction}"

    def _filters(self, resource: str, text: str | None) -> list[tuple[str, list[Any]]]:
        if not text:
            return []
        spec = SPECS[resource]
        where: list[tuple[str, list[Any]]] = []
        for clause in filter(None, text.split(";")):
            for op in ("==", ">=", "<=", ">", "<"):
                if op in clause:
                    name, value = clause.split(op, 1)
                    break
            else:
                raise KeapError(400, f"Invalid filter '{clause}': expected field==value")
            name = name.strip()
            if name not in spec.filters:
                raise KeapError(400, f"Invalid filter field '{name}' for {resource}: {sorted(spec.filters)}")
            if op != "==" and (resource, name) not in _ID_FILTERS:
                raise KeapError(400, f"Filter '{name}' supports only ==")
            where.append(self._clause(resource, name, op, value))
        return where

    def _clause(self, resource: str, name: str, op: str, value: str) -> tuple[str, list[Any]]:
        try:
            if name in ("start_update_time", "since_time"):
                return "update_us >= ?", [parse_filter_ts(value)]
            if name in ("end_update_time", "until_time"):
                return "update_us <= ?", [parse_filter_ts(value)]
        except ValueError as exc:
            raise KeapError(400, f"Invalid filter {name}: {exc}") from None
        if name in ("ids", "contact_ids", "product_ids"):
            ids = [int(v) for v in value.split(",") if v.strip().isdigit()]
            if name == "ids" and resource == "opportunities" and len(ids) > 100:
                raise KeapError(400, "ids accepts at most 100 ids")
            return f"id in ({','.join('?' * len(ids)) or 'null'})", ids
        if (resource, name) in _ID_FILTERS:
            if not value.isdigit():
                raise KeapError(400, f"Invalid filter {name}: '{value}' is not an id")
            return f"id {'=' if op == '==' else op} ?", [int(value)]
        column = {
            ("contacts", "email"): "email",
            ("companies", "email"): "email",
            ("companies", "company_name"): "name",
            ("companies", "name"): "name",
            ("opportunities", "opportunity_title"): "name",
            ("products", "name"): "name",
            ("products", "sku"): "sku",
        }.get((resource, name))
        if column is None:
            path = {"company_id": "$.company.id"}.get(name, f"$.{name}")
            column = f"json_extract(doc, '{path}')"
        if column == "email":
            value = value.lower()
        if value.endswith("*") and name not in ("company_name",):
            return f"{column} like ?", [value[:-1].replace("%", r"\%") + "%"]
        return f"{column} = ?", [value]

    # --- one record -------------------------------------------------------------------
    def _lookup(self, resource: str, record_id: str) -> dict[str, Any] | None:
        found = self.store.get(resource, record_id) if record_id else None
        return found[0] if found else None

    def _render_one(self, resource: str, record_id: str, wanted: set[str] | None = None) -> dict[str, Any]:
        found = self.store.get(resource, record_id)
        if found is None:
            raise KeapError(404, f"{SPECS[resource].singular.title()} {record_id} not found")
        doc, c, u = found
        return render(resource, doc, c, u, self._lookup, self.store.stage, wanted)

    async def one(self, request: Request) -> Response:
        resource = request.url.path.rsplit("/", 2)[1]
        record_id = request.path_params["record_id"]
        if request.method == "GET":
            wanted = self._fields(request) if SPECS[resource].accepts_fields else None
            return JSONResponse(self._render_one(resource, record_id, wanted))
        if request.method == "DELETE":
            if not self.store.delete(resource, record_id):
                raise KeapError(404, f"{SPECS[resource].singular.title()} {record_id} not found")
            return Response(status_code=204)
        return await self.patch(request, resource, record_id)

    async def _body(self, request: Request, resource: str) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except json.JSONDecodeError as exc:
            raise KeapError(400, f"Malformed JSON body: {exc.msg}") from None
        if not isinstance(body, dict):
            raise KeapError(400, "The request body must be a JSON object")
        unknown = set(body) - SPECS[resource].writable
        if unknown:
            name = sorted(unknown)[0]
            raise KeapError(400, f"Invalid field '{name}' for {resource}", [_detail(name, resource)])
        return body

    def _check(self, resource: str, body: dict[str, Any], creating: bool) -> None:
        try:
            SPECS[resource].validate(body, creating)
        except KeapValidationError as exc:
            raise KeapError(
                400, f"Invalid {exc.field}: {exc.message}", [_detail(exc.field, resource)]
            ) from None
        company = body.get("company")
        if resource == "contacts" and company and self._lookup("companies", company["id"]) is None:
            raise KeapError(
                400,
                f"Invalid company.id: company {company['id']} does not exist",
                [_detail("company.id", resource)],
            )
        if resource == "opportunities":
            if body.get("contact_id") and self._lookup("contacts", body["contact_id"]) is None:
                raise KeapError(
                    400,
                    f"Invalid contact_id: contact {body['contact_id']} does not exist",
                    [_detail("contact_id", resource)],
                )
            if body.get("stage_id") and self.store.stage(body["stage_id"]) is None:
                raise KeapError(
                    400,
                    f"Invalid stage_id: stage {body['stage_id']} does not exist",
                    [_detail("stage_id", resource)],
                )

    async def create(self, request: Request, resource: str) -> Response:
        body = await self._body(request, resource)
        self._check(resource, body, creating=True)
        doc = {k: v for k, v in body.items() if v is not None}
        duplicate_option = request.query_params.get("duplicate_option")
        if resource == "contacts" and duplicate_option:
            if duplicate_option not in ("Email", "EmailAndName", "EmailAndNameAndCompany"):
                raise KeapError(400, f"Invalid duplicate_option '{duplicate_option}'")
            existing = self._duplicate(doc, duplicate_option)
            if existing is not None:
                merged = {**existing, **doc, "id": existing["id"]}
                self.store.replace(resource, merged)
                return JSONResponse(self._render_one(resource, existing["id"]), status_code=200)
        (record_id,) = self.store.insert_many(resource, [doc])
        return JSONResponse(self._render_one(resource, str(record_id)), status_code=201)

    def _duplicate(self, doc: dict[str, Any], option: str) -> dict[str, Any] | None:
        email = next(
            (e["email"].lower() for e in doc.get("email_addresses") or [] if e.get("field") == "EMAIL1"),
            None,
        )
        if email is None:
            return None
        for found, _, _ in self.store.query("contacts", [("email = ?", [email])], "id asc", 0, 50):
            if option == "Email":
                return found
            same_name = (found.get("given_name"), found.get("family_name")) == (
                doc.get("given_name"),
                doc.get("family_name"),
            )
            same_company = (found.get("company") or {}).get("id") == (doc.get("company") or {}).get("id")
            if same_name and (option == "EmailAndName" or same_company):
                return found
        return None

    async def patch(self, request: Request, resource: str, record_id: str) -> Response:
        found = self.store.get(resource, record_id)
        if found is None:
            raise KeapError(404, f"{SPECS[resource].singular.title()} {record_id} not found")
        body = await self._body(request, resource)
        mask_raw = request.query_params.getlist("update_mask")
        mask = [n.strip() for part in mask_raw for n in part.split(",") if n.strip()]
        unknown = [n for n in mask if n not in SPECS[resource].writable]
        if unknown:
            raise KeapError(
                400,
                f"Invalid update_mask field '{unknown[0]}' for {resource}",
                [_detail(unknown[0], resource)],
            )
        names = mask or list(body)
        patch = {n: body.get(n) for n in names}
        self._check(resource, {k: v for k, v in patch.items() if v is not None}, creating=False)
        doc = dict(found[0])
        for name, value in patch.items():  # arrays and objects are replaced whole
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
        if resource == "opportunities" and not doc.get("opportunity_title"):
            raise KeapError(
                400, "Invalid opportunity_title: is required", [_detail("opportunity_title", resource)]
            )
        if resource == "products" and not doc.get("name"):
            raise KeapError(400, "Invalid name: is required", [_detail("name", resource)])
        self.store.replace(resource, doc)
        wanted = self._fields(request) if SPECS[resource].accepts_fields else None
        return JSONResponse(self._render_one(resource, record_id, wanted))


def _detail(field_name: str, resource: str) -> dict[str, str]:
    return {"domain": field_name, "resource": resource}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
