"""Keap's own document for REST v2, as far as crmsync uses it: `keap-v2-subset.json`.

Derived from Keap's official OpenAPI document by `derive.py` (see README.md beside this
file); the sandbox validates every request against it and the tests check requests and
answers against it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SUBSET_PATH = Path(__file__).with_name("keap-v2-subset.json")


class UnknownOperation(KeyError):
    """An operation the subset does not hold."""


@cache
def subset() -> dict[str, Any]:
    return json.loads(SUBSET_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def operation(method: str, path: str) -> dict[str, Any]:
    """`operation("GET", "/contacts/{contact_id}")`, paths as under /rest/v2."""
    key = f"{method.upper()} {path}"
    try:
        return subset()["operations"][key]  # type: ignore[no-any-return]
    except KeyError:
        raise UnknownOperation(
            f"{key} is not in {SUBSET_PATH.name}: add it to OPERATIONS in sandbox/keap/spec/derive.py "
            "and re-derive (sandbox/keap/spec/README.md)"
        ) from None
