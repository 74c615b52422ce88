"""Derive, from Keap's official OpenAPI document for REST v2, the part crmsync uses.

    python -m sandbox.keap.spec.derive PATH_TO_OFFICIAL_YML [--source-note "..."] [--output PATH]

Writes `keap-v2-subset.json` beside this file: each operation the sync and the sandbox
call, with its parameters (types, ranges, enums), request body and responses, the
closure of the component schemas they reference (every `$ref` resolves inside the
subset), and no prose. What the document says only in prose is parsed into data:
the fields and operators `filter` allows, the fields and directions of `order_by`, and
the values `fields` takes where no enum lists them. When the prose is not in a form
this script understands, it stops with an error rather than guess.

The output is deterministic: the same source file gives byte-identical output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

PREFIX = "/rest/v2"
DEFAULT_NOTE = "infusionsoft/keap-sdk sdks/v2/swagger.yml, SDK 2.0.21"
OUTPUT = Path(__file__).with_name("keap-v2-subset.json")

# Every operation of the subset (paths under PREFIX). The product calls (connectors/keap.py,
# pipelines/keap/, reverse_etl/keap_target.py): the lists with their filters, orders and paging (the
# ingest, the full pass, the push's re-read and its search for a create that lost its
# answer), POST (the reverse flow), PATCH with update_mask, DELETE, GET one (KeapClient.get),
# and the list of stages. The sandbox (sandbox/keap/app.py) serves all of these, plus
# POST /opportunities, which the sync never sends (it creates no opportunity in Keap).
RESOURCES = (
    ("contacts", "contact_id"),
    ("companies", "company_id"),
    ("opportunities", "opportunity_id"),
    ("products", "product_id"),
)
OPERATIONS: tuple[tuple[str, str], ...] = (
    *(
        operation
        for resource, id_name in RESOURCES
        for operation in (
            ("GET", f"/{resource}"),
            ("POST", f"/{resource}"),
            ("GET", f"/{resource}/{{{id_name}}}"),
            ("PATCH", f"/{resource}/{{{id_name}}}"),
            ("DELETE", f"/{resource}/{{{id_name}}}"),
        )
    ),
    ("GET", "/opportunities/stages"),
)

PROSE_KEYS = frozenset({"description", "summary", "example", "examples", "externalDocs", "tags"})
FILTER_OPERATORS = ("==", ">", "<", ">=", "<=")
FILTER_JOINER = ";"  # Keap joins clauses with ';' (the document's examples send it encoded, %3B)
SCHEMA_REF = "#/components/schemas/"


class DeriveError(Exception):
    """The official document is not in a form this script understands: re-read it and adapt."""


# --- prose parsers -------------------------------------------------------------------------------

_FILTER_BULLET = re.compile(
    r"^- \((?P<type>[A-Za-z]+(?:\[[A-Za-z]+\])?)\) `(?P<name>[A-Za-z_][A-Za-z0-9_]*)`(?P<rest>.*)$"
)
_COMPARISON = re.compile(r"comparison operators?:\s*(?P<ops>(?:`[^`]+`(?:,\s*|\s+|$))+)")
_EXCLUSIVE = re.compile(r"`([A-Za-z0-9_]+)` and `([A-Za-z0-9_]+)` cannot be used together")


def parse_filter(description: str, where: str) -> dict[str, Any]:
    """The fields a `filter` allows and how each can be compared, from the description's
    bullet list (`- (String) `email` — supports wildcard ...`)."""
    lines = description.splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip().endswith("allowed fields are:")), None)
    if start is None:
        raise DeriveError(f"{where}: the filter description has no 'allowed fields are:' list")
    fields: dict[str, dict[str, Any]] = {}
    current: str | None = None
    consumed: set[int] = set()
    for index in range(start + 1, len(lines)):
        line = lines[index].rstrip()
        match = _FILTER_BULLET.match(line)
        if match:
            current = match["name"]
            if current in fields:
                raise DeriveError(f"{where}: filter field '{current}' is listed twice")
            fields[current] = {"type": match["type"], "rest": match["rest"]}
            consumed.add(index)
        elif current is not None and line.startswith("(") and not line.startswith("- "):
            fields[current]["rest"] += " " + line  # a continuation: `(e.g. ...)`
            consumed.add(index)
        else:
            break
    stray = [line for i, line in enumerate(lines) if line.startswith("- (") and i not in consumed]
    if stray:
        raise DeriveError(f"{where}: filter bullets outside the list or not understood: {stray}")
    if not fields:
        raise DeriveError(f"{where}: the filter list after 'allowed fields are:' is empty or unreadable")
    parsed: dict[str, Any] = {}
    for name, found in fields.items():
        parsed[name] = _filter_field(found["type"], found["rest"], f"{where} filter field '{name}'")
    exclusive = [sorted(pair) for pair in _EXCLUSIVE.findall(description)]
    for pair in exclusive:
        unknown = [n for n in pair if n not in parsed]
        if unknown:
            raise DeriveError(f"{where}: 'cannot be used together' names unknown filter fields {unknown}")
    return {
        "fields": parsed,
        "joiner": FILTER_JOINER,
        "custom_fields": bool(re.search(r"custom field", description, re.IGNORECASE)),
        "exclusive": sorted(exclusive),
    }


def _filter_field(value_type: str, rest: str, where: str) -> dict[str, Any]:
    comparison = _COMPARISON.search(rest)
    if comparison:
        operators = re.findall(r"`([^`]+)`", comparison["ops"])
        unknown = [op for op in operators if op not in FILTER_OPERATORS]
        if unknown or "==" not in operators:
            raise DeriveError(
                f"{where}: comparison operators {operators} are not a subset of {FILTER_OPERATORS}"
            )
        operators = [op for op in FILTER_OPERATORS if op in operators]
    elif re.search(r"operator", rest, re.IGNORECASE):
        raise DeriveError(f"{where}: mentions operators in a form not understood: {rest.strip()!r}")
    else:
        operators = ["=="]
    if re.search(r"\b(no|not|without)\b[^.]*wildcard", rest, re.IGNORECASE):
        raise DeriveError(f"{where}: a wildcard clause not understood: {rest.strip()!r}")
    wildcard = bool(re.search(r"wildcard", rest, re.IGNORECASE))
    if wildcard and operators != ["=="]:
        raise DeriveError(f"{where}: a wildcard on a field with comparison operators: {rest.strip()!r}")
    is_list = value_type.startswith(("Set[", "List[")) or bool(re.search(r"\blist of\b", rest))
    out: dict[str, Any] = {
        "type": value_type,
        "operators": operators,
        "wildcard": wildcard,
        "list": is_list,
    }
    maximum = re.search(r"maximum (\d+)", rest)
    if maximum:
        if not is_list:
            raise DeriveError(f"{where}: a maximum on a field that is not a list: {rest.strip()!r}")
        out["max_items"] = int(maximum[1])
    requires = re.findall(r"Requires `([A-Za-z0-9_]+)`", rest)
    if requires:
        out["requires"] = requires
    return out


_ORDER_FIELDS = re.compile(r"One of the following fields:\s*\n(?P<items>(?:\s*- `[^`]+`[ \t]*(?:\n|$))+)")
_ORDER_DIRECTIONS = re.compile(
    r"One of the following directions:\s*\n(?P<items>(?:\s*- `[^`]+`[ \t]*(?:\n|$))+)"
)


def parse_order_by(description: str, where: str) -> dict[str, Any]:
    """The fields and directions `order_by` takes, from its description's two lists."""
    fields = _ORDER_FIELDS.search(description)
    directions = _ORDER_DIRECTIONS.search(description)
    if not (fields and directions):
        raise DeriveError(
            f"{where}: the order_by description lacks 'One of the following fields:' or "
            "'One of the following directions:' lists"
        )
    names = re.findall(r"`([^`]+)`", fields["items"])
    ways = re.findall(r"`([^`]+)`", directions["items"])
    if not set(ways) <= {"asc", "desc"}:
        raise DeriveError(f"{where}: order_by directions {ways} are not asc/desc")
    return {"fields": names, "directions": ways}


