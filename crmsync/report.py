"""What the commands print. The engine returns results; only the CLI prints, through here.

- On a terminal: rich tables, colour, no prefixes.
- Elsewhere (logs, pipes, CI): plain lines. During a run every line is stamped with the time
  and the run id (`2026-11-29T21:43:07Z run=20261129T214305Z-074e69 ...`), so a log that many
  runs append to can be read run by run; tables are tab-separated, header first.
- `--json`: one JSON document, never stamped.

A closed pipe (`crmsync sql ... | head -2`) is not an error: output stops quietly (`closed`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TextIO

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

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
    "deferred",
    "failed",
)
# `linked` in a run's summary counts the links that run made; `status` counts all links
SUMMARY_HEADERS = {"linked": "new_links"}
NULL = "∅"  # NULL in a table on a terminal (dimmed); `\N` in tab-separated output, empty in CSV

_stamp: str | None = None  # the run id while a run prints
_closed = False  # stdout's reader went away (a pipe closed): print nothing more


def is_terminal(err: bool = False) -> bool:
    stream = sys.stderr if err else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def stamped(run_id: str) -> Iterator[None]:
    """Plain lines printed meanwhile carry the time and this run id."""
    global _stamp
    previous, _stamp = _stamp, run_id
    try:
        yield
    finally:
        _stamp = previous


def _prefix(err: bool) -> str:
    if _stamp is None or is_terminal(err):
        return ""
    return f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} run={_stamp} "


def say(text: str = "", err: bool = False, fg: str | None = None) -> None:
    """Print lines (stamped during a run when not on a terminal). A closed pipe ends output
    for good instead of failing the command: a sync goes on, a query's reader has enough."""
    global _closed
    if _closed and not err:
        return
    prefix = _prefix(err)
    lines = text.split("\n") if text else [""]
    try:
        for line in lines:
            click.secho(prefix + line if line else prefix.rstrip(), fg=fg, err=err)
    except BrokenPipeError:
        _silence(err)


def _silence(err: bool) -> None:
    """The reader of stdout (or stderr) is gone: point the stream at /dev/null, so neither this
    process's later writes nor Python's flush at exit fail."""
    import os

    global _closed
    stream: TextIO = sys.stderr if err else sys.stdout
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    if not err:
        _closed = True


def closed() -> bool:
    return _closed


def _console(err: bool = False) -> Console:
    return Console(file=sys.stderr if err else sys.stdout, highlight=False, soft_wrap=False)


# --- values -------------------------------------------------------------------------------------

NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
           "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")  # fmt: skip


def is_numeric(kind: str | None) -> bool:
    return bool(kind) and str(kind).upper().split("(")[0] in NUMERIC


