"""The ingest into PostgreSQL (issue 18's first step): the same extract, from the same two
sandboxes, loads the same rows into a PostgreSQL database as into the DuckDB file, and
goes on incrementally there as here (edits, deletions on both sides, Keap's full pass,
an idle run). The PostgreSQL is a throwaway cluster the tests start (tests/postgres.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg2

from pipelines.ingest import IngestOptions, extract
from sandbox.bundle import Sandboxes
from tests.pipelines.test_ingest import unpaced_ingest

# when each run read or marked a row: the two runs' own times, not the systems' data
RUN_TIMES = {"_extracted_at", "detected_at"}


def _value(value: Any, column: str = "") -> Any:
    """Comparable across the two: a time as its instant. DuckDB's JSON reader, which loads
    the jsonl files, rewrites `updated_at`'s text ('2025-07-04T16:11:51.301Z' becomes
    '2025-07-04 16:11:51.301+00'); PostgreSQL keeps the API's; the instant is the same."""
    if column == "updated_at" and isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def _duckdb_tables(db: Path) -> dict[str, set[tuple[Any, ...]]]:
    """Every raw table's rows (dlt's own columns and the runs' times left out), by schema.table."""
    found = {}
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('raw_keap', 'raw_customcrm') and table_name not like '\\_dlt%' escape '\\'"
        ).fetchall()
        for schema, table in tables:
            columns = sorted(
                c for (c,) in con.execute(
                    "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
                    [schema, table]).fetchall()
                if not c.startswith("_dlt") and c not in RUN_TIMES
            )  # fmt: skip
            rows = con.execute(f"select {', '.join(columns)} from {schema}.{table}").fetchall()
            found[f"{schema}.{table}"] = {
                tuple((c, _value(v, c)) for c, v in zip(columns, row, strict=True)) for row in rows
            }
    return found


def _postgres_tables(url: str) -> dict[str, set[tuple[Any, ...]]]:
    found = {}
    with psycopg2.connect(url) as con, con.cursor() as cursor:
        cursor.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('raw_keap', 'raw_customcrm') and table_name not like '\\_dlt%%'"
        )
        for schema, table in cursor.fetchall():
            cursor.execute(
                "select column_name from information_schema.columns where table_schema = %s and table_name = %s",
                (schema, table),
            )
            columns = sorted(
                c for (c,) in cursor.fetchall() if not c.startswith("_dlt") and c not in RUN_TIMES
            )
            cursor.execute(f"select {', '.join(columns)} from {schema}.{table}")
            found[f"{schema}.{table}"] = {
                tuple((c, _value(v, c)) for c, v in zip(columns, row, strict=True))
                for row in cursor.fetchall()
            }
    return found


def test_the_ingest_loads_the_same_rows_into_postgresql_as_into_duckdb_run_after_run(
    sandboxes: Sandboxes, tmp_path: Path, warehouse: str
) -> None:
    with unpaced_ingest(sandboxes, tmp_path, 60, 4, customcrm={"limits": "off"}) as ingest:

        def both(**options: Any) -> None:
            for db, state, url in ((ingest.db, tmp_path / "duck.state", None),
                                   (tmp_path / "unused.duckdb", tmp_path / "pg.state", warehouse)):  # fmt: skip
                reports = extract(db, state, ingest.keap, ingest.crm, IngestOptions(**options), warehouse=url)
                assert not [e for r in reports for e in r.errors], reports
            assert not (tmp_path / "unused.duckdb").exists()  # all of it went to PostgreSQL

        both()
        first = _duckdb_tables(ingest.db)
        assert {"raw_keap.contacts", "raw_keap.opportunities", "raw_customcrm.orders"} <= set(first)
        assert len(first["raw_keap.contacts"]) == 60
        assert _postgres_tables(warehouse) == first

        key = {"X-Keap-API-Key": sandboxes.keap.credentials.api_key}
        edited = httpx.patch(f"{sandboxes.keap_url}/contacts/1003", headers=key, json={"job_title": "Ops"})
        assert edited.status_code == 200
        assert httpx.delete(f"{sandboxes.keap_url}/contacts/1007", headers=key).status_code == 204
        bearer = {"Authorization": f"Bearer {sandboxes.customcrm.credentials.token}"}
        customer = httpx.get(f"{sandboxes.customcrm_url}/customers", headers=bearer).json()["data"][0]
        deleted = httpx.delete(f"{sandboxes.customcrm_url}/customers/{customer['Id']}", headers=bearer)
        assert deleted.status_code == 204

        both(full_pass=True)  # the edit, Customcrm's tombstone, and Keap's deletion found by the full pass
        after = _duckdb_tables(ingest.db)
        assert after != first
        assert {row for row in after["raw_keap.deletions"]} and any(
            dict(row)["id"] == "1007" for row in after["raw_keap.deletions"]
        )
        assert any(dict(row)["id"] == customer["Id"] for row in after["raw_customcrm.tombstones"])
        assert _postgres_tables(warehouse) == after

        both()  # nothing changed: nothing new on either side
        assert _duckdb_tables(ingest.db) == after
        assert _postgres_tables(warehouse) == after
