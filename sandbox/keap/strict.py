"""Every request checked against Keap's own document (sandbox/keap/spec), the way Keap
checks it: what Keap answers 400, the sandbox answers 400, naming the parameter or
property at fault.

- query parameters the operation does not declare; integers out of their range or not
  integers; values outside an enum (`update_mask`, `duplicate_option`, opportunity `fields`);
- `fields` values outside what the document lists for the operation, and `fields` where
  the operation has no such parameter (products);
- `filter`: fields the document does not list (the sandbox defines no custom fields),
  operators a field does not support, malformed clauses, lists longer than allowed, fields
  that cannot be combined or that need another;
- `order_by`: fields and directions the document does not list;
- request bodies: properties the schema does not declare, anywhere in the body, and
  values of the wrong type, length or enum (jsonschema against the document's schema).

A `null` in a body is Keap's proto3 JSON: it stands for "no value" (a PATCH clears the
property it names), so nulls are left out before the schema check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sandbox.keap.resources import KeapValidationError
from sandbox.keap.spec import subset

SCHEMA_REF = "#/components/schemas/"
_CLAUSE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>==|!=|>=|<=|=|>|<)(?P<value>.*)$", re.DOTALL)
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Clause:
    """One `field<op>value` clause of a filter; `spec` is the field's entry in the document."""

    name: str
    op: str
    value: str
    spec: dict[str, Any]

    @property
    def values(self) -> list[str]:
        """A list field's values (`ids==1,2,3`)."""
        return [v.strip() for v in self.value.split(",") if v.strip()]


@dataclass
class Query:
    """A request's query parameters, checked and parsed."""

    params: dict[str, Any]
    filters: list[Clause]
    order: tuple[str, str] | None

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)


def declares(op: dict[str, Any], name: str) -> bool:
    param = op["parameters"].get(name)
    return param is not None and param["in"] == "query"


def check_query(key: str, op: dict[str, Any], items: list[tuple[str, str]]) -> Query:
    """`key` is "GET /contacts"; `items` the query as (name, value) pairs, in order."""
    raw: dict[str, list[str]] = {}
    for name, value in items:
        raw.setdefault(name, []).append(value)
    params: dict[str, Any] = {}
    for name, values in raw.items():
        param = op["parameters"].get(name)
        if param is None or param["in"] != "query":
            declared = sorted(n for n, p in op["parameters"].items() if p["in"] == "query")
            raise KeapValidationError(
                name, f"{key} has no query parameter '{name}' (it declares: {', '.join(declared) or 'none'})"
            )
        params[name] = _value(key, name, param, values)
    filters = (
        _filters(key, op["parameters"]["filter"]["allowed"], params["filter"]) if "filter" in params else []
    )
    order = (
        _order(key, op["parameters"]["order_by"]["allowed"], params["order_by"])
        if "order_by" in params
        else None
    )
    if "fields" in params:
        allowed = op["parameters"]["fields"]["allowed"]["values"]
        wrong = [v for v in params["fields"] if v not in allowed]
        if wrong:
            raise KeapValidationError(
                "fields",
                f"'{wrong[0]}' is not a value the fields parameter of {key} takes ({', '.join(allowed)})",
            )
    return Query(params, filters, order)


def _value(key: str, name: str, param: dict[str, Any], values: list[str]) -> Any:
    schema = param["schema"]
    kind = schema.get("type")
    if kind == "array":
        # comma-separated (`fields=a,b`, Keap's own samples for update_mask) or repeated
        items = [item.strip() for value in values for item in value.split(",") if item.strip()]
        enum = (schema.get("items") or {}).get("enum")
        for item in items:
            if enum is not None and item not in enum:
                raise KeapValidationError(
                    name, f"'{item}' is not one of the values {name} takes in {key} ({', '.join(enum)})"
                )
        if schema.get("uniqueItems") and len(set(items)) < len(items):
            twice = next(i for i in items if items.count(i) > 1)
            raise KeapValidationError(name, f"'{twice}' is given more than once")
        return items
    if len(values) > 1:
        raise KeapValidationError(name, f"is given {len(values)} times; {key} takes it once")
    value = values[0]
    if kind == "integer":
        if not _INTEGER.match(value.strip()):
            raise KeapValidationError(name, f"'{value}' is not an integer")
        number = int(value)
        if "minimum" in schema and number < schema["minimum"]:
            raise KeapValidationError(name, f"{number} is below the minimum {schema['minimum']}")
        if "maximum" in schema and number > schema["maximum"]:
            raise KeapValidationError(name, f"{number} is above the maximum {schema['maximum']}")
        return number
    if schema.get("enum") is not None and value not in schema["enum"]:
        raise KeapValidationError(name, f"'{value}' is not one of {schema['enum']}")
    return value