def text(value: Any) -> str:
    """A value as one piece of text: lists, maps and structs as JSON, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def json_value(value: Any, kind: str | None = None) -> Any:
    """A value for JSON output: a JSON column is embedded as JSON, not as a string of it."""
    if value is None:
        return None
    if kind == "JSON" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral_value() or abs(value) < 1e15 else str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _tsv(value: Any) -> str:
    if value is None:
        return "\\N"
    return text(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return text(value)
    shown = text(value)
    return '"' + shown.replace('"', '""') + '"' if shown == "" or any(c in shown for c in ',"\n\r') else shown


# --- tables ---------------------------------------------------------------------------------------


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    types: Sequence[str | None] | None = None,
    caption: str | None = None,
    err: bool = False,
) -> None:
    """A table on a terminal (rich: numbers right, text left, NULL dimmed, nothing cut),
    tab-separated lines otherwise (header first; the title, if any, before it)."""
    kinds = list(types) if types else [None] * len(columns)
    numeric = [
        is_numeric(k) if k else bool(rows) and all(isinstance(r[i], int | float | Decimal) or r[i] is None
                                                   for r in rows) and any(r[i] is not None for r in rows)
        for i, k in enumerate(kinds)
    ]  # fmt: skip
    if not is_terminal(err):
        if title:
            say(title, err=err)
        say("\t".join(columns), err=err)
        for row in rows:
            say("\t".join("" if v is None and types is None else _tsv(v) for v in row), err=err)
        return
    grid = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column, right in zip(columns, numeric, strict=True):
        grid.add_column(column, justify="right" if right else "left", no_wrap=True, overflow="ignore")
    cells = [[Text(NULL, style="dim") if v is None else Text(text(v)) for v in row] for row in rows]
    for row_cells in cells:
        grid.add_row(*row_cells)
    # never cut or fold a value (an ID must stay whole, to copy): a table wider than the
    # terminal is printed at its own width and the terminal wraps its lines, as psql does
    widths = [max([len(c), *(max(len(line) for line in r[i].plain.split("\n") or [""]) for r in cells)])
              for i, c in enumerate(columns)]  # fmt: skip
    console = _console(err)
    console.size = (max(console.width, sum(widths) + 3 * len(widths) + 1), console.height)
    try:
        console.print(grid)
    except BrokenPipeError:
        _silence(err)


def delimited(columns: Sequence[str], rows: Sequence[Sequence[Any]], kind: str) -> None:
    """`tsv`: tab-separated, NULL as \\N, tabs, newlines and backslashes escaped (PostgreSQL's
    text format); `csv`: RFC 4180, NULL as an empty field, an empty text as \"\"."""
    cell = _tsv if kind == "tsv" else _csv
    sep = "\t" if kind == "tsv" else ","
    header = sep.join(columns if kind == "tsv" else [_csv(c) for c in columns])
    say(header)
    for row in rows:
        if _closed:
            return
        say(sep.join(cell(v) for v in row))


def emit_json(data: Any) -> None:
    say(json.dumps(data, indent=2, default=str, ensure_ascii=False))


# --- a run ---------------------------------------------------------------------------------------


def counts_text(mappings: dict[str, dict[str, int]]) -> str:
    """`customers: 3 linked, 22 created; contacts: 1 rejected`: the non-zero counts per mapping."""
    parts = []
    for mapping, counts in mappings.items():
        shown = [f"{counts[c]} {c.replace('_', ' ')}" for c in SUMMARY_COLUMNS if counts.get(c)]
        if shown:
            parts.append(f"{mapping}: {', '.join(shown)}")
    return "; ".join(parts) or "nothing written"


EXIT = {"ok": 0, "rejected": 3, "incomplete": 4, "failed": 1}


def run_line(result: dict[str, Any]) -> str:
    """The one line every run ends with (also with --quiet)."""
    seconds = (
        sum(result.get("seconds", {}).values()) if result.get("elapsed_s") is None else result["elapsed_s"]
    )
    head = (
        f"run {result['run_id']} {result['status']} (exit {EXIT.get(result['status'], 1)}) in {seconds:.1f} s"
    )
    if result.get("quiet_since"):
        return f"{head}: nothing changed since run {result['quiet_since']}, which found nothing to do"
    tail = counts_text(result["mappings"])
    if result.get("set_aside"):
        tail += f"; {len(result['set_aside'])} refused before and set aside"
    return f"{head}: {tail}"


def _ids(row: dict[str, Any]) -> str:
    """`keap 1026 ⇄ customcrm con_…`, leaving out the side that has no id yet."""
    ids = [f"{side} {row[side + '_id']}" for side in ("keap", "customcrm") if row.get(side + "_id")]
    return " ⇄ ".join(ids)


def rejection_key(row: dict[str, Any]) -> str:
    return f"{row['mapping']}/{row['target']}/{row.get('keap_id') or row.get('customcrm_id')}"


def rejection_line(rejection: dict[str, Any]) -> str:
    """One refused row: who refused what, the API's reason once (its field errors only when they
    add something), and the key that `crmsync rejections retry|ignore` take."""
    reason = str(rejection.get("reason") or "refused")
    extra = [
        f"{f.get('field')}: {f.get('message')}"
        for f in rejection.get("fields") or []
        if f.get("message") and str(f.get("message")) not in reason
    ]
    status = f" ({rejection['status']})" if rejection.get("status") else ""
    return (
        f"rejected by {rejection['target']}: {rejection['op']} {rejection['mapping']} {_ids(rejection)}: "
        f"{reason}{status}{' - ' + '; '.join(extra) if extra else ''} [key {rejection_key(rejection)}]"
    )


