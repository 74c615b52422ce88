"""Personal data in sync_state is kept CRMSYNC_RETENTION_DAYS days, then blanked; the rows
stay as the audit."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from crmsync.cli import main
from reverse_etl.state import SCHEMA, ensure_state, retention

PAYLOAD = json.dumps({"Email": "ada@example.com", "Name": "Ada Lovelace"})


def _fill(con: duckdb.DuckDBPyConnection, age_days: int, tag: str) -> None:
    at = f"now() - interval {age_days} day"
    con.execute(f"""insert into {SCHEMA}.operations values ('run-{tag}', 1, 'contacts', 'customcrm', 'create', 'k{tag}',
                    'c{tag}', ['Email'], ?, 'rejected', 409, 'Email ada@example.com is already used', {at})""",
                [PAYLOAD])  # fmt: skip
    intents = f"{SCHEMA}.keap_create_intents (mapping, customcrm_id, natural_key, payload, run_id, intended_at, keap_id)"
    con.execute(f"insert into {intents} values ('products', 'p{tag}', 'sku', ?, 'run-{tag}', {at}, 'k9')",
                [PAYLOAD])  # fmt: skip
    con.execute(f"insert into {intents} values ('products', 'open{tag}', 'sku', ?, 'run-{tag}', {at}, null)",
                [PAYLOAD])  # fmt: skip
    con.execute(f"""insert into {SCHEMA}.rejections values ('contacts', 'customcrm', 'k{tag}', 'create',
                    'Email ada@example.com is already used', '[{{"field": "Email"}}]', 409, {at}, {at}, 1, {at})""")
    con.execute(f"""insert into {SCHEMA}.rejections values ('contacts', 'customcrm', 'open{tag}', 'create',
                    'Email ada@example.com is already used', '[]', 409, {at}, {at}, 3, null)""")
    con.execute(f"""insert into {SCHEMA}.conflicts values ('run-{tag}', 'contacts', 'k{tag}', 'c{tag}', 'Email',
                    'old@example.com', 'ada@example.com', 'ada.l@example.com', 'keap', 'newest', {at})""")
    summary = {"push": {"mappings": {"contacts": {"rejected": 1}},
                        "rejections": [{"reason": "Email ada@example.com is already used"}]}, "error": None}  # fmt: skip
    con.execute(
        f"insert into {SCHEMA}.runs values ('run-{tag}', {at}, {at}, 'rejected', ?)", [json.dumps(summary)]
    )
    con.execute(f"insert into raw_keap.ingest_rejections values ('k{tag}', 'contacts', 1, 'id', 'missing id', ?, {at})",
                [PAYLOAD])  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "crmsync.duckdb"
    ensure_state(path)
    with duckdb.connect(str(path)) as con:
        con.execute("create schema raw_keap")
        con.execute("""create table raw_keap.ingest_rejections (id varchar, resource varchar, page bigint,
                       field varchar, reason varchar, record varchar, rejected_at timestamptz)""")
        _fill(con, 40, "old")
        _fill(con, 1, "new")
    return path


def _everything(db: Path) -> str:
    """Every value of every row of the tables retention covers, as text."""
    with duckdb.connect(str(db)) as con:
        tables = ["operations", "keap_create_intents", "rejections", "conflicts", "runs"]
        rows = [con.execute(f"select * from {SCHEMA}.{t}").fetchall() for t in tables]
        rows.append(con.execute("select * from raw_keap.ingest_rejections").fetchall())
    return repr(rows)


def test_it_shows_what_it_would_blank_and_changes_nothing(db: Path) -> None:
    before = _everything(db)
    found = {e.table: e for e in retention(db, 30)}
    assert {t: e.rows for t, e in found.items()} == {
        "sync_state.operations": 1,
        "sync_state.keap_create_intents": 1,  # the fulfilled one; an open intent keeps its payload
        "sync_state.rejections": 1,  # the resolved one; an open rejection is current
        "sync_state.conflicts": 1,
        "sync_state.runs": 1,
        "raw_keap.ingest_rejections": 1,  # raw_customcrm has no such table here: skipped
    }
    assert all(e.oldest is not None and e.oldest.year > 2000 for e in found.values())
    assert _everything(db) == before


def test_applied_it_blanks_the_old_personal_data_and_keeps_the_rows(db: Path) -> None:
    counts = {e.table: e.rows for e in retention(db, 30, apply=True)}
    assert sum(counts.values()) == 6
    with duckdb.connect(str(db)) as con:

        def rows(sql: str) -> list[tuple]:  # type: ignore[type-arg]
            return con.execute(sql).fetchall()

        assert rows(f"select run_id, status, http_status, fields, payload, answer from {SCHEMA}.operations order by run_id") == [
            ("run-new", "rejected", 409, ["Email"], PAYLOAD, "Email ada@example.com is already used"),
            ("run-old", "rejected", 409, ["Email"], None, None),
        ]  # fmt: skip
        assert rows(f"select customcrm_id, payload is null from {SCHEMA}.keap_create_intents order by 1") == [
            ("opennew", False), ("openold", False), ("pnew", False), ("pold", True)]  # fmt: skip
        assert rows(
            f"select record_key, reason, field_errors, attempts from {SCHEMA}.rejections order by 1"
        ) == [
            ("knew", "Email ada@example.com is already used", '[{"field": "Email"}]', 1),
            ("kold", None, None, 1),
            ("opennew", "Email ada@example.com is already used", "[]", 3),
            ("openold", "Email ada@example.com is already used", "[]", 3),
        ]
        assert rows(f"select keap_id, field, winner, base_value, keap_value, customcrm_value from {SCHEMA}.conflicts order by 1") == [
            ("knew", "Email", "keap", "old@example.com", "ada@example.com", "ada.l@example.com"),
            ("kold", "Email", "keap", None, None, None),
        ]  # fmt: skip
        summaries = dict(rows(f"select run_id, summary from {SCHEMA}.runs"))
        assert json.loads(summaries["run-old"]) == {
            "push": {"mappings": {"contacts": {"rejected": 1}}},
            "error": None,
        }
        assert "ada@example.com" in summaries["run-new"]
        assert rows("select id, record from raw_keap.ingest_rejections order by 1") == [
            ("knew", PAYLOAD),
            ("kold", None),
        ]
    assert [e.rows for e in retention(db, 30, apply=True)] == [0] * 6  # done once


def test_a_shorter_retention_reaches_the_recent_rows_too(db: Path) -> None:
    assert sum(e.rows for e in retention(db, 0, apply=True)) == 12
    with duckdb.connect(str(db)) as con:
        assert con.execute(
            f"select count(*) from {SCHEMA}.operations where payload is not null"
        ).fetchone() == (0,)


def test_a_state_from_before_retention_is_migrated(tmp_path: Path) -> None:
    """payload and reason were NOT NULL: ensure_state lets them be blanked."""
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(f"create schema {SCHEMA}")
        con.execute(f"""create table {SCHEMA}.keap_create_intents (mapping varchar not null, customcrm_id varchar not null,
                        natural_key varchar, payload json not null, run_id varchar not null,
                        intended_at timestamptz not null, keap_id varchar, primary key (mapping, customcrm_id))""")
        con.execute(f"""create table {SCHEMA}.rejections (mapping varchar not null, target varchar not null,
                        record_key varchar not null, op varchar not null, reason varchar not null, field_errors json,
                        http_status integer, first_seen timestamptz not null, last_seen timestamptz not null,
                        attempts integer not null, resolved_at timestamptz, primary key (mapping, target, record_key, op))""")
        con.execute(
            f"insert into {SCHEMA}.keap_create_intents values ('products', 'p', 'sku', '{{}}', 'r', now() - interval 90 day, 'k')"
        )
        con.execute(f"""insert into {SCHEMA}.rejections values ('contacts', 'keap', 'k', 'update', 'bad', null, 400,
                        now() - interval 90 day, now() - interval 90 day, 1, now() - interval 90 day)""")
    ensure_state(db)
    ensure_state(db)  # idempotent
    assert [e.rows for e in retention(db, 30, apply=True) if e.rows] == [1, 1]


@pytest.fixture
def cli_env(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRMSYNC_DB", str(db))
    monkeypatch.delenv("CRMSYNC_RETENTION_DAYS", raising=False)
    umask = os.umask(0o022)  # the CLI makes its process's umask private: give pytest's back after
    os.umask(umask)
    try:
        yield db
    finally:
        os.umask(umask)


def test_the_command_shows_then_applies(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = CliRunner().invoke(main, ["retention"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "personal data older than 30 days"
    assert lines[2].split("\t")[:3] == ["sync_state.operations", "payload, answer", "1"]
    assert lines[-1] == "6 rows would be blanked: `crmsync retention --apply` does it"
    monkeypatch.setenv("CRMSYNC_RETENTION_DAYS", "90")
    assert CliRunner().invoke(main, ["retention", "--apply"]).stdout.splitlines()[-1] == "nothing to blank"
    applied = CliRunner().invoke(main, ["retention", "--apply", "--days", "30"])
    assert applied.stdout.splitlines()[-1] == "blanked the values of 6 rows"
    assert "ada@example.com" not in repr(duckdb.connect(str(cli_env)).execute(
        f"select payload, answer from {SCHEMA}.operations where run_id = 'run-old'").fetchall())  # fmt: skip
