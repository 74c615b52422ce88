"""Whether anything the models read has changed since a run that found nothing to do.

A sync whose extract loaded nothing new still used to run the whole `dbt build`
(about 40 s at 100,000 records per kind) only to find, again, nothing to write.
The models are a pure function of four inputs, so when none of them changed the
build's answer cannot have changed either:

- the raw datasets (every column of every row but dlt's load bookkeeping and the
  extraction time, which a re-read of unchanged stages would otherwise move);
- the sync's own state (links, bases, rejections, intents, conflicts);
- the dbt project's files (models, macros, seeds, tests, configuration);
- the dbt vars of the run (the conflict policy among them).

A run that wrote nothing, rejected nothing, failed nothing and left nothing
waiting or held back records the fingerprint of those inputs; the next run
compares after its extract and skips the build and the push when they match.
Any loaded row, any state change, any edited model or other vars mean a build.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from crmsync.dbt import PROJECT_DIR
from reverse_etl.state import SCHEMA, connect  # the inputs are read here; recorded by reverse_etl.state
from support.warehouse import Connection, is_postgres

RAW_SCHEMAS = ("raw_keap", "raw_customcrm")
VOLATILE = ("_extracted_at",)  # plus every _dlt* column

# per state table: what changes whenever the push writes to it
STATE_PROBES = {
    "links": "count(*), max(linked_at), max(last_synced_at)",
    "base_values": "count(*), max(synced_at)",
    # and, as time passes, how many refused rows are due to be sent again (`retry_after`), and
    # how many a person set aside: a known refusal that is not due is no reason to build
    "rejections": "count(*), count(resolved_at), max(last_seen), count(ignored_at), count(*) filter "
    "(where resolved_at is null and ignored_at is null and (retry_after is null or retry_after <= now()))",
    "keap_create_intents": "count(*), count(keap_id), max(intended_at), max(resolved_at)",
    "conflicts": "count(*), max(decided_at)",
}

PROJECT_PARTS = (
    "dbt_project.yml",
    "profiles.yml",
    "models",
    "macros",
    "seeds",
    "tests",
    "snapshots",
    "analyses",
)


def _raw_tables(con: Connection) -> dict[tuple[str, str], list[str]]:
    rows = con.execute(
        f"""select table_schema, table_name, column_name
            from information_schema.columns
            where table_schema in {RAW_SCHEMAS} and table_name not like '\\_dlt%' escape '\\'
            order by table_schema, table_name, ordinal_position"""
    ).fetchall()
    tables: dict[tuple[str, str], list[str]] = {}
    for schema, table, column in rows:
        tables.setdefault((schema, table), []).append(column)
    return tables


def _data_fingerprint(con: Connection) -> list[Any]:
    parts: list[Any] = []
    # a hash of each value, summed per column: DuckDB's hash, PostgreSQL's hashtext of its text
    hashed = 'hashtext(cast("{}" as text))' if is_postgres(con) else 'hash("{}")'
    for (schema, table), columns in _raw_tables(con).items():
        kept = [c for c in columns if not c.startswith("_dlt") and c not in VOLATILE]
        sums = "".join(f", sum({hashed.format(c)})" for c in kept)
        row = con.execute(f'select count(*){sums} from "{schema}"."{table}"').fetchone()
        parts.append([schema, table, *(str(v) for v in row or ())])
    for table, probe in STATE_PROBES.items():
        row = con.execute(f"select {probe} from {SCHEMA}.{table}").fetchone()
        parts.append([table, *(str(v) for v in row or ())])
    return parts


def project_fingerprint(project_dir: Path = PROJECT_DIR) -> str:
    digest = hashlib.sha256()
    for part in PROJECT_PARTS:
        root = project_dir / part
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if path.is_file():
                digest.update(str(path.relative_to(project_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def input_fingerprint(db_path: Path, variables: dict[str, Any] | None) -> str:
    """One digest of everything `dbt build` reads, for this run's vars."""
    with connect(db_path) as con:
        data = _data_fingerprint(con)
    document = {"data": data, "project": project_fingerprint(), "vars": variables or {}}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()
