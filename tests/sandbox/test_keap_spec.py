"""sandbox/keap/spec: the derivation from Keap's document, and the data it wrote.

Keap's official document is not part of the project, so the derivation is tested on a
small document written here in the official one's form (its prose included), and the
committed data is checked for what a derivation guarantees."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.keap.spec import SUBSET_PATH, UnknownOperation, operation, subset
from sandbox.keap.spec.derive import (
    OPERATIONS,
    DeriveError,
    derive,
    main,
    parse_filter,
    parse_order_by,
    render,
)

FILTER_PROSE = """Filter to apply, allowed fields are:
- (String) `email` — supports wildcard (e.g. `email==john*`)
- (String) `company_name` - exact match on company name (equality only)
- (Number) `company_id` - supports comparison operators: `==`, `>`, `<`, `>=`, `<=`
- (Set[String]) `ids` — accepts a list of contact IDs (e.g. `ids==1,2,3`)
- (String) `opportunity_ids` — comma-separated list of IDs, maximum 100 IDs
- (String) `phone_number` — the phone number. Requires `phone_fields` to be specified.
- (Set[String]) `phone_fields` — restricts which phone fields to search
- (String) `contact_id` — supports comparison operators: `==`, `>`
(e.g. `contact_id>5` encoded as `contact_id%3E5`)
Note: `ids` and `contact_id` cannot be used together in the same request.
Custom fields can be filtered by their field_name (case-insensitive).
- Text-like fields (text, text area): `==` only, with optional trailing wildcard
For the filters listed above, here are some examples:
- `filter=email%3D%3Djohn%2A`
"""
ORDER_PROSE = """Attribute and direction to order items.
One of the following fields:
- `id`
- `update_time`

One of the following directions:
- `asc`
- `desc`"""


def _document(filter_prose: str = FILTER_PROSE) -> dict[str, Any]:
    """A small document in the official one's form: two operations, prose included."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Keap API", "description": "Keap Public API Documentation", "version": "v2"},
        "paths": {
            "/rest/v2/things": {
                "get": {
                    "operationId": "listThings",
                    "summary": "List things",
                    "description": "Retrieves things",
                    "tags": ["Thing"],
                    "parameters": [
                        {
                            "name": "fields",
                            "in": "query",
                            "description": "Comma-delimited list of Thing properties to include in the response. "
                            "(Fields such as `notes` and `update_time` aren't included, by default.)",
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "explode": False,
                        },
                        {
                            "name": "filter",
                            "in": "query",
                            "description": filter_prose,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "order_by",
                            "in": "query",
                            "description": ORDER_PROSE,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "page_size",
                            "in": "query",
                            "description": "Total number of items to return per page",
                            "schema": {"type": "integer", "format": "int32", "maximum": 1000, "minimum": 0},
                            "example": 0,
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ListThings"}}
                            },
                        },
                        "400": {"description": "Bad Request", **error},
                    },
                }
            },
            "/rest/v2/things/{thing_id}": {
                "parameters": [
                    {"name": "thing_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "delete": {"operationId": "deleteThing", "responses": {"204": {"description": "No Content"}}},
                "patch": {
                    "operationId": "updateThing",
                    "parameters": [
                        {
                            "name": "update_mask",
                            "in": "query",
                            "description": "An optional list of properties to be updated.",
                            "schema": {
                                "type": "array",
                                "items": {"type": "string", "enum": ["name", "description"]},
                                "uniqueItems": True,
                            },
                        }
                    ],
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}},
                        "required": True,
                    },
                    "responses": {"200": {"description": "OK", **error}},
                },
            },
            "/rest/v2/unused": {"get": {"responses": {"200": {"description": "OK"}}}},
        },
        "components": {
            "schemas": {
                "ListThings": {
                    "type": "object",
                    "properties": {
                        "things": {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}},
                        "next_page_token": {"type": "string", "description": "a token"},
                    },
                },
                "Thing": {
                    "type": "object",
                    "description": "A thing",
                    "properties": {
                        "id": {"type": "string"},
                        "description": {"type": "string", "description": "a property named description"},
                        "kind": {"type": "string", "enum": ["A", "B"], "example": "A"},
                        "notes": {"type": "string"},
                        "update_time": {"type": "string"},
                    },
                },
                "Error": {"type": "object", "properties": {"code": {"type": "integer"}}},
                "Unused": {"type": "object"},
            }
        },
    }


THINGS = (("GET", "/things"), ("PATCH", "/things/{thing_id}"), ("DELETE", "/things/{thing_id}"))


def _source(document: dict[str, Any] | None = None) -> bytes:
    return yaml.safe_dump(document or _document(), sort_keys=False, allow_unicode=True).encode()


