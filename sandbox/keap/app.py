"""A local server that a client cannot tell from Keap REST v2, for what the sync uses.

Serves `/crm/rest/v2/{contacts,companies,opportunities,products}` (list, get,
create, PATCH with `update_mask`, delete), `/crm/rest/v2/opportunities/stages`,
the OAuth token endpoint `/token`, and Keap's REST hooks (`/crm/rest/v1/hooks`, with
delivery of the changes made through v2: sandbox.keap.hooks). Every request is checked against Keap's own
document (sandbox/keap/spec, sandbox.keap.strict) and refused with Keap's 400 where
Keap would refuse it. Keap's quirks: string ids,
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

from sandbox.keap.hooks import KeapHooks
from sandbox.keap.limits import KeapLimiter
from sandbox.keap.resources import MESSAGE_HINTS, SPECS, FilterSql, KeapValidationError, render
from sandbox.keap.restless import Restless
from sandbox.keap.spec import operation as spec_operation
from sandbox.keap.store import RESOURCES, KeapStore
from sandbox.keap.strict import Clause, Query, body_properties, check_body, check_query
from sandbox.runtime import SandboxMiddleware
from sandbox.timefmt import keap_z, parse_filter_ts

API_PREFIX = "/crm/rest/v2"
DEFAULT_PAGE_SIZE = 50
ACCESS_TTL_S = 24 * 3600
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
        self.restless = Restless()  # paging by position or key, an account that moves while read
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
        self.hooks = KeapHooks(self.store, self.authenticate)  # REST v1 hooks (sandbox.keap.hooks)
        self.gateway = SandboxMiddleware(
            self.hooks.observe(self.app),
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
            clock=self.store.clock.wall,
        )
        self.asgi = self.hooks.v1(self.gateway)

    # --- settings and admin -----------------------------------------------------
    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        for key, value in settings.items():
            if key == "page_token_style":
                if value not in ("opaque", "url"):
                    raise ValueError("page_token_style: 'opaque' or 'url'")
                self.page_token_style = value
            elif key == "access_ttl_s":
                self.access_ttl_s = int(value)
            elif key == "hooks":
                self.hooks.configure(value)
            elif key == "clock_offset_s":  # this Keap's clock against the machine's
                self.store.clock.offset_us = round(float(value) * 1_000_000)
            elif not self.restless.configure(key, value):
                raise ValueError(f"unknown keap sandbox setting: {key}")
        return {
            "page_token_style": self.page_token_style,
            "access_ttl_s": self.access_ttl_s,
            "hooks": self.hooks.describe(),
            "clock_offset_s": self.store.clock.offset_us / 1_000_000,
            **self.restless.describe(),
        }

    def admin(self, method: str, path: str, body: dict[str, Any]) -> Any:
        if path == "/_sandbox/oauth/issue" and method == "POST":
            return self.issue_tokens()
        if path == "/_sandbox/oauth/expire" and method == "POST":
            return {"expired": self.store.expire_access_tokens()}
        if path == "/_sandbox/counts" and method == "GET":
            return {r: self.store.count(r) for r in RESOURCES}
        if path.startswith("/_sandbox/hooks"):
            return self.hooks.admin(method, path, body)
        if path == "/_sandbox/restless" and method == "GET":
            return self.restless.done
        if path == "/_sandbox/stamp" and method == "POST":
            at = self.store.clock.now_us() + int(float(body["offset_s"]) * 10**6)
            if body.get("resource") not in RESOURCES or not self.store.stamp(
                body["resource"], str(body["id"]), at
            ):
                raise ValueError(f"no {body.get('resource')} {body.get('id')}")
            return {"resource": body["resource"], "id": str(body["id"]), "update_time": keap_z(at)}
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

    # --- what Keap's document allows ----------------------------------------------------
    @staticmethod
    def _query(request: Request, method: str, path: str, resource: str) -> Query:
        key = f"{method} {path}"
        try:
            return check_query(key, spec_operation(method, path), list(request.query_params.multi_items()))
        except KeapValidationError as exc:
            raise KeapError(
                400, f"Invalid {exc.field}: {exc.message}", [_detail(exc.field, resource)]
            ) from None

    # --- lists -------------------------------------------------------------------------
    async def list_stages(self, request: Request) -> Response:
        query = self._query(request, "GET", "/opportunities/stages", "stages")
        page_size, offset, fingerprint = self._paging(request, "stages", query)
        stages = [s for s in self.store.stages() if all(_stage_matches(s, c) for c in query.filters)]
        if query.order:
            stages.sort(key=lambda s: (s["order"], int(s["id"])), reverse=query.order[1] == "desc")
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
        query = self._query(request, "GET", f"/{resource}", resource)
        page_size, position, fingerprint = self._paging(request, resource, query)
        page_size = self.restless.page_size(page_size)
        where = [self._clause(resource, clause) for clause in query.filters]
        order = self._order(resource, query.order)
        column, direction = order.split(",")[0].split()
        offset = 0
        if isinstance(position, list):  # by key: after the last row served, whatever moved since
            where.append((f"({column}, id) {'>' if direction == 'asc' else '<'} (?, ?)", position))
        else:  # by position: an offset into the list as it is now
            offset = position
        wanted = _wanted(query)
        rows = self.store.query(resource, where, order, offset, page_size + 1)
        more = len(rows) > page_size
        served = [doc for doc, _, _ in rows[:page_size]]
        items = [
            render(resource, doc, c, u, self._lookup, self.store.stage, wanted, listing=True)
            for doc, c, u in rows[:page_size]
        ]
        body: dict[str, Any] = {resource: items}
        if more:
            if self.restless.paging == "key":
                last = str(served[-1]["id"])
                resume: int | list[Any] = [self.store.sort_value(resource, last, column), int(last)]
            else:
                resume = offset + page_size
            body["next_page_token"] = self._token(request, resume, fingerprint)
        elif resource in ("contacts", "companies"):
            body["next_page_token"] = ""  # an empty token ends these lists; others omit it
        spoiled = self.restless.spoil(resource, body, str(request.url))
        self.restless.after_page(self.store, resource, served)
        if spoiled is not None:
            return Response(spoiled, media_type="application/json")
        return JSONResponse(body)

    def _paging(self, request: Request, resource: str, query: Query) -> tuple[int, Any, str]:
        page_size = query.get("page_size") or DEFAULT_PAGE_SIZE  # 0 or absent: the default
        params = request.query_params
        fingerprint = _digest(
            json.dumps([resource, params.get("filter"), params.get("order_by"), page_size])
        )[:12]
        offset = 0
        token = query.get("page_token")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode() + b"==="))
                offset = state["k"] if "k" in state else int(state["o"])
                if state["f"] != fingerprint:
                    raise ValueError("fingerprint")
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise KeapError(400, "Invalid page_token", [_detail("page_token", resource)]) from None
        return page_size, offset, fingerprint

    def _token(self, request: Request, resume: int | list[Any], fingerprint: str) -> str:
        """An opaque token: an offset, or (paging by key) the last row's sort key and id."""
        state: dict[str, Any] = {"k": resume} if isinstance(resume, list) else {"o": resume}
        token = base64.urlsafe_b64encode(json.dumps({**state, "f": fingerprint}).encode())
        text = token.decode().rstrip("=")
        if self.page_token_style == "url":
            query = {k: v for k, v in request.query_params.items() if k != "page_token"}
            query["page_token"] = text
            return f"{request.url.scheme}://{request.url.netloc}{request.url.path}?{urlencode(query)}"
        return text

    @staticmethod
    def _order(resource: str, order: tuple[str, str] | None) -> str:
        if order is None:
            return "id asc"
        name, direction = order
        column = SPECS[resource].order_sql.get(name)
        if column is None:
            raise _not_implemented(f"order_by {name}", resource)
        return f"{column} {direction}, id {direction}"

    @staticmethod
    def _clause(resource: str, clause: Clause) -> tuple[str, list[Any]]:
        """One filter clause the document allows, as SQL over the store."""
        how: FilterSql | None = SPECS[resource].filter_sql.get(clause.name)
        if how is None:
            raise _not_implemented(f"filter field {clause.name}", resource)
        value, sql_op = clause.value, "=" if clause.op == "==" else clause.op
        try:
            if how.kind in ("since", "until"):
                return f"{how.column} {'>=' if how.kind == 'since' else '<='} ?", [parse_filter_ts(value)]
            if how.kind == "ids":
                bad = [v for v in clause.values if not v.isdigit()]
                if bad:
                    raise ValueError(f"'{bad[0]}' is not an id")
                ids = [int(v) for v in clause.values]
                return f"{how.column} in ({','.join('?' * len(ids)) or 'null'})", ids
            if how.kind == "id":
                if not value.isdigit():
                    raise ValueError(f"'{value}' is not an id")
                return f"{how.column} {sql_op} ?", [int(value)]
            if how.kind == "number":
                return f"cast({how.column} as real) {sql_op} ?", [float(value)]
        except ValueError as exc:
            raise KeapError(
                400, f"Invalid filter: {clause.name}: {exc}", [_detail("filter", resource)]
            ) from None
        if how.column == "email":
            value = value.lower()
        if clause.spec["wildcard"] and value.endswith("*"):
            prefix = value[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return f"{how.column} like ? escape '\\'", [prefix + "%"]
        return f"{how.column} = ?", [value]

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
        if request.method == "PATCH":
            return await self.patch(request, resource, record_id)
        query = self._query(request, request.method, SPECS[resource].one_path, resource)
        if request.method == "GET":
            return JSONResponse(self._render_one(resource, record_id, _wanted(query)))
        if not self.store.delete(resource, record_id):
            raise KeapError(404, f"{SPECS[resource].singular.title()} {record_id} not found")
        return Response(status_code=204)

    async def _body(self, request: Request, resource: str, method: str, path: str) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except json.JSONDecodeError as exc:
            raise KeapError(400, f"Malformed JSON body: {exc.msg}") from None
        if not isinstance(body, dict):
            raise KeapError(400, "The request body must be a JSON object")
        try:
            check_body(f"{method} {path}", spec_operation(method, path), body, MESSAGE_HINTS.get(resource))
        except KeapValidationError as exc:
            raise KeapError(
                400, f"Invalid {exc.field}: {exc.message}", [_detail(exc.field, resource)]
            ) from None
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
        query = self._query(request, "POST", f"/{resource}", resource)
        body = await self._body(request, resource, "POST", f"/{resource}")
        self._check(resource, {k: v for k, v in body.items() if v is not None}, creating=True)
        doc = {k: v for k, v in body.items() if v is not None}
        duplicate_option = query.get("duplicate_option")
        if resource == "contacts" and duplicate_option:
            existing = self._duplicate(doc, duplicate_option)
            if existing is not None:
                merged = {**existing, **doc, "id": existing["id"]}
                self.store.replace(resource, merged)
                return JSONResponse(
                    self._render_one(resource, existing["id"], _wanted(query)), status_code=200
                )
        (record_id,) = self.store.insert_many(resource, [doc])
        return JSONResponse(self._render_one(resource, str(record_id), _wanted(query)), status_code=201)

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
        path = SPECS[resource].one_path
        query = self._query(request, "PATCH", path, resource)
        found = self.store.get(resource, record_id)
        if found is None:
            raise KeapError(404, f"{SPECS[resource].singular.title()} {record_id} not found")
        body = await self._body(request, resource, "PATCH", path)
        writable = body_properties(spec_operation("PATCH", path))
        # a mask may name what the body cannot carry (id, update_time, ...): those change nothing
        names = [n for n in query.get("update_mask") or list(body) if n in writable]
        patch = {n: body.get(n) for n in names}
        self._check(resource, {k: v for k, v in patch.items() if v is not None}, creating=False)
        doc = dict(found[0])
        if resource == "products":  # written flat, kept (and answered) as the inventory object
            inventory = dict(doc.get("inventory") or {})
            for name in [n for n in patch if n in _PRODUCT_INVENTORY]:
                inventory[name] = patch.pop(name)
            if inventory != (doc.get("inventory") or {}):
                patch["inventory"] = {k: v for k, v in inventory.items() if v is not None} or None
        for name, value in patch.items():  # a masked property absent from the body is cleared
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value  # arrays and objects are replaced whole
        if resource == "opportunities" and not doc.get("opportunity_title"):
            raise KeapError(
                400, "Invalid opportunity_title: is required", [_detail("opportunity_title", resource)]
            )
        if resource == "products" and not doc.get("name"):
            raise KeapError(400, "Invalid name: is required", [_detail("name", resource)])
        self.store.replace(resource, doc)
        return JSONResponse(self._render_one(resource, record_id, _wanted(query)))


_PRODUCT_INVENTORY = ("inventory_limit", "out_of_stock_enabled", "email_for_inventory_notifications")


def _wanted(query: Query) -> set[str] | None:
    fields = query.get("fields")
    return set(fields) if fields else None


def _stage_matches(stage: dict[str, Any], clause: Clause) -> bool:
    if clause.name == "opportunity_stage_id":
        if not clause.value.isdigit():
            raise KeapError(
                400, f"Invalid filter: '{clause.value}' is not a stage id", [_detail("filter", "stages")]
            )
        left, right = int(stage["id"]), int(clause.value)
        return {"==": left == right, ">": left > right, "<": left < right, ">=": left >= right,
                "<=": left <= right}[clause.op]  # fmt: skip
    if clause.name == "opportunity_stage_name":
        name, wanted = stage["name"].lower(), clause.value.lower()
        return name.startswith(wanted[:-1]) if wanted.endswith("*") else name == wanted
    raise _not_implemented(f"filter field {clause.name}", "stages")


def _not_implemented(what: str, resource: str) -> KeapError:
    """Keap's document allows it; the sandbox has no data for it. Said, never ignored."""
    return KeapError(
        501, f"The sandbox does not implement {what} (Keap's document allows it)", [_detail(what, resource)]
    )


def _detail(field_name: str, resource: str) -> dict[str, str]:
    return {"domain": field_name, "resource": resource}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
