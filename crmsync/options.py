"""Options more than one command takes, parsed once."""

from __future__ import annotations

import json
from typing import Any

import click

from registry import mapping_names


def dbt_vars(conflict_policy: str | None, raw: str | None) -> dict[str, Any] | None:
    """dbt's vars from `--vars` (JSON) and `--conflict-policy` (every mapping's policy)."""
    try:
        variables: dict[str, Any] = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--vars") from None
    if conflict_policy:
        variables["conflict_policy"] = {m: conflict_policy for m in mapping_names()}
    return variables or None