def test_the_derivation_keeps_what_the_operations_use_and_no_prose() -> None:
    source = _source()
    found = derive(source, "a note", THINGS)
    assert found["provenance"] == {
        "derived_by": "python -m sandbox.keap.spec.derive",
        "operations": ["DELETE /things/{thing_id}", "GET /things", "PATCH /things/{thing_id}"],
        "path_prefix": "/rest/v2",
        "source_note": "a note",
        "source_openapi": "3.1.0",
        "source_sha256": hashlib.sha256(source).hexdigest(),
        "source_title": "Keap API",
        "source_version": "v2",
    }
    assert sorted(found["components"]["schemas"]) == ["Error", "ListThings", "Thing"]  # the closure only
    thing = found["components"]["schemas"]["Thing"]
    assert thing == {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "description": {"type": "string"},  # a property so named stays; its prose goes
            "kind": {"type": "string", "enum": ["A", "B"]},
            "notes": {"type": "string"},
            "update_time": {"type": "string"},
        },
    }
    listing = found["operations"]["GET /things"]
    assert listing["parameters"]["page_size"] == {
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "format": "int32", "maximum": 1000, "minimum": 0},
    }
    assert listing["parameters"]["fields"]["allowed"] == {
        "values": ["id", "description", "kind", "notes", "update_time"],
        "from": "description: Thing properties",
        "adds_optional": False,
        "not_by_default": ["notes", "update_time"],
    }
    assert listing["parameters"]["order_by"]["allowed"] == {
        "fields": ["id", "update_time"],
        "directions": ["asc", "desc"],
    }
    assert listing["responses"] == {
        "200": {"schema": {"$ref": "#/components/schemas/ListThings"}},
        "400": {"schema": {"$ref": "#/components/schemas/Error"}},
    }
    patch = found["operations"]["PATCH /things/{thing_id}"]
    assert patch["parameters"]["thing_id"] == {"in": "path", "required": True, "schema": {"type": "string"}}
    assert patch["request_body"] == {"required": True, "schema": {"$ref": "#/components/schemas/Thing"}}
    assert found["operations"]["DELETE /things/{thing_id}"]["responses"] == {"204": {}}
    text = render(found)
    assert "Retrieves things" not in text and "a token" not in text and "List things" not in text