def _filters(key: str, allowed: dict[str, Any], text: str) -> list[Clause]:
    fields: dict[str, Any] = allowed["fields"]
    clauses: list[Clause] = []
    for part in text.split(allowed["joiner"]):
        if not part.strip():
            continue
        match = _CLAUSE.match(part.strip())
        if match is None:
            raise KeapValidationError(
                "filter",
                f"'{part}' is not a clause of the form <field><operator><value> (operators: ==, >, <, >=, <=)",
            )
        name, op, value = match["name"], match["op"], match["value"]
        spec = fields.get(name)
        if spec is None:
            extra = " or custom field (the sandbox defines none)" if allowed["custom_fields"] else ""
            raise KeapValidationError(
                "filter", f"'{name}' is not a field{extra} {key} filters on ({', '.join(sorted(fields))})"
            )
        if op not in spec["operators"]:
            raise KeapValidationError(
                "filter",
                f"'{name}' supports only {', '.join(spec['operators'])}: '{part.strip()}' uses '{op}'",
            )
        clause = Clause(name, op, value, spec)
        if spec["list"] and len(clause.values) > spec.get("max_items", len(clause.values)):
            raise KeapValidationError("filter", f"'{name}' takes at most {spec['max_items']} values")
        clauses.append(clause)
    names = {c.name for c in clauses}
    for pair in allowed["exclusive"]:
        if set(pair) <= names:
            raise KeapValidationError("filter", f"'{pair[0]}' and '{pair[1]}' cannot be used together")
    for clause in clauses:
        for needed in clause.spec.get("requires", []):
            if needed not in names:
                raise KeapValidationError("filter", f"'{clause.name}' requires '{needed}' in the same filter")
    return clauses


def _order(key: str, allowed: dict[str, Any], text: str) -> tuple[str, str]:
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise KeapValidationError("order_by", f"'{text}' is not '<field>' or '<field> <direction>'")
    name = parts[0]
    direction = parts[1] if len(parts) > 1 else "asc"
    if name not in allowed["fields"]:
        raise KeapValidationError(
            "order_by", f"'{name}' is not a field {key} orders by ({', '.join(allowed['fields'])})"
        )
    if direction not in allowed["directions"]:
        raise KeapValidationError(
            "order_by", f"'{direction}' is not a direction ({', '.join(allowed['directions'])})"
        )
    return name, direction


# --- bodies ------------------------------------------------------------------------------------


def schema_named(ref: str) -> dict[str, Any]:
    return subset()["components"]["schemas"][ref[len(SCHEMA_REF) :]]  # type: ignore[no-any-return]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schema_named(schema["$ref"])
    return schema


def body_properties(op: dict[str, Any]) -> frozenset[str]:
    """The top-level properties an operation's request body declares."""
    return frozenset(_resolve(op["request_body"]["schema"]).get("properties", {}))


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _undeclared(instance: Any, schema: dict[str, Any], where: list[Any]) -> tuple[list[Any], str] | None:
    ref = schema.get("$ref")
    schema = _resolve(schema)
    if isinstance(instance, dict) and "properties" in schema:
        for name, value in instance.items():
            if name not in schema["properties"]:
                return [*where, name], ref[len(SCHEMA_REF) :] if ref else "the schema"
            found = _undeclared(value, schema["properties"][name], [*where, name])
            if found:
                return found
    elif isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            found = _undeclared(item, schema["items"], [*where, index])
            if found:
                return found
    return None


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@cache
def _validator(ref: str) -> Draft202012Validator:
    registry: Registry = Registry().with_resource(
        "urn:keap-v2-subset", Resource.from_contents(subset(), default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": "urn:keap-v2-subset" + ref}, registry=registry)


def _message(error: ValidationError) -> tuple[str, str]:
    where = list(error.absolute_path)
    if error.validator == "required":
        missing = next(n for n in error.validator_value if n not in error.instance)
        return _path([*where, missing]), "is required"
    if error.validator == "type":
        return _path(where), f"must be of type {error.validator_value} (got {error.instance!r})"
    if error.validator == "maxLength":
        return _path(where), f"must be at most {error.validator_value} characters"
    if error.validator == "enum":
        return _path(where), f"'{error.instance}' is not one of {error.validator_value}"
    return _path(where), error.message


def check_body(
    key: str, op: dict[str, Any], body: dict[str, Any], hints: dict[str, str] | None = None
) -> None:
    """The body against the operation's request schema; raises on the first fault."""
    schema = op["request_body"]["schema"]
    found = _undeclared(body, schema, [])
    if found:
        where, schema_name = found
        raise KeapValidationError(_path(where), f"is not a property Keap's {schema_name} declares ({key})")
    if "$ref" not in schema:
        raise KeapValidationError("body", f"{key}: the request schema is not a named schema")
    errors = sorted(
        _validator(schema["$ref"]).iter_errors(_without_nulls(body)),
        key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)),
    )
    if errors:
        field_name, message = _message(errors[0])
        hint = (hints or {}).get(field_name)
        raise KeapValidationError(field_name, f"{message}: {hint}" if hint else message)