_AVAILABLE = re.compile(r"Available fields are:\s*(?P<items>[^)]*)\)")
_NOT_DEFAULT = re.compile(r"Fields such as (?P<items>.*?) aren't included, by default")
_PROPERTIES_OF = re.compile(r"list of (?P<schema>[A-Z][A-Za-z0-9_]*) properties")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def parse_fields(param: dict[str, Any], schemas: dict[str, Any], where: str) -> dict[str, Any]:
    """What `fields` takes: the schema's enum; else the description's 'Available fields
    are: ...' list; else, when it says 'list of <Schema> properties', that schema's properties.
    `adds_optional`: the values are optional properties added to the default ones (the
    list is not narrowed to them)."""
    description = param.get("description") or ""
    items = (param.get("schema") or {}).get("items") or {}
    if items.get("enum"):
        values, source = list(items["enum"]), "schema enum"
    elif (available := _AVAILABLE.search(description)) is not None:
        values = [v.strip().strip("`").strip() for v in available["items"].split(",")]
        source = "description: Available fields are"
    elif (properties_of := _PROPERTIES_OF.search(description)) is not None:
        schema = properties_of["schema"]
        if schema not in schemas or "properties" not in schemas[schema]:
            raise DeriveError(f"{where}: fields names '{schema}' properties, and no such schema exists")
        values, source = list(schemas[schema]["properties"]), f"description: {schema} properties"
    else:
        raise DeriveError(
            f"{where}: the fields parameter has no enum and no list of values in its description"
        )
    bad = [v for v in values if not _NAME.match(v)]
    if bad or not values:
        raise DeriveError(f"{where}: fields values not understood: {bad or values}")
    out: dict[str, Any] = {
        "values": values,
        "from": source,
        "adds_optional": bool(re.search(r"\boptional\b", description)),
    }
    hidden = _NOT_DEFAULT.search(description)
    if hidden:
        out["not_by_default"] = re.findall(r"`([^`]+)`", hidden["items"])
        if not out["not_by_default"]:
            raise DeriveError(f"{where}: 'aren't included, by default' lists nothing")
    return out