def test_the_derivation_is_byte_for_byte_the_same_on_the_same_file(tmp_path: Path) -> None:
    source = tmp_path / "keap.yml"
    source.write_bytes(_source())
    assert render(derive(source.read_bytes(), "n", THINGS)) == render(
        derive(source.read_bytes(), "n", THINGS)
    )
    out = tmp_path / "out.json"
    assert main([str(source), "--output", str(out), "--source-note", "n"]) == 2  # not every OPERATION
    document = _document()
    for method, path in OPERATIONS:  # every operation of the real subset, each the same small one
        document["paths"].setdefault("/rest/v2" + path, {})[method.lower()] = document["paths"][
            "/rest/v2/things"
        ]["get"]
    source.write_bytes(_source(document))
    assert main([str(source), "--output", str(out)]) == 0
    first = out.read_bytes()
    assert main([str(source), "--output", str(out)]) == 0
    assert out.read_bytes() == first
    written = json.loads(first)
    assert written["provenance"]["source_note"] == "infusionsoft/keap-sdk sdks/v2/swagger.yml, SDK 2.0.21"
    assert written["provenance"]["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_filter_prose_becomes_data() -> None:
    found = parse_filter(FILTER_PROSE, "here")
    assert found["fields"] == {
        "email": {"type": "String", "operators": ["=="], "wildcard": True, "list": False},
        "company_name": {"type": "String", "operators": ["=="], "wildcard": False, "list": False},
        "company_id": {
            "type": "Number",
            "operators": ["==", ">", "<", ">=", "<="],
            "wildcard": False,
            "list": False,
        },
        "ids": {"type": "Set[String]", "operators": ["=="], "wildcard": False, "list": True},
        "opportunity_ids": {
            "type": "String",
            "operators": ["=="],
            "wildcard": False,
            "list": True,
            "max_items": 100,
        },
        "phone_number": {
            "type": "String",
            "operators": ["=="],
            "wildcard": False,
            "list": False,
            "requires": ["phone_fields"],
        },
        "phone_fields": {"type": "Set[String]", "operators": ["=="], "wildcard": False, "list": True},
        "contact_id": {"type": "String", "operators": ["==", ">"], "wildcard": False, "list": False},
    }
    assert found["joiner"] == ";" and found["custom_fields"] is True
    assert found["exclusive"] == [["contact_id", "ids"]]


@pytest.mark.parametrize(
    ("prose", "complaint"),
    [
        ("Filter to apply:\n- (String) `email`\n", "no 'allowed fields are:'"),
        ("Filter to apply, allowed fields are:\n\n- (String) `email`\n", "outside the list"),
        ("Filter to apply, allowed fields are:\n- (String) email\n", "outside the list"),
        ("Filter to apply, allowed fields are:\n- `email` (String)\n", "empty or unreadable"),
        ("Filter to apply, allowed fields are:\n- (String) `id` — supports operators `>`\n", "operators"),
        (
            "Filter to apply, allowed fields are:\n- (String) `id` — comparison operators: `~=`\n",
            "not a subset",
        ),
        ("Filter to apply, allowed fields are:\n- (String) `name` — no wildcard support\n", "wildcard"),
        ("Filter to apply, allowed fields are:\n- (String) `a`\n- (String) `a`\n", "listed twice"),
        (
            "Filter to apply, allowed fields are:\n- (String) `a`\nNote: `a` and `b` cannot be used together.\n",
            "unknown filter fields",
        ),
    ],
)
def test_filter_prose_it_cannot_read_stops_the_derivation(prose: str, complaint: str) -> None:
    with pytest.raises(DeriveError, match=complaint):
        parse_filter(prose, "GET /things filter")
    with pytest.raises(DeriveError, match=complaint):
        derive(_source(_document(prose)), "n", THINGS)


@pytest.mark.parametrize(
    "prose",
    [
        "Attribute and direction.\nOne of the following fields:\n- `id`\n",
        "One of the following fields:\n- `id`\n\nOne of the following directions:\n- `up`\n",
        "Sort by `id` or `name`, asc or desc.",
    ],
)
def test_order_by_prose_it_cannot_read_stops_the_derivation(prose: str) -> None:
    with pytest.raises(DeriveError, match="order_by"):
        parse_order_by(prose, "GET /things order_by")


def test_fields_and_refs_it_cannot_read_stop_the_derivation() -> None:
    document = _document()
    document["paths"]["/rest/v2/things"]["get"]["parameters"][0]["description"] = "Properties to include."
    with pytest.raises(DeriveError, match="no enum and no list"):
        derive(_source(document), "n", THINGS)
    document = _document()
    del document["components"]["schemas"]["Error"]
    with pytest.raises(DeriveError, match="#/components/schemas/Error does not resolve"):
        derive(_source(document), "n", THINGS)
    with pytest.raises(DeriveError, match=r"GET /nothing: not in the document"):
        derive(_source(), "n", (("GET", "/nothing"),))


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {node["$ref"]} if "$ref" in node else set().union(*map(_refs, node.values()))
    if isinstance(node, list):
        return set().union(*map(_refs, node))
    return set()


def _keywords(node: Any, out: set[str]) -> set[str]:
    """Every key of a schema except property names."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.add(key)
            if key == "properties":
                for schema in value.values():
                    _keywords(schema, out)
            elif key not in ("enum", "default", "const"):
                _keywords(value, out)
    elif isinstance(node, list):
        for value in node:
            _keywords(value, out)
    return out


def test_the_committed_subset_is_what_a_derivation_guarantees() -> None:
    data = subset()
    assert SUBSET_PATH.read_text(encoding="utf-8") == render(data)  # sorted keys, as derive writes
    keys = sorted(f"{m} {p}" for m, p in OPERATIONS)
    assert data["provenance"]["operations"] == keys == sorted(data["operations"])
    provenance = data["provenance"]
    assert provenance["source_title"] == "Keap API" and provenance["source_version"] == "v2"
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["source_sha256"])
    assert provenance["source_note"]
    schemas = data["components"]["schemas"]
    refs = _refs(data)
    assert refs == {f"#/components/schemas/{name}" for name in schemas}  # closed, and nothing extra
    every_schema = [
        *schemas.values(),
        *(p["schema"] for op in data["operations"].values() for p in op["parameters"].values()),
        *(op["request_body"]["schema"] for op in data["operations"].values() if "request_body" in op),
        *(r["schema"] for op in data["operations"].values() for r in op["responses"].values() if r),
    ]
    assert not _keywords(every_schema, set()) & {"description", "summary", "example", "examples"}
    for op in data["operations"].values():
        assert set(op) <= {"operation_id", "parameters", "request_body", "responses"}
        for param in op["parameters"].values():
            assert set(param) <= {"in", "required", "schema", "style", "explode", "allowed"}
    for key, op in data["operations"].items():  # what the sandbox reads from the prose is there
        for name in ("filter", "order_by", "fields"):
            if name in op["parameters"]:
                assert op["parameters"][name]["allowed"], (key, name)


def test_an_operation_not_in_the_subset_says_to_re_derive() -> None:
    with pytest.raises(UnknownOperation, match="re-derive"):
        operation("GET", "/tags")
    assert operation("get", "/opportunities/stages")["operation_id"] == "listOpportunityStages"
