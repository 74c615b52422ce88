"""Keap's official OpenAPI document for REST v2, as far as crmsync uses it, as a validator.

The tests read `sandbox/keap/spec/keap-v2-subset.json` (derived from Keap's document by
`python -m sandbox.keap.spec.derive`; see the README beside it) and check the
sandbox's answers, and the client's requests, against it. Keap's schemas allow any
extra property, so `assert_shape` also insists that every property is one the document
declares.

`request_problems` checks a request the way Keap's document allows it, written apart
from the sandbox's own checks (sandbox.keap.strict), so that one can catch the other.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SUBSET = Path(__file__).resolve().parents[1] / "sandbox" / "keap" / "spec" / "keap-v2-subset.json"
REDERIVE = (
    "re-derive it: python -m sandbox.keap.spec.derive PATH_TO_OFFICIAL_YML (sandbox/keap/spec/README.md)"
)


@cache
def document() -> dict[str, Any]:
    return json.loads(SUBSET.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@cache
def _registry() -> Registry:
    return Registry().with_resource(
        "urn:keap", Resource.from_contents(document(), default_specification=DRAFT202012)
    )


def operation(method: str, path: str) -> dict[str, Any]:
    key = f"{method.upper()} {path}"
    found = document()["operations"].get(key)
    if found is None:
        raise KeyError(f"{key} is not in {SUBSET.name}: add it to OPERATIONS in derive.py and {REDERIVE}")
    return found  # type: ignore[no-any-return]


def response_schema(method: str, path: str, status: int) -> dict[str, Any]:
    return operation(method, path)["responses"][str(status)]["schema"]  # type: ignore[no-any-return]


def request_schema(method: str, path: str) -> dict[str, Any]:
    op = operation(method, path)
    if "request_body" not in op:
        raise KeyError(f"{method} {path} takes no request body in Keap's document")
    return op["request_body"]["schema"]  # type: ignore[no-any-return]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = document()["components"]["schemas"][name]
    return schema


def undeclared(instance: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Properties the document does not declare, anywhere in the instance."""
    schema = _resolve(schema)
    found: list[str] = []
    if isinstance(instance, dict) and "properties" in schema:
        for key, value in instance.items():
            if key not in schema["properties"]:
                found.append(f"{where}.{key}")
            else:
                found += undeclared(value, schema["properties"][key], f"{where}.{key}")
    elif isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            found += undeclared(item, schema["items"], f"{where}[{index}]")
    return found


def shape_problems(instance: Any, schema: dict[str, Any]) -> list[str]:
    """What does not match the schema, and what it does not declare."""
    ref = schema["$ref"].replace("#/", "urn:keap#/") if "$ref" in schema else None
    validator = Draft202012Validator({"$ref": ref} if ref else schema, registry=_registry())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    return [f"does not match Keap's schema: {e}" for e in errors] + [
        f"a property Keap's document does not declare: {p}" for p in undeclared(instance, schema)
    ]


def assert_shape(instance: Any, schema: dict[str, Any]) -> None:
    """Valid against the schema, and no property the document does not declare."""
    problems = shape_problems(instance, schema)
    mismatch = [p for p in problems if p.startswith("does not match")]
    assert not mismatch, f"does not match Keap's schema: {mismatch[:5]}"
    assert not problems, f"properties Keap's document does not declare: {problems[:10]}"


def assert_answer(response: Any, method: str, path: str) -> None:
    """An httpx response matches what the document says this operation answers."""
    assert str(response.status_code) in operation(method, path)["responses"], (
        f"{method} {path}: status {response.status_code} is not one the document lists"
    )
    if response.status_code == 204:
        return
    assert_shape(response.json(), response_schema(method, path, response.status_code))


# --- requests ------------------------------------------------------------------------------------


def match_operation(method: str, url_path: str, prefix: str) -> tuple[str, dict[str, str]] | None:
    """The document's path for a request path under `prefix` (…/crm/rest/v2), and its path
    parameters; literal paths win over templated ones (/opportunities/stages)."""
    if not url_path.startswith(prefix):
        return None
    rest = url_path[len(prefix) :]
    candidates = []
    for key in document()["operations"]:
        op_method, template = key.split(" ", 1)
        if op_method != method.upper():
            continue
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        found = re.match(pattern, rest)
        if found:
            candidates.append((template.count("{"), template, found.groupdict()))
    if not candidates:
        return None
    _, template, params = min(candidates)
    return template, params