def _value(value: Any) -> str:
    return (
        NULL if value is None else repr(str(value)) if len(str(value)) < 60 else repr(str(value)[:57] + "...")
    )


WINNER = {
    "conflict_customcrm_newer": "the newer",
    "conflict_keap_newer": "the newer",
    "conflict_tie_goes_to_keap": "a tie goes to Keap",
}


def conflict_line(conflict: dict[str, Any]) -> str:
    why = WINNER.get(str(conflict.get("reason")), str(conflict.get("reason", "")).replace("_", " "))
    return (
        f"conflict {conflict['mapping']} {_ids(conflict)} {conflict['field']}: "
        f"Keap {_value(conflict.get('keap_value'))}, Customcrm {_value(conflict.get('customcrm_value'))} "
        f"(was {_value(conflict.get('base_value'))}) -> {conflict['winner']} wins ({why})"
    )


def set_aside_line(row: dict[str, Any]) -> str:
    return f"set aside: {row['op']} {row['mapping']} -> {row['target']} {_ids(row)}: {row['why']}"


def sync_summary(result: dict[str, Any], quiet: bool = False) -> None:
    """The summary of a run: the table, each conflict, refusal and row set aside, then one line
    with the run id, outcome, exit code and duration. `quiet`: the refusals and that line."""
    if not quiet:
        rows = [[m, *(c.get(k, 0) for k in SUMMARY_COLUMNS)] for m, c in result["mappings"].items()]
        headers = [SUMMARY_HEADERS.get(c, c) for c in SUMMARY_COLUMNS]
        table("sync summary", ["mapping", *headers], rows)
        for conflict in result.get("conflicts") or []:
            say(conflict_line(conflict))
        for row in result.get("set_aside") or []:
            say(set_aside_line(row))
    for rejection in result.get("rejections") or []:
        say(rejection_line(rejection), fg="yellow")


# --- run history --------------------------------------------------------------------------------