# --- the subset ---------------------------------------------------------------------------------


NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
LITERALS = frozenset({"enum", "const", "default"})


def _clean(node: Any) -> Any:
    """A schema without prose: descriptions, summaries and examples left out (a property
    named `description` is a name, not prose, and stays)."""
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in PROSE_KEYS:
            continue
        if key in NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: _clean(schema) for name, schema in value.items()}
        elif key in LITERALS:
            out[key] = value
        else:
            out[key] = _clean(value)
    return out


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.add(value)
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _schema_name(ref: str, where: str) -> str:
    if not ref.startswith(SCHEMA_REF):
        raise DeriveError(f"{where}: a $ref outside #/components/schemas/ is not supported: {ref}")
    return ref[len(SCHEMA_REF) :]


def _parameters(
    path_item: dict[str, Any], op: dict[str, Any], schemas: dict[str, Any], where: str
) -> dict[str, Any]:
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for param in [*path_item.get("parameters", []), *op.get("parameters", [])]:
        if "$ref" in param:
            raise DeriveError(f"{where}: a parameter by $ref is not supported: {param['$ref']}")
        merged[(param["in"], param["name"])] = param
    out: dict[str, Any] = {}
    for (location, name), param in merged.items():
        if name in out:
            raise DeriveError(f"{where}: parameter '{name}' is declared both in path and query")
        entry: dict[str, Any] = {"in": location, "required": bool(param.get("required", location == "path"))}
        entry["schema"] = _clean(param.get("schema") or {})
        for key in ("style", "explode"):
            if key in param:
                entry[key] = param[key]
        description = param.get("description") or ""
        if location == "query" and name == "filter":
            entry["allowed"] = parse_filter(description, f"{where} filter")
        elif location == "query" and name == "order_by":
            entry["allowed"] = parse_order_by(description, f"{where} order_by")
        elif location == "query" and name == "fields":
            entry["allowed"] = parse_fields(param, schemas, f"{where} fields")
        out[name] = entry
    return out


