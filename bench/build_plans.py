"""Figures: where a first build's time goes on PostgreSQL, and the plans of its models.

    python -m bench.build_plans --size 3000 [--explain int_customers__matched ...]

A throwaway cluster (tests/postgres.py), sandboxes seeded with `size` records per kind
(the demo's twins and own records in Customcrm), extracted by `crmsync extract` into a
database of its own, then one `dbt build` as the sync runs it (crmsync.dbt: the
session's planner settings included). Printed: the build's time and its slowest nodes
(dbt's run_results), then for each model named by `--explain` (by default the three
matching models) `EXPLAIN ANALYZE` of its compiled SQL in a session with the build's
settings: execution time, the JIT's share and the most loops any plan node ran (a nested
loop rescanning a join once per row shows here as thousands).

The issue-18 profile (bench/RESULTS.md) is this script's output before and after the
build's planner settings and statistics.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import emit, main_for, sandboxes
from bench.dbt_build import run_results, slowest_nodes

MATCHING = ["int_customers__matched", "int_contacts__matched", "int_products__matched"]


def plan_figures(plan: str) -> dict[str, float | int]:
    """Execution time, JIT time and the most loops of one node, from EXPLAIN ANALYZE's text."""
    execution = re.search(r"Execution Time: ([\d.]+) ms", plan)
    jit = re.search(r"Timing: .* Total ([\d.]+) ms", plan)
    loops = [int(n) for n in re.findall(r"loops=(\d+)", plan)]
    return {
        "execution_ms": float(execution.group(1)) if execution else -1.0,
        "jit_ms": float(jit.group(1)) if jit else 0.0,
        "most_loops": max(loops, default=0),
    }


def run(size: int, explain: list[str] | None = None) -> None:
    import psycopg2

    from crmsync import dbt
    from reverse_etl.state import ensure_state
    from support.warehouse import ENV
    from tests.postgres import cluster, create_database

    with cluster() as url, tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        work = Path(tmp)
        db = work / "bench.duckdb"  # the local state's folder; the data is in the warehouse
        os.environ[ENV] = create_database(url)
        try:
            with sandboxes(work / "sandbox", size) as boxes:
                env = boxes.env(db)
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "crmsync.cli", "extract"], env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                extract_s = time.perf_counter() - started
            ensure_state(db)
            started = time.perf_counter()
            dbt.build(db)
            build_s = time.perf_counter() - started
            emit("build_plans", {"size_per_kind": size, "warehouse": "postgres", "extract_seconds": round(extract_s, 1),
                                 "build_seconds": round(build_s, 1), "slowest": slowest_nodes(run_results(db), 8),
                                 "pgoptions": os.environ.get("PGOPTIONS")})  # fmt: skip
            # the build's session settings (dbt's PGOPTIONS), as its models ran
            with psycopg2.connect(os.environ[ENV], options=os.environ.get("PGOPTIONS", "")) as con:
                cursor = con.cursor()
                cursor.execute("set search_path = main, public")
                for model in explain or MATCHING:
                    sql = next(dbt.target_dir(db).glob(f"compiled/**/{model}.sql")).read_text()
                    cursor.execute("explain (analyze) " + sql)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                    emit("build_plans", {"size_per_kind": size, "model": model, **plan_figures(plan)})
        finally:
            del os.environ[ENV]


def main() -> None:
    main_for(run, __doc__, default_size=3000,
             explain={"action": "append", "help": "a model to EXPLAIN ANALYZE (repeatable)"})  # fmt: skip


if __name__ == "__main__":
    main()
