"""dbt in-process (dbtRunner): the run holds no other DuckDB connection meanwhile. On a
PostgreSQL warehouse (CRMSYNC_WAREHOUSE) the profile's `postgres` target, its connection
taken from the URL (dbt_project/profiles.yml)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmsync.filemodes import state_dir
from support import warehouse

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"


class DbtError(Exception):
    """dbt failed; the message names the nodes that failed."""


@dataclass
class DbtResult:
    success: bool
    failures: list[str]
    result: Any
    note: str | None = None  # what the operator should know (the build was run twice)


_MANIFESTS: dict[str, Any] = {}


def target_dir(db_path: Path) -> Path:
    """dbt's artifacts (manifest, compiled SQL, docs site) beside the DuckDB file's state,
    so two syncs on two files never share them, and the repository stays clean."""
    return state_dir(Path(db_path).resolve()) / "dbt"


def _target() -> list[str]:
    """The profile's target: `default` (the DuckDB file), or `postgres` with its connection
    from CRMSYNC_WAREHOUSE (the environment profiles.yml reads; the session's time zone UTC,
    as the models' dates and times assume).

    The planner settings are the ones that fit a build: every model is a few big joins
    over tables without indexes, where a nested loop is never the cheaper plan, only the one
    a poor row estimate picks: through the chains of CTEs over JSON-derived keys the
    estimates fall to a row or two, and the loop rescans a join once per row (quadratic in
    the unlinked records; bench/RESULTS.md, issue 18). The two settings go together: with
    nested loops off, a plan that still needs one (a join on an inequality) is costed about
    1e10 higher, past the JIT's threshold, and the JIT then compiled for longer than the
    query ran (1.6 s of a 1.7 s model at 3,000 records per kind)."""
    url = warehouse.url()
    if url is None:
        return []
    for name, value in warehouse.parts(url).items():
        os.environ[f"CRMSYNC_PG_{name.upper()}"] = value
    os.environ["PGOPTIONS"] = "-c timezone=UTC -c jit=off -c enable_nestloop=off"
    # the URL's TLS settings, which the profile has no key for: libpq reads them from here
    for name, value in warehouse.tls(url).items():
        os.environ[f"PG{name.upper()}"] = value
    return ["--target", "postgres"]


def _paths(db_path: Path) -> list[str]:
    target = target_dir(db_path)
    return [
        *_target(),
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(target),
        "--log-path",
        str(target / "logs"),
    ]


def _manifest(variables_json: str, db_path: Path) -> Any:
    """The parsed project, once per process, vars and DuckDB file name: every later
    invocation skips parsing. The file's name (its stem) is the catalog the compiled SQL
    names, and all of the manifest that depends on the file; where the file is comes from
    the profile, read again by each invocation. Two files of one name in two folders (a
    test's worlds, `crmsync plan`'s scratch copy) share one parse."""
    url = warehouse.url()
    where = f"postgres:{warehouse.parts(url)['database']}:{warehouse.prefix()}" if url else Path(db_path).stem
    key = f"{where}|{variables_json}"
    if key not in _MANIFESTS:
        command = ["parse", *_paths(db_path), "--quiet"]
        if variables_json != "{}":
            command += ["--vars", variables_json]
        from dbt.cli.main import dbtRunner  # 2-3 s to import: only when dbt runs (a quiet sync skips it)

        outcome = dbtRunner().invoke(command)
        if not outcome.success:
            raise DbtError(f"dbt parse failed: {outcome.exception}")
        _MANIFESTS[key] = outcome.result
    return _MANIFESTS[key]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def release() -> None:
    """Close the DuckDB file dbt-duckdb keeps open in this process after an invocation (its
    connection is a process-wide singleton, `keep_open` by default): without this, the
    process would go on holding the file (read-only connections here, and every other
    program, would be refused) until it exits."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a dependency
        return
    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        if env is not None:
            env.close()
            DuckDBConnectionManager._ENV = None


def run_dbt(
    args: Sequence[str], db_path: Path, variables: dict[str, Any] | None = None, quiet: bool = True
) -> DbtResult:
    """`dbt <args>` on CRMSYNC_DB, with the project's own profiles.yml; the file is released
    when dbt is done (release)."""
    import json

    os.environ["CRMSYNC_DB"] = str(Path(db_path).resolve())
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    command = [*args, *_paths(db_path)]
    if not sys.stdout.isatty():  # dbt's colour codes are for terminals; logs get plain text
        command.append("--no-use-colors")
    variables_json = json.dumps(variables or {}, sort_keys=True)
    if variables:
        command += ["--vars", variables_json]
    if quiet and args and args[0] != "docs":
        # nothing of dbt's on stdout, not even its errors: the run reports a failing node in
        # its own one line (DbtResult.failures), and `crmsync sync --json` prints only JSON
        command += ["--quiet", "--log-level", "none"]
    # dbt's own log file (<state>/dbt/logs/dbt.log): each node's start, end and errors; every
    # SQL statement only with `crmsync --debug` (writing them cost ~10% of a build)
    command += ["--log-level-file", os.environ.get("CRMSYNC_DBT_LOG_LEVEL", "info")]
    reuse = args and args[0] in ("build", "run", "test")
    from dbt.cli.main import dbtRunner

    runner = dbtRunner(manifest=_manifest(variables_json, db_path)) if reuse else dbtRunner()
    try:
        outcome = runner.invoke(command)
    finally:
        release()
    failures: list[str] = []
    results = getattr(outcome.result, "results", None) or []
    for node in results:
        status = str(getattr(node, "status", ""))
        if status in ("error", "fail", "runtime error"):
            failures.append(ANSI.sub("", f"{node.node.unique_id}: {node.message}"))
    if outcome.exception is not None:
        failures.append(ANSI.sub("", str(outcome.exception)))
    return DbtResult(outcome.success, failures, outcome.result)


def models_signature(variables: dict[str, Any] | None) -> str:
    """What the incremental merge was built with: the project's files and the vars. When it
    changes, the next build is a full refresh (macros/incremental_merge.sql)."""
    import hashlib
    import json

    from crmsync.fingerprint import project_fingerprint

    document = {"project": project_fingerprint(), "vars": variables or {}}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


# DuckDB's memory in a sync's `dbt build` when CRMSYNC_DUCKDB_MEMORY_LIMIT is not set: what
# the account's size needs rather than DuckDB's own default (80% of the machine, which it
# fills with what it read: 2.5 GB at 100,000 records per kind). Measured (bench/RESULTS.md):
# 800,000 raw records (100,000 per kind on each side) build within 1 GB; 8,000,000 need more
# than 4 GB and build within 15 GB. A build that still runs out is run again at 80%.
MEMORY_FLOOR_MB = 1024
MEMORY_PER_RECORD_KB = 1
MACHINE_SHARE = "80%"
RAN_SHORT = "memory_ran_short.json"  # in dbt's folder of the state: the size a build ran short at
# in dbt's folder of the state while a build runs: left by a build that failed or was killed,
# whose tables may hold rows no test has seen, so the next build is a full one
UNFINISHED = "build_unfinished"
# the data tests a build without its tests (`tests=False`) still runs: the tests that see only
# the rows their own build wrote (macros/tests/unique_in_build.sql, one_flagged_in_build.sql)
# must run in every build
PER_BUILD_TESTS = "test_name:unique_in_build test_name:one_flagged_in_build"


UNITS_MB = {"bytes": 2**-20, "KiB": 2**-10, "MiB": 1, "GiB": 2**10, "TiB": 2**20,
            "KB": 1e3 / 2**20, "MB": 1e6 / 2**20, "GB": 1e9 / 2**20, "TB": 1e12 / 2**20}  # fmt: skip


def account_size(db_path: Path) -> tuple[int, float | None]:
    """The raw records of both systems in the file (DuckDB's estimate: no scan), and
    DuckDB's own default memory limit in MiB (80% of what it sees: a container's limit,
    not the host's); (0, None) when the file cannot be read now (then the default it is)."""
    import duckdb

    with duckdb.connect() as memory:  # in memory: DuckDB's own default, whatever the file
        (limit,) = memory.execute("select current_setting('memory_limit')").fetchone() or ("",)
    found = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)", str(limit).strip())
    default_mb = float(found[1]) * UNITS_MB[found[2]] if found and found[2] in UNITS_MB else None
    if not Path(db_path).exists():
        return 0, default_mb
    try:
        with duckdb.connect(str(db_path), read_only=True) as con:
            row = con.execute(
                """select coalesce(sum(estimated_size), 0) from duckdb_tables()
                   where schema_name in ('raw_keap', 'raw_customcrm') and not starts_with(table_name, '_dlt')"""
            ).fetchone()
    except duckdb.Error:  # this process holds the file with another configuration: size unknown
        return 0, None
    return (int(row[0]) if row else 0), default_mb


