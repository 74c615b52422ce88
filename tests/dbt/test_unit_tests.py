"""The dbt unit tests run here, once, rather than in every sync's build (they check the
models' SQL on fixed fixtures, so the data of a run cannot change their outcome)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crmsync.dbt import PROJECT_DIR, build, run_dbt, target_dir
from reverse_etl.state import ensure_state
from support.warehouse import ENV


def _declared_unit_tests() -> set[str]:
    names: set[str] = set()
    for path in (PROJECT_DIR / "models").rglob("*.yml"):
        for test in (yaml.safe_load(path.read_text()) or {}).get("unit_tests", []):
            names.add(test["name"])
    return names


def _unit_test_results(result: object) -> dict[str, str]:
    return {
        node.node.name: str(node.status)
        for node in getattr(result, "results", [])
        if node.node.resource_type == "unit_test"
    }


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_every_unit_test_runs_and_passes_and_the_sync_build_leaves_them_out(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On both engines: the postgres__ macros must give the fixtures' expected rows too."""
    if engine == "postgres":
        monkeypatch.setenv(ENV, request.getfixturevalue("warehouse"))
    else:
        monkeypatch.delenv(ENV, raising=False)
    declared = _declared_unit_tests()
    assert len(declared) >= 10
    db = tmp_path / "unit.duckdb"
    ensure_state(db)  # no raw data at all: the models build empty, the fixtures do the rest

    with_units = build(db, unit_tests=True)
    ran = _unit_test_results(with_units.result)
    assert set(ran) == declared
    assert set(ran.values()) == {"pass"}, ran

    sync_build = build(db)
    assert _unit_test_results(sync_build.result) == {}
    assert any(n.node.resource_type == "test" for n in sync_build.result.results)  # the data tests still run


def test_two_duckdb_files_in_one_process_each_build_against_their_own_catalog(tmp_path: Path) -> None:
    """The parsed project is reused within a process; the file's name is the catalog its
    SQL names, so a project parsed for one file must not be reused for another."""
    for name in ("first", "second"):
        db = tmp_path / f"{name}.duckdb"
        ensure_state(db)
        assert build(db).success


def test_two_files_of_one_name_in_two_folders_share_one_parse_and_each_builds_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parse is keyed by the file's name (its catalog), not its folder: a test's worlds
    and `crmsync plan`'s scratch copy do not parse again. Each build still writes to the
    file it was given, never to the other one."""
    import duckdb

    from crmsync import dbt

    parsed: dict[str, object] = {}
    monkeypatch.setattr(dbt, "_MANIFESTS", parsed)  # one entry per parse
    first, second = tmp_path / "a" / "crmsync.duckdb", tmp_path / "b" / "crmsync.duckdb"
    for db in (first, second):
        db.parent.mkdir()
        ensure_state(db)
    with duckdb.connect(str(first)) as con:  # a row only the first file has
        con.execute("create schema if not exists marker; create table marker.only_here as select 1 as x")
    assert build(first).success
    assert build(second).success
    assert len(parsed) == 1  # the second reused the first's parse
    for db in (first, second):
        with duckdb.connect(str(db), read_only=True) as con:
            tables = {name for (name,) in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'main'").fetchall()}  # fmt: skip
            marked = con.execute(
                "select count(*) from duckdb_tables() where schema_name = 'marker'").fetchone()[0]  # type: ignore[index]  # fmt: skip
        assert {"link_contacts", "sync_customcrm__contacts"} <= tables, db
        assert marked == (1 if db == first else 0)  # each file is only its own


def test_dbt_log_file_has_each_node_and_the_sql_only_when_debugging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt's log file names every node it ran; the SQL statements (a tenth of a build's time to
    write) (and their outcomes) only with CRMSYNC_DBT_LOG_LEVEL=debug, which `crmsync --debug` sets."""
    db = tmp_path / "logs.duckdb"
    ensure_state(db)
    log = target_dir(db) / "logs" / "dbt.log"
    monkeypatch.delenv("CRMSYNC_DBT_LOG_LEVEL", raising=False)
    assert run_dbt(["seed", "--select", "country_codes"], db).success
    plain = log.read_text()
    assert "country_codes" in plain and "SQL status" not in plain
    log.unlink()
    monkeypatch.setenv("CRMSYNC_DBT_LOG_LEVEL", "debug")
    assert run_dbt(["seed", "--select", "country_codes"], db).success
    assert "SQL status" in log.read_text()  # each statement with its outcome


def test_a_per_mapping_var_may_name_some_mappings_and_not_one_that_does_not_exist(tmp_path: Path) -> None:
    """`--vars '{"conflict_policy": {"orders": "keap"}}'` (the docs' own example) sets orders
    and leaves the others at the project's default; a key naming no mapping stops the build."""
    db = tmp_path / "vars.duckdb"
    ensure_state(db)
    some = {"conflict_policy": {"orders": "keap"}, "delete_counterparts": {"contacts": True}}
    compiled = run_dbt(
        ["compile", "--select", "int_orders__merged int_customers__merged sync_customcrm__contacts"], db, some
    )
    assert compiled.success, compiled.failures
    sql = {n.node.name: n.node.compiled_code for n in compiled.result.results}
    assert "'conflict_policy_keap'" in sql["int_orders__merged"]
    customers = sql["int_customers__merged"]  # not named: the default, the newer side wins
    assert "when customcrm_is_newer then 'customcrm'" in customers and "'conflict_policy_" not in customers
    assert "delete its Customcrm counterpart" in sql["sync_customcrm__contacts"]
    typo = run_dbt(["compile", "--select", "int_orders__merged"], db, {"conflict_policy": {"order": "keap"}})
    assert not typo.success
    assert "conflict_policy.order names no mapping" in " ".join(typo.failures)