def _json_content(content: dict[str, Any], where: str) -> dict[str, Any]:
    if set(content) != {"application/json"}:
        raise DeriveError(f"{where}: content types {sorted(content)} (only application/json is supported)")
    return _clean(content["application/json"]["schema"])  # type: ignore[no-any-return]


def derive(
    source: bytes, note: str = DEFAULT_NOTE, operations_wanted: tuple[tuple[str, str], ...] = OPERATIONS
) -> dict[str, Any]:
    """The subset of the document `source` (YAML or JSON bytes) for `operations_wanted`."""
    document = yaml.load(source, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(document, dict) or "paths" not in document:
        raise DeriveError("the source is not an OpenAPI document (no 'paths')")
    schemas: dict[str, Any] = (document.get("components") or {}).get("schemas") or {}
    operations: dict[str, Any] = {}
    for method, path in operations_wanted:
        key = f"{method} {path}"
        path_item = document["paths"].get(PREFIX + path)
        if path_item is None or method.lower() not in path_item:
            raise DeriveError(f"{key}: not in the document (paths['{PREFIX}{path}'].{method.lower()})")
        op = path_item[method.lower()]
        entry: dict[str, Any] = {
            "operation_id": op.get("operationId"),
            "parameters": _parameters(path_item, op, schemas, key),
            "responses": {},
        }
        if "requestBody" in op:
            body = op["requestBody"]
            entry["request_body"] = {
                "required": bool(body.get("required", False)),
                "schema": _json_content(body.get("content") or {}, f"{key} request body"),
            }
        for status, answer in op["responses"].items():
            content = answer.get("content")
            entry["responses"][str(status)] = (
                {"schema": _json_content(content, f"{key} {status}")} if content else {}
            )
        operations[key] = entry

    needed: dict[str, Any] = {}
    pending = sorted(_refs(operations))
    while pending:
        ref = pending.pop()
        name = _schema_name(ref, "subset")
        if name in needed:
            continue
        if name not in schemas:
            raise DeriveError(f"{ref} does not resolve in the source document")
        needed[name] = _clean(schemas[name])
        pending += sorted(_refs(needed[name]) - {SCHEMA_REF + n for n in needed})

    info = document.get("info") or {}
    return {
        "provenance": {
            "source_title": info.get("title"),
            "source_version": info.get("version"),
            "source_openapi": document.get("openapi"),
            "source_sha256": hashlib.sha256(source).hexdigest(),
            "source_note": note,
            "path_prefix": PREFIX,
            "derived_by": "python -m sandbox.keap.spec.derive",
            "operations": sorted(operations),
        },
        "operations": operations,
        "components": {"schemas": needed},
    }


def render(subset: dict[str, Any]) -> str:
    return json.dumps(subset, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.keap.spec.derive",
        description="Derive keap-v2-subset.json from Keap's official OpenAPI document for REST v2.",
    )
    parser.add_argument("source", type=Path, help="the official document (YAML), downloaded")
    parser.add_argument("--source-note", default=DEFAULT_NOTE, help="where the document came from")
    parser.add_argument(
        "--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT.name} beside this script"
    )
    args = parser.parse_args(argv)
    try:
        subset = derive(args.source.read_bytes(), args.source_note)
    except DeriveError as exc:
        print(f"derive: {exc}", file=sys.stderr)
        return 2
    args.output.write_text(render(subset), encoding="utf-8")
    count = len(subset["operations"])
    schemas = len(subset["components"]["schemas"])
    print(f"wrote {args.output} ({count} operations, {schemas} schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
