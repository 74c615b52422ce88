"""A Keap account that moves while it is read, on demand (`/_sandbox/config` settings).

- `paging`: how a next-page token resumes a list. "position" (the default: an offset,
  as Keap may page) or "key" (the last row's sort key: what a careful server does). With
  positions, a record edited or deleted behind the reader shifts every later record by
  one place, and the first record of the next page is never returned.
- `max_page_size`: a server may answer fewer records than `page_size` asks for (a small
  demo then takes several pages).
- `restless`: after each page of a list it answers, the account changes behind the
  reader: `{"resources": [...], "edit": n, "delete": n, "create": n}` edits, then
  deletes, the first records of the page just served, and creates new ones. What it did
  is listed at `GET /_sandbox/restless` (until restless is set again).
- `hostile`: the `request`-th list answer of `resource` from now on is spoiled, once:
  `kind` is repeat_token, url_without_token, null_list, not_objects, bad_timestamp or
  malformed_json.
- `POST /_sandbox/stamp {"resource", "id", "offset_s"}`: a record's update time moved
  `offset_s` from now (a future date: a bad clock, bad data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sandbox.keap.store import RESOURCES, KeapStore

HOSTILE_KINDS = frozenset(
    {"repeat_token", "url_without_token", "null_list", "not_objects", "bad_timestamp", "malformed_json"}
)
# the text property an edit changes, per resource
EDITED = {
    "contacts": "job_title",
    "companies": "notes",
    "opportunities": "opportunity_notes",
    "products": "description",
}
STAMPS = {
    "contacts": "update_time",
    "companies": "update_time",
    "opportunities": "last_updated_time",
    "products": "update_time",
}


@dataclass
class Restless:
    paging: str = "position"
    max_page_size: int | None = None
    resources: frozenset[str] = frozenset()
    edit: int = 0
    delete: int = 0
    create: int = 0
    hostile: dict[str, Any] | None = None
    seen_requests: dict[str, int] = field(default_factory=dict)
    done: dict[str, list[dict[str, str]]] = field(
        default_factory=lambda: {"edited": [], "deleted": [], "created": []}
    )

    def configure(self, key: str, value: Any) -> bool:
        """Takes the settings it knows; False for any other."""
        if key == "paging":
            if value not in ("position", "key"):
                raise ValueError("paging: 'position' or 'key'")
            self.paging = value
        elif key == "max_page_size":
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError("max_page_size: a positive integer, or null")
            self.max_page_size = value
        elif key == "restless":
            value = value or {}
            unknown = set(value) - {"resources", "edit", "delete", "create"}
            if unknown:
                raise ValueError(f"unknown restless settings: {sorted(unknown)}")
            resources = frozenset(value.get("resources") or [])
            if not resources <= set(RESOURCES):
                raise ValueError(f"restless resources: some of {list(RESOURCES)}")
            self.resources = resources
            self.edit, self.delete, self.create = (int(value.get(k, 0)) for k in ("edit", "delete", "create"))
            if resources:  # a new round starts its own list; switching off keeps what was done
                self.done = {"edited": [], "deleted": [], "created": []}
        elif key == "hostile":
            if value is not None:
                if value.get("kind") not in HOSTILE_KINDS or value.get("resource") not in RESOURCES:
                    raise ValueError(
                        f"hostile: resource of {list(RESOURCES)}, kind of {sorted(HOSTILE_KINDS)}"
                    )
                value = {"request": 1, **value}
                self.seen_requests[value["resource"]] = 0
            self.hostile = value
        else:
            return False
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "paging": self.paging,
            "max_page_size": self.max_page_size,
            "restless": {
                "resources": sorted(self.resources),
                "edit": self.edit,
                "delete": self.delete,
                "create": self.create,
            },
            "hostile": self.hostile,
        }

    # --- while a list is answered ----------------------------------------------------
    def page_size(self, asked: int) -> int:
        return min(asked, self.max_page_size) if self.max_page_size else asked

    def after_page(self, store: KeapStore, resource: str, served: list[dict[str, Any]]) -> None:
        """The account changes behind the reader: the page just served is already old."""
        if resource not in self.resources or not served:
            return
        ids = [str(doc["id"]) for doc in served]
        for record_id in ids[: self.edit]:
            found = store.get(resource, record_id)
            if found is None:
                continue
            doc = {**found[0], EDITED[resource]: f"edited while listed ({len(self.done['edited']) + 1})"}
            store.replace(resource, doc)
            self.done["edited"].append({"resource": resource, "id": record_id})
        for record_id in ids[self.edit : self.edit + self.delete]:
            if store.delete(resource, record_id):
                self.done["deleted"].append({"resource": resource, "id": record_id})
        for _ in range(self.create):
            template = store.get(resource, ids[0])
            if template is None:
                continue
            number = len(self.done["created"]) + 1
            doc = {k: v for k, v in template[0].items() if k != "id"}
            if resource == "contacts":
                doc["email_addresses"] = [
                    {"email": f"created.while.listed{number}@restless.example", "field": "EMAIL1"}
                ]
            elif resource == "products":
                doc["sku"] = f"RESTLESS-{number}"
            elif resource == "companies":
                doc["company_name"] = f"Created while listed {number}"
                doc.pop("email_address", None)
            (new_id,) = store.insert_many(resource, [doc])
            self.done["created"].append({"resource": resource, "id": str(new_id)})

    def spoil(self, resource: str, body: dict[str, Any], request_url: str) -> str | None:
        """The body to answer instead (JSON text), when this answer is the hostile one."""
        hostile = self.hostile
        if not hostile or hostile["resource"] != resource:
            return None
        self.seen_requests[resource] = self.seen_requests.get(resource, 0) + 1
        if self.seen_requests[resource] != hostile["request"]:
            return None
        self.hostile = None  # once
        kind = hostile["kind"]
        items = body.get(resource) or []
        if kind == "malformed_json":
            return '{"' + resource + '": [ {"id": '
        if kind == "null_list":
            body = {**body, resource: None}
        elif kind == "not_objects":
            body = {**body, resource: ["not a record", 42, *items[2:]]}
        elif kind == "bad_timestamp" and items:
            body = {**body, resource: [{**items[0], STAMPS[resource]: "yesterday-ish"}, *items[1:]]}
        elif kind == "repeat_token":
            token = (
                request_url.split("page_token=", 1)[1].split("&", 1)[0]
                if "page_token=" in request_url
                else "AAAA"
            )
            body = {**body, "next_page_token": token}
        elif kind == "url_without_token":
            body = {**body, "next_page_token": request_url.split("?", 1)[0] + "?page_size=1000"}
        return json.dumps(body)
