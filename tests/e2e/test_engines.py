"""One dbt project, two engines: on the same raw data and the same state, PostgreSQL builds
what DuckDB builds, row for row, in every model (the staging views, the merge, the pending
changes, the link tables, the reviews). The state is a real one: a first sync's links,
bases and clock readings, then edits on both sides (a conflict, a deletion, an emptied
field, a value that does not parse) read by the extract into each engine."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg2
import pytest
from psycopg2.extras import execute_values

from crmsync.dbt import build
from pipelines.ingest import IngestOptions, extract
from reverse_etl.state import ensure_state
from sandbox.bundle import Sandboxes
from support.warehouse import ENV
from tests.conftest import admin
from tests.e2e.conftest import DEMO, World, _settings

# what differs by when or by which build it was made, not by what the data says (a Keap
# record's deleted_at is when an extract noticed it was gone: each engine's extract is its own)
RUN_COLUMNS = {
    *("pair_key", "pair_hash", "merged_in_build", "base_watermark", "parsed_in_build", "extracted_at"),
    "_extracted_at",
    *("deleted_at", "detected_at", "keap_deleted_at"),
}
SCHEMAS = ("staging", "intermediate", "main")


def _value(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list | tuple):
        return tuple(_value(v) for v in value)
    if isinstance(value, decimal.Decimal | float):
        return round(float(value), 6)
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat()
    return value


def _rows(cursor: Any, sql: str) -> list[str]:
    cursor.execute(sql)
    return sorted(repr(tuple(_value(v) for v in row)) for row in cursor.fetchall())


def _models(db: Path, url: str) -> dict[str, tuple[list[str], list[str]]]:
    """Every model's rows on each engine: (DuckDB's, PostgreSQL's)."""
    found = {}
    with duckdb.connect(str(db), read_only=True) as duck, psycopg2.connect(url) as pg, pg.cursor() as cursor:
        relations = duck.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in {SCHEMAS} order by 1, 2"
        ).fetchall()
        for schema, table in relations:
            columns = [c for (c,) in duck.execute(
                "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
                "order by ordinal_position", [schema, table]).fetchall() if c not in RUN_COLUMNS]  # fmt: skip
            sql = f"select {', '.join(chr(34) + c + chr(34) for c in columns)} from {schema}.{table}"
            found[f"{schema}.{table}"] = (_rows(duck.cursor(), sql), _rows(cursor, sql))
    return found


def _fresh_copy(db: Path, folder: Path) -> Path:
    """The DuckDB file's state without its raw data: the extract into it starts afresh, as the
    one into PostgreSQL does, so both read the same history of the two systems."""
    folder.mkdir()
    copy = folder / db.name
    shutil.copy2(db, copy)
    with duckdb.connect(str(copy)) as con:
        con.execute("drop schema raw_keap cascade")
        con.execute("drop schema raw_customcrm cascade")
    return copy


def _copy_state(db: Path, url: str) -> int:
    """The DuckDB file's sync_state, table by table, into the warehouse's (created first)."""
    copied = 0
    with duckdb.connect(str(db), read_only=True) as duck, psycopg2.connect(url) as pg, pg.cursor() as cursor:
        tables = duck.execute(
            "select table_name from information_schema.tables where table_schema = 'sync_state'"
        ).fetchall()
        for (table,) in tables:
            result = duck.execute(f"select * from sync_state.{table}")
            columns = [d[0] for d in result.description]
            rows = result.fetchall()
            if rows:
                execute_values(
                    cursor, f"insert into sync_state.{table} ({', '.join(columns)}) values %s", rows
                )
                copied += len(rows)
    return copied


def test_postgresql_builds_what_duckdb_builds_from_the_same_data_and_state(
    sandboxes: Sandboxes,
    keap: httpx.Client,
    crm: httpx.Client,
    tmp_path: Path,
    warehouse: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandboxes.seed_demo(**DEMO)
    admin(crm, sandboxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
    monkeypatch.delenv(ENV, raising=False)
    world = World(sandboxes, _settings(tmp_path), keap, crm)
    assert world.sync().status == "ok"  # links, bases, clocks: the state both builds read

    duck = dataclasses.replace(world.settings, db_path=_fresh_copy(world.settings.db_path, tmp_path / "duck"))
    pg = _settings(tmp_path / "pg", warehouse)
    found = world.endpoints()

    def extract_both(options: IngestOptions) -> None:
        for settings in (duck, pg):
            with pytest.MonkeyPatch.context() as patch:
                if settings.warehouse:
                    patch.setenv(ENV, settings.warehouse)
                reports = extract(settings.db_path, settings.state_dir, found.keap, found.customcrm, options,
                                  warehouse=settings.warehouse)  # fmt: skip
            assert not [e for r in reports for e in r.errors], reports

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(ENV, warehouse)
            ensure_state(pg.db_path)
        assert _copy_state(world.settings.db_path, warehouse) > 100
        extract_both(IngestOptions())  # both start from the systems as the sync left them

        contact = keap.get("/contacts", params={"page_size": 5}).json()["contacts"][2]
        assert (
            keap.patch(f"/contacts/{contact['id']}", json={"job_title": "Chief of Keap"}).status_code == 200
        )
        linked = world.sql("select customcrm_id from sync_state.links where mapping = 'contacts' and keap_id = ?",
                           [str(contact["id"])])  # fmt: skip
        assert linked, contact["id"]
        edited = crm.patch(f"/contacts/{linked[0][0]}", json={"Title": "Chief of Customcrm"})
        assert edited.status_code == 200, edited.text
        customer = crm.get("/customers", params={"limit": 3}).json()["data"][1]
        assert crm.patch(f"/customers/{customer['Id']}", json={"Phone": None}).status_code == 200
        company = keap.get("/companies", params={"page_size": 5}).json()["companies"][3]
        assert keap.delete(f"/companies/{company['id']}").status_code == 204

        extract_both(IngestOptions(full_pass=True))  # the edits, and the deletion Keap's full pass finds
    finally:
        found.close()
    for settings in (duck, pg):
        with pytest.MonkeyPatch.context() as patch:
            if settings.warehouse:
                patch.setenv(ENV, settings.warehouse)
            build(settings.db_path, tests=True)

    models = _models(duck.db_path, warehouse)
    assert len(models) > 40
    assert {
        "main.link_contacts",
        "main.sync_customcrm__contacts",
        "intermediate.int_contacts__merged",
    } <= set(models)
    different = {
        name: {
            "duckdb only": sorted(set(duck) - set(pg))[:2],
            "postgres only": sorted(set(pg) - set(duck))[:2],
        }
        for name, (duck, pg) in models.items()
        if duck != pg
    }
    assert not different, json.dumps(different, indent=1)[:4000]
    # the edits reached the pending changes, so the comparison saw them
    assert any("Chief of" in row for row in models["intermediate.int_contacts__merged"][0])
    assert any("deleted in Keap on" in row for row in models["main.link_customers"][0])