def _ran_short(db_path: Path) -> Path:
    """Where a sync's build that ran out of the estimate left the account's size at the
    time (`crmsync plan` brings it into its scratch copy: crmsync.run.scratch_copy)."""
    return target_dir(db_path) / RAN_SHORT


def memory_limit_for(db_path: Path) -> str | None:
    """DuckDB's memory limit for a build of this account, or None for the configured one
    (CRMSYNC_DUCKDB_MEMORY_LIMIT, else DuckDB's default, 80%): 1 KB per raw record, at
    least 1 GB; None when that reaches the default, and once a build of an account this
    size or smaller ran out of the estimate (a build is not tried twice in every run)."""
    import json

    if "CRMSYNC_DUCKDB_MEMORY_LIMIT" in os.environ or warehouse.url():
        return None  # the operator's choice; PostgreSQL's memory is its server's
    records, default_mb = account_size(db_path)
    try:
        if records >= json.loads(_ran_short(db_path).read_text())["records"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        pass  # never ran short
    needed_mb = max(MEMORY_FLOOR_MB, records * MEMORY_PER_RECORD_KB // 1024)
    if default_mb is None or needed_mb >= default_mb:
        return None
    return f"{needed_mb}MB"


def _remember_short(db_path: Path, limit: str) -> None:
    import json

    path = _ran_short(db_path)
    document = json.dumps({"records": account_size(db_path)[0], "limit": limit})
    with suppress(OSError):  # not remembered: the next run tries the estimate once more
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner only, as all state
        with os.fdopen(descriptor, "w") as out:
            out.write(document)


def _out_of_memory(result: DbtResult) -> bool:
    return any("Out of Memory Error" in failure for failure in result.failures)


def built_signatures(db_path: Path) -> set[str | None]:
    """The signatures the merge tables were last built with (each table's comment, written
    by its post-hook); None for a table missing, or built before it kept one."""
    import duckdb

    from registry.mappings import MAPPINGS

    names = [f"int_{mapping.name}__merged" for mapping in MAPPINGS]
    if warehouse.url():
        with warehouse.connect(db_path) as con:
            rows = con.execute(
                """select c.relname, obj_description(c.oid, 'pg_class') from pg_class as c
                   join pg_namespace as n on n.oid = c.relnamespace
                   where n.nspname = 'intermediate' and c.relkind = 'r'"""
            ).fetchall()
        comments = dict(rows)
        return {comments.get(name) or None for name in names}
    try:
        with duckdb.connect(str(db_path), read_only=True) as con:
            rows = con.execute(
                """select table_name, comment from duckdb_tables()
                   where schema_name = 'intermediate' and list_contains(?, table_name)""",
                [names],
            ).fetchall()
    except (duckdb.IOException, duckdb.CatalogException):
        return {None}  # no file yet
    comments = dict(rows)
    return {comments.get(name) or None for name in names}


def build(
    db_path: Path,
    variables: dict[str, Any] | None = None,
    select: str | None = None,
    tests: bool = True,
    unit_tests: bool = False,
    full_refresh: bool = False,
) -> DbtResult:
    """`dbt build` (models, seeds and their data tests: a failing test stops the sync before
    any write), or, when the tests already passed in this sync (`tests=False`), the models
    with only the tests that see the rows their own build wrote (PER_BUILD_TESTS).

    The merge is incremental (macros/incremental_merge.sql): a build re-merges the pairs that
    changed. It is rebuilt whole (`--full-refresh`) when asked, and when the project's files
    or the vars differ from the ones it was built with: a new field, policy or merge rule
    applies to every pair at once.

    Unit tests check the models' SQL on fixed fixtures, not the data: they cannot change
    from one run to the next unless the project does, so they run in `make test` (and
    with `unit_tests=True`), not in every sync, where they were ~40% of a small build.

    DuckDB's memory: CRMSYNC_DUCKDB_MEMORY_LIMIT when set; else what the account's size
    suggests (memory_limit_for), and when the build runs out of that, the same build again
    at DuckDB's default (the result's `note` says so).

    A build that failed or was killed is followed by a full one: its tables may hold rows
    that no test saw, and some tests look only at the rows of the build that runs them."""
    signature = models_signature(variables)
    unfinished = target_dir(db_path) / UNFINISHED
    if tests:
        args = ["build"] + (["--select", select] if select else [])
        if not unit_tests:
            args += ["--exclude-resource-type", "unit_test"]
    else:
        args = ["build", "--select", f"{select or 'resource_type:model'} {PER_BUILD_TESTS}",
                "--indirect-selection", "empty"]  # fmt: skip
    if full_refresh or built_signatures(db_path) != {signature} or unfinished.exists():
        args.append("--full-refresh")
    unfinished.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    unfinished.touch(mode=0o600)
    dbt_vars = {**(variables or {}), "models_signature": signature}
    lean = memory_limit_for(db_path)
    if lean is None:
        result = run_dbt(args, db_path, dbt_vars)
    else:
        os.environ["CRMSYNC_DUCKDB_MEMORY_LIMIT"] = lean  # read by dbt_project/profiles.yml
        try:
            result = run_dbt(args, db_path, dbt_vars)
        finally:
            del os.environ["CRMSYNC_DUCKDB_MEMORY_LIMIT"]
        if not result.success and _out_of_memory(result):  # the estimate was short: the default
            _remember_short(db_path, lean)
            result = run_dbt(args, db_path, dbt_vars)
            result.note = (f"dbt {args[0]} ran out of the {lean} this account's size suggested and "
                           f"was run again with DuckDB's default ({MACHINE_SHARE} of the machine), "
                           "as this state's next builds will be (CRMSYNC_DUCKDB_MEMORY_LIMIT sets it)")  # fmt: skip
    if not result.success:
        hint = ""
        if _out_of_memory(result):
            limit = os.environ.get("CRMSYNC_DUCKDB_MEMORY_LIMIT", MACHINE_SHARE)
            hint = f" (DuckDB ran out of its memory limit, {limit}: raise CRMSYNC_DUCKDB_MEMORY_LIMIT)"
        raise DbtError(f"dbt {args[0]} failed{hint}: " + "; ".join(result.failures[:5]))
    unfinished.unlink(missing_ok=True)
    return result