def _when(moment: Any) -> str:
    if not isinstance(moment, datetime):
        return "" if moment is None else str(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _outcome(run: dict[str, Any]) -> str:
    if run["status"] == "interrupted":
        return "interrupted (killed: it ended without closing its row)"
    if run.get("quiet_since"):
        return f"{run['status']} (nothing changed since {run['quiet_since']})"
    if run["status"] == "running":
        return "running"
    return str(run["status"])


def run_history_line(run: dict[str, Any]) -> str:
    """One run in a line: id, outcome, exit code, start, duration, what it did."""
    seconds = f"{run['seconds']:.1f} s" if run.get("seconds") is not None else "-"
    code = f"exit {run['exit_code']}" if run.get("exit_code") is not None else "no exit code"
    what = run.get("error") if run["status"] in ("failed", "interrupted") else counts_text(run["mappings"])
    return f"{run['run_id']} {_outcome(run)}, {code}, started {_when(run['started_at'])}, {seconds}: {what}"


def runs_table(found: list[dict[str, Any]]) -> None:
    if not found:
        say("no sync has run yet")
        return
    rows = [
        [r["run_id"], _when(r["started_at"]), r["seconds"], _outcome(r), r["exit_code"],
         r.get("error") if r["status"] in ("failed", "interrupted") and r.get("error") else counts_text(r["mappings"])]
        for r in found
    ]  # fmt: skip
    table(None, ["run", "started", "seconds", "outcome", "exit", "what it did"], rows,
          [None, None, "DOUBLE", None, "INTEGER", None])  # fmt: skip


# --- rejections -----------------------------------------------------------------------------------


def rejections_table(found: list[dict[str, Any]], everything: bool) -> None:
    if not found:
        say("no rejections" if everything else "no open rejections")
        return
    rows = []
    for r in found:
        if r["state"] == "ignored":
            state = f"ignored by {r['ignored_by']}: {r['ignore_reason']}"
        elif r["state"] == "open":
            after = _when(r["retry_after"]) if r["retry_after"] else "the next sync"
            state = f"open; unchanged, sent again after {after}"
        else:
            state = f"resolved {_when(r['resolved_at'])}"
        rows.append([r["key"], r["op"], r["attempts"], _when(r["last_seen"]), state, r["reason"]])
    table(None, ["key", "op", "attempts", "last refused", "state", "reason"], rows,
          [None, None, "INTEGER", None, None, None])  # fmt: skip
    if any(r["state"] == "open" for r in found):
        say("`crmsync rejections retry KEY` sends one again at the next sync; "
            "`crmsync rejections ignore KEY --reason ...` sets it aside until its record changes", err=True)  # fmt: skip


# --- plan ---------------------------------------------------------------------------------------


def _change(field: dict[str, Any]) -> str:
    if field.get("derived"):
        return f"{field['field']} -> {_value(text(field['new']) if field['new'] is not None else None)} (derived)"
    shown = f"{field['field']} {_value(field['old'])} -> {_value(field['new'])}"
    conflict = field.get("conflict")
    if conflict:
        loser = "customcrm" if conflict["winner"] == "keap" else "keap"
        why = WINNER.get(str(conflict["reason"]), str(conflict["reason"]).replace("_", " "))
        shown += (f" (conflict: {conflict['winner']} wins over {loser}'s {_value(conflict[loser])}, {why}; "
                  f"was {_value(conflict['base'])})")  # fmt: skip
    return shown


def plan_row_line(row: dict[str, Any]) -> str:
    head = f"{row['op']} {_ids(row)}"
    if row["status"] == "waiting":
        return f"  waiting {head}: {row['reason']}"
    if row["status"] == "set_aside":
        return f"  set aside {head}: {row['reason']}"
    changes = "; ".join(_change(f) for f in row["fields"])
    return f"  {head}{': ' + changes if changes else ''}"


def plan_report(details: dict[str, Any], limit: int) -> None:
    """Per mapping and direction, the rows a sync would write (at most `limit` each, then how
    many more), what waits and what is set aside, what is held for review, and the endpoints."""
    say("endpoints: " + ", ".join(f"{system} {url}" for system, url in details["endpoints"].items()))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in details["rows"]:
        groups.setdefault((row["mapping"], row["target"]), []).append(row)
    for (mapping, target), rows in groups.items():
        source = "keap" if target == "customcrm" else "customcrm"
        ops: dict[str, int] = {}
        for row in rows:
            label = row["op"] if row["status"] == "ready" else row["status"].replace("_", " ")
            ops[label] = ops.get(label, 0) + 1
        counts = ", ".join(f"{n} {op}" for op, n in ops.items())
        say(f"{mapping}: {source} -> {target} ({counts})")
        for row in rows[:limit]:
            say(plan_row_line(row))
        if len(rows) > limit:
            say(f"  ... and {len(rows) - limit} more (--limit, --mapping, --json)")
    for held in details.get("held") or []:
        say(f"held for review: {held['mapping']} {_ids(held)}: {held['reason']}")
    ready = sum(1 for r in details["rows"] if r["status"] == "ready")
    waiting = sum(1 for r in details["rows"] if r["status"] == "waiting")
    aside = sum(1 for r in details["rows"] if r["status"] == "set_aside")
    if not ready and not waiting:
        say(
            "nothing to write: both systems agree"
            + (f" ({aside} refused row{'s' if aside != 1 else ''} set aside)" if aside else "")
        )
    else:
        say(f"{ready} write{'s' if ready != 1 else ''} ready, {waiting} waiting, {aside} set aside, "
            f"{len(details['conflicts'])} conflict{'s' if len(details['conflicts']) != 1 else ''}: "
            "`crmsync sync` makes them")  # fmt: skip
