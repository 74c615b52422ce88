"""Keap's official OpenAPI document (shared/keap/keap-v2-openapi.yml) as a validator.

The document is data to validate against, not to copy: tests read it from
shared/ and check the sandbox's answers, and the client's requests, against its
schemas. Keap's schemas allow any extra property, so `assert_shape` also
insists that every property in an answer is one the document declares.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import shared_dir


@cache
def document() -> dict[str, Any]:
    with open(shared_dir() / "keap" / "keap-v2-openapi.yml") as handle:
        return yaml.load(handle, Loader=yaml.CSafeLoader)  # type: ignore[no-any-return]


@cache
def _registry() -> Registry:
    return Registry().with_resource(
        "urn:keap", Resource.from_contents(document(), default_specification=DRAFT202012)
    )


def operation(method: str, path: str) -> dict[str, Any]:
    return document()["paths"][f"/rest/v2{path}"][method.lower()]  # type: ignore[no-any-return]


def response_schema(method: str, path: str, status: int) -> dict[str, Any]:
    responses = operation(method, path)["responses"]
    entry = responses[str(status)]
    return entry["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def request_schema(method: str, path: str) -> dict[str, Any]:
    body = operation(method, path)["requestBody"]
    return body["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


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


def assert_shape(instance: Any, schema: dict[str, Any]) -> None:
    """Valid against the schema, and no property the document does not declare."""
    ref = schema["$ref"].replace("#/", "urn:keap#/") if "$ref" in schema else None
    validator = Draft202012Validator({"$ref": ref} if ref else schema, registry=_registry())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    assert not errors, f"does not match Keap's schema: {errors[:5]}"
    extra = undeclared(instance, schema)
    assert not extra, f"properties Keap's document does not declare: {extra[:10]}"


def assert_answer(response: Any, method: str, path: str) -> None:
    """An httpx response matches what the document says this operation answers."""
    assert str(response.status_code) in operation(method, path)["responses"], (
        f"{method} {path}: status {response.status_code} is not one the document lists"
    )
    if response.status_code == 204:
        return
    assert_shape(response.json(), response_schema(method, path, response.status_code))
