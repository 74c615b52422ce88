"""The inputs' fingerprint moves with anything the models read, and with nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from crmsync.dbt import PROJECT_DIR
from crmsync.fingerprint import input_fingerprint, project_fingerprint
from reverse_etl.state import ensure_state, last_quiet, record_quiet


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "f.duckdb"
    ensure_state(path)
    with duckdb.connect(str(path)) as con:
        con.execute("create schema raw_keap")
        con.execute(
            """create table raw_keap.contacts as
               select i::varchar as id, '{"given_name": "A' || i || '"}' as payload,
                      now() as _extracted_at, 'load-1' as _dlt_load_id, 'row-' || i as _dlt_id
               from range(50) r(i)"""
        )
        con.execute("create table raw_keap._dlt_loads as select 'load-1' as load_id, now() as inserted_at")
    return path


def _sql(db: Path, statement: str) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(statement)


def test_a_reload_of_the_same_rows_keeps_the_fingerprint(db: Path) -> None:
    before = input_fingerprint(db, None)
    _sql(db, "update raw_keap.contacts set _extracted_at = now() + interval 1 hour, _dlt_load_id = 'load-2', "
             "_dlt_id = _dlt_id || 'x'")  # fmt: skip
    _sql(db, "insert into raw_keap._dlt_loads values ('load-2', now())")
    assert input_fingerprint(db, None) == before


@pytest.mark.parametrize(
    "change",
    [
        "update raw_keap.contacts set payload = '{\"given_name\": \"B\"}' where id = '7'",
        "insert into raw_keap.contacts values ('99', '{}', now(), 'load-2', 'row-99')",
        "delete from raw_keap.contacts where id = '3'",
        "create table raw_keap.companies as select '1' as id, '{}' as payload",
        "insert into sync_state.base_values values ('contacts', '1', 'Title', 'x', now(), 'r')",
        "insert into sync_state.links values ('contacts', '1', 'c1', 'natural_key', now(), 'r', now())",
        "insert into sync_state.rejections values ('contacts', 'keap', '1', 'update', 'bad', null, 400,"
        " now(), now(), 1, null)",
        "insert into sync_state.keap_create_intents (mapping, customcrm_id, natural_key, payload, run_id, intended_at)"
        " values ('products', 'p1', 'n', '{}', 'r', now())",
        "insert into sync_state.conflicts values ('r', 'contacts', '1', 'c1', 'Title', 'a', 'b', 'c', 'keap',"
        " 'newest', now())",
    ],
)
def test_any_change_to_what_the_models_read_moves_it(db: Path, change: str) -> None:
    before = input_fingerprint(db, None)
    _sql(db, change)
    assert input_fingerprint(db, None) != before


def test_other_vars_move_it(db: Path) -> None:
    assert input_fingerprint(db, None) != input_fingerprint(db, {"conflict_policy": {"contacts": "keap"}})


def test_an_edited_model_or_macro_moves_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    before = project_fingerprint(project)
    assert project_fingerprint(project) == before
    model = next((project / "models").rglob("*.sql"))
    model.write_text(model.read_text() + "\n-- edited\n")
    edited = project_fingerprint(project)
    assert edited != before
    macro = next((project / "macros").rglob("*.sql"))
    macro.write_text(macro.read_text() + "\n")
    assert project_fingerprint(project) != edited


def test_only_the_last_quiet_run_is_remembered_and_a_failed_one_forgets_it(db: Path) -> None:
    assert last_quiet(db) is None
    record_quiet(db, "abc", "run-1")
    record_quiet(db, "def", "run-2")
    assert last_quiet(db) == ("def", "run-2")
    record_quiet(db, None, "run-3")
    assert last_quiet(db) is None