def _comma_list(values: list[str]) -> list[str]:
    return [item for value in values for item in value.split(",") if item]


def _query_problems(op: dict[str, Any], query: dict[str, list[str]]) -> list[str]:
    problems = []
    for name, values in query.items():
        param = op["parameters"].get(name)
        if param is None or param["in"] != "query":
            problems.append(f"query parameter '{name}' is not declared")
            continue
        schema = param["schema"]
        if schema["type"] == "array":
            items = _comma_list(values)
            enum = schema["items"].get("enum")
            allowed = enum or (param.get("allowed") or {}).get("values")
            problems += [
                f"{name}: '{v}' is not allowed (allowed: {allowed})"
                for v in items
                if allowed and v not in allowed
            ]
            if schema.get("uniqueItems") and len(items) != len(set(items)):
                problems.append(f"{name}: a value given twice in {items}")
            continue
        if len(values) != 1:
            problems.append(f"{name}: given {len(values)} times")
            continue
        value = values[0]
        if schema["type"] == "integer":
            if not value.lstrip("-").isdigit():
                problems.append(f"{name}: '{value}' is not an integer")
            elif not schema.get("minimum", -(2**63)) <= int(value) <= schema.get("maximum", 2**63):
                problems.append(
                    f"{name}: {value} is outside {schema.get('minimum')}..{schema.get('maximum')}"
                )
        elif "enum" in schema and value not in schema["enum"]:
            problems.append(f"{name}: '{value}' is not in {schema['enum']}")
        if name == "filter":
            problems += _filter_problems(param["allowed"], value)
        elif name == "order_by":
            words, allowed = value.split(), param["allowed"]
            if not (
                1 <= len(words) <= 2
                and words[0] in allowed["fields"]
                and (len(words) == 1 or words[1] in allowed["directions"])
            ):
                problems.append(f"order_by: '{value}' is not <{'|'.join(allowed['fields'])}> [asc|desc]")
    return problems


def _filter_problems(allowed: dict[str, Any], text: str) -> list[str]:
    problems, names = [], set()
    for clause in text.split(allowed["joiner"]):
        found = re.fullmatch(r"(\w+)(==|>=|<=|>|<)(.*)", clause, re.DOTALL)
        if not found:
            problems.append(f"filter: clause '{clause}' is not <field><operator><value>")
            continue
        name, op, value = found.groups()
        names.add(name)
        field = allowed["fields"].get(name)
        if field is None:
            problems.append(
                f"filter: '{name}' is not a field the document lists ({sorted(allowed['fields'])})"
            )
        elif op not in field["operators"]:
            problems.append(f"filter: '{name}' takes {field['operators']}, not '{op}'")
        elif field["list"] and len(value.split(",")) > field.get("max_items", 10**9):
            problems.append(f"filter: '{name}' takes at most {field['max_items']} values")
    problems += [f"filter: {pair} together" for pair in allowed["exclusive"] if set(pair) <= names]
    problems += [
        f"filter: '{name}' without '{needed}'"
        for name in names & set(allowed["fields"])
        for needed in allowed["fields"][name].get("requires", [])
        if needed not in names
    ]
    return problems


def request_problems(method: str, url: str, body: bytes | None, prefix: str) -> list[str]:
    """What Keap's document does not allow in this request (empty when all is allowed)."""
    parts = urlsplit(url)
    found = match_operation(method, parts.path, prefix)
    if found is None:
        return [f"{method} {parts.path}: no such operation in {SUBSET.name} ({REDERIVE})"]
    template, _ = found
    op = operation(method, template)
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    problems = _query_problems(op, query)
    if "request_body" in op:
        if not body:
            problems.append("no request body")
        else:
            payload = json.loads(body)
            schema = op["request_body"]["schema"]
            # a null is proto3 JSON's "no value" (a PATCH clears the property it names): the
            # schema speaks of values only
            present = _drop_nulls(payload)
            problems += [p for p in shape_problems(present, schema) if p.startswith("does not match")]
            problems += [
                f"a property Keap's document does not declare: {p}" for p in undeclared(payload, schema)
            ]
    elif body:
        problems.append(f"a body on {method} {template}, which takes none")
    return [f"{method} {template}: {p}" for p in problems]


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value
