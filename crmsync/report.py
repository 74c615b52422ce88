"""What a run prints: a summary table per mapping on a terminal, plain lines in logs, JSON for machines."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

SUMMARY_COLUMNS = (
    "linked",
    "created",
    "updated",
    "deleted",
    "conflicts",
    "rejected",
    "waiting",
    "held_back",
    "stale",
    "failed",
)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table on a terminal (rich), tab-separated lines otherwise."""
    if sys.stdout.isatty():
        grid = Table(title=title, title_justify="left")
        for column in columns:
            grid.add_column(column, justify="right" if column not in ("mapping", "query") else "left")
        for row in rows:
            grid.add_row(*["" if v is None else str(v) for v in row])
        Console().print(grid)
        return
    click.echo(title)
    click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join("" if v is None else str(v) for v in row))


def sync_summary(push: dict[str, Any]) -> None:
    rows = [[mapping, *(counts[c] for c in SUMMARY_COLUMNS)] for mapping, counts in push["mappings"].items()]
    table("sync summary", ["mapping", *SUMMARY_COLUMNS], rows)
    for rejection in push["rejections"]:
        fields = ", ".join(f"{f.get('field')}: {f.get('message')}" for f in rejection.get("fields") or [])
        click.secho(
            f"rejected by {rejection['target']} ({rejection['op']} {rejection['mapping']}, keap {rejection['keap_id']}"
            f", customcrm {rejection['customcrm_id']}): {rejection['reason']}{' - ' + fields if fields else ''}",
            fg="yellow",
        )


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
