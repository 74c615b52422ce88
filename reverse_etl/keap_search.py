"""Finding a record the sync created in Keap again, when the answer to its create was lost.

Keap's POST is not idempotent, so every create is recorded first as an intent with a
*marker*: what the new record can be found by. Before a second attempt, the sync lists
the Keap records that match the marker and were created after the intent
(`create_time`), and links the one it finds. Markers, in order (docs/keap-api.md, and
the `filter` descriptions of Keap's official document):

| mapping | marker | Keap filter |
|---|---|---|
| products | sku, else name | `sku`, `name`: equality, or a prefix with `*` |
| contacts | EMAIL1, else given + family name (and the company) | `email`, `given_name`, `family_name`: equality, or a prefix with `*` |
| customers | company_name | `company_name`: equality only; `name`: a prefix with `*` |

Keap's filter syntax reserves characters (`;` joins clauses, `==` `<` `>` `=` are
operators, a trailing `*` is the wildcard, `,` separates the items of list filters) and
has no quoting. A value holding one is searched by the longest prefix before it, with
the wildcard where the field takes one, and compared exactly here; a value that cannot be
searched that way (the prefix is shorter than three characters) falls back to the next
marker, and with none left the create is held for review with the reason. Never for the
whole run: one record's value concerns that record only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import registry
from connectors.keap import KeapClient
from support.times import parse_time

RESERVED = frozenset(";,=<>*!")
MIN_PREFIX = 3
MAX_PAGES = 5  # a prefix matching more than five pages of records is no marker


@dataclass(frozen=True)
class Clause:
    field: str  # the property compared on our side
    value: str | None  # its value in the record created (None: the record has none)
    filter_field: str | None  # the Keap filter that searches it exactly
    prefix_field: str | None  # the Keap filter that takes a prefix with `*`
    fold_case: bool = False  # emails compare case-insensitively


class Unsearchable(Exception):
    """The record has no value Keap's filters can find it by."""


def _clause_filter(clause: Clause) -> str | None:
    """`field==value`, or `field==prefix*`; None when the clause adds nothing to search by."""
    value = clause.value
    if value is None:
        return None
    if not (RESERVED & set(value)) and value == value.strip() and clause.filter_field:
        return f"{clause.filter_field}=={value}"
    cut = next((i for i, ch in enumerate(value) if ch in RESERVED), len(value))
    prefix = value[:cut].rstrip()
    if clause.prefix_field and len(prefix) >= MIN_PREFIX:
        return f"{clause.prefix_field}=={prefix}*"
    raise Unsearchable(f"{clause.field} {value!r}")


def _email1(payload: dict[str, Any]) -> str | None:
    return next(
        (e.get("email") for e in payload.get("email_addresses") or [] if e.get("field") == "EMAIL1"), None
    )


def markers(mapping: str, payload: dict[str, Any]) -> list[list[Clause]]:
    """The ways to find the record this payload creates, best first (each: clauses, all must
    hold), as the registry lists them for the mapping's Keap resource."""
    if mapping not in registry.mapping_names():
        return []
    return [
        [
            Clause(c.field, _value(payload, c.field), c.filter_field, c.prefix_field, c.fold_case)
            for c in marker
        ]
        for marker in registry.mapping(mapping).keap.markers
    ]


def marker_for(mapping: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The first marker that has values and can be searched: what the intent records. Raises
    Unsearchable, saying why, when none can."""
    problems = []
    for clauses in markers(mapping, payload):
        if not any(c.value for c in clauses if c.filter_field or c.prefix_field):
            continue
        try:
            filters = [
                f for f in (_clause_filter(c) for c in clauses if c.filter_field or c.prefix_field) if f
            ]
        except Unsearchable as exc:
            problems.append(str(exc))
            continue
        compare = {c.field: c.value for c in clauses}
        fold = [c.field for c in clauses if c.fold_case]
        label = ", ".join(f"{k}={v}" for k, v in compare.items() if v is not None)
        return {"filter": ";".join(filters), "compare": compare, "fold_case": fold, "label": label}
    if problems:
        raise Unsearchable(
            "no value Keap's filters can find it by if the answer to its create were lost: "
            + "; ".join(problems)
            + " (a reserved character ; , = < > * ! too near its start): fix the value or create it in Keap by hand"
        )
    raise Unsearchable(
        "nothing to find it by in Keap if the answer to its create were lost"
        + {"contacts": " (no email and no name)", "products": " (no SKU and no name)"}.get(mapping, "")
        + ": add one, or create it in Keap by hand"
    )


def _value(item: dict[str, Any], field: str) -> str | None:
    if field == "email":
        return _email1(item)
    if field == "company":
        company = (item.get("company") or {}).get("id")
        return str(company) if company else None
    value = item.get(field)
    return None if value is None else str(value)


class TooMany(Exception):
    """More records match the search's prefix than a search reads: no conclusion either way."""


def find(keap: KeapClient, resource: str, marker: dict[str, Any], created_since: datetime) -> list[str]:
    """The ids of the Keap records matching the marker exactly, created at or after
    `created_since` (Keap's clock). Raises TooMany rather than answer from part of them."""
    params: dict[str, Any] = {"filter": marker["filter"]}
    wanted = registry.keap_resource(resource).search_fields  # what a search needs back
    if wanted:
        params["fields"] = wanted
    fold = set(marker.get("fold_case") or [])
    found = []
    for number, page in enumerate(keap.pages(resource, params, page_size=1000), start=1):
        if number > MAX_PAGES:  # a partial answer could miss it
            raise TooMany(f"more than {MAX_PAGES} pages of Keap {resource} match {marker['filter']}")
        for item in page:
            created = parse_time(item.get("create_time"))
            if created is None or created < created_since:
                continue
            same = all(
                (_value(item, f) or "").casefold() == (v or "").casefold()
                if f in fold
                else _value(item, f) == v
                for f, v in marker["compare"].items()
            )
            if same:
                found.append(str(item["id"]))
    return found


def keap_time(local: datetime, offset_s: float | None, uncertainty_s: float | None) -> datetime:
    """A moment on our clock as the earliest it can be on Keap's: with the measured offset
    less its uncertainty and a second for Keap's own servers; without one, ten minutes earlier."""
    if offset_s is None:
        return local - timedelta(minutes=10)
    return local + timedelta(seconds=offset_s - (uncertainty_s or 0) - 1)
