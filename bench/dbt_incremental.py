"""Figure: the model layer on a synced account, a build after 1% of the records changed
against a first build and a full rebuild of the same data (issue 17, goal 3).

    python -m bench.sync --size 100000 --limits off --keep /tmp/synced     # a synced account
    python -m bench.dbt_incremental --from /tmp/synced/synced-100000.duckdb [--replicate 10]

The file is a real account after its first sync and the run after it: every pair linked,
every base written, nothing left to write. `--replicate N` multiplies it N times inside
DuckDB (bench.dbt_build.replicate: the raw rows re-keyed per copy; here also the links),
and the copies' bases are the values both of their sides hold after a first build, which
is what the sync would have written: the copies are as settled as the original.

Then, each `dbt build` the sync runs (models, seeds, data tests) in a process of its own,
its time and peak memory, its nodes' summed seconds per kind (models, data tests), its
slowest nodes, and whether it ran out of the memory the account's size gives DuckDB and
was run again at 80% of the machine (`second_attempt`):
1. a first build (`--full-refresh`, as on a new file or after a project change);
2. (copies only) the build after the copies' bases were written: they moved, so it
   re-merges every copy's pairs;
3. a build with nothing changed;
4. a build after 1% of each kind changed on each side: the raw rows as the next extract
   would load them (a changed property and update time), as many on each side, different
   records;
5. a full rebuild of that same data, and whether both found the same pending changes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from bench.common import emit, machine
from bench.dbt_build import node_seconds, replicate, run_results, slowest_nodes
from registry.mappings import MAPPINGS

BUILD = """
import json, resource, sys, time
from pathlib import Path
from crmsync.dbt import build
started = time.perf_counter()
result = build(Path(sys.argv[1]), full_refresh=sys.argv[2] == "full")
print(json.dumps({"ok": result.success, "note": result.note, "seconds": time.perf_counter() - started,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""

# per raw table: the property an edit changes and the payload's update time
EDITS = {
    ("raw_keap", "companies"): ("notes", "update_time"),
    ("raw_keap", "contacts"): ("job_title", "update_time"),
    ("raw_keap", "opportunities"): ("opportunity_notes", "update_time"),
    ("raw_keap", "products"): ("description", "update_time"),
    ("raw_customcrm", "customers"): ("Description", "UpdatedAt"),
    ("raw_customcrm", "contacts"): ("Title", "UpdatedAt"),
    ("raw_customcrm", "orders"): ("Description", "UpdatedAt"),
    ("raw_customcrm", "products"): ("Description", "UpdatedAt"),
}


def build_in_child(db: Path, full: bool) -> dict[str, Any]:
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-c", BUILD, str(db), "full" if full else "incremental"],
                              capture_output=True, text=True, check=False)  # fmt: skip
    if finished.returncode != 0:
        failed = [line for line in finished.stderr.splitlines() if "rror" in line][-3:]
        raise SystemExit(f"the build failed: {' | '.join(failed) or finished.stderr[-500:]}")
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    return {**report, "process_seconds": round(time.perf_counter() - started, 1)}


def replicate_links(db: Path, factor: int) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute("create temp table original as select * from sync_state.links")
        for k in range(1, factor):
            con.execute(
                f"""insert into sync_state.links by name
                    select * replace ('{k}000' || keap_id as keap_id,
                                      regexp_replace(customcrm_id, '^([a-z]+)_', '\\1_R{k}') as customcrm_id)
                    from original"""
            )


def settle_copies(db: Path) -> None:
    """The bases the sync would write for the pairs whose sides agree."""
    with duckdb.connect(str(db)) as con:
        con.execute(
            """insert into sync_state.base_values
               select mapping, keap_id, field, keap_value, now(), 'bench' from intermediate.int_merged_fields
               where keap_id is not null and customcrm_id is not null
                   and keap_value is not distinct from customcrm_value and not has_base"""
        )


def unsettled(db: Path) -> int:
    """Pairs with something to write or a base to move, as the last build left them."""
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            """select count(*) from (select distinct mapping, keap_id, customcrm_id from main.sync_field_decisions
               where not has_base or write_to <> 'none' or base_value is distinct from merged_value)"""
        ).fetchone()
        return int(row[0]) if row else 0


def edit_one_percent(db: Path) -> dict[str, int]:
    """1% of each raw table's records changed as an extract would load them: Keap's and
    Customcrm's 1% are different records (ids hashing to 0 and 1 modulo 100)."""
    edited = {}
    with duckdb.connect(str(db)) as con:
        for (schema, table), (prop, stamp) in EDITS.items():
            bucket = 0 if schema == "raw_keap" else 1
            row = con.execute(
                f"""update {schema}.{table} set
                        payload = json_merge_patch(payload, json_object('{prop}', 'bench edit',
                                                                        '{stamp}', '2030-01-01T00:00:00.000Z')),
                        updated_at = '2030-01-01 00:00:00+00',
                        _extracted_at = now()
                    where hash(id) % 100 = {bucket}"""
            ).fetchone()
            edited[f"{schema}.{table}"] = int(row[0]) if row else 0
    return edited


def pending(db: Path) -> list[tuple[Any, ...]]:
    """What a push would do: every pending decision, sorted."""
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            """select mapping, keap_id, customcrm_id, field, merged_value, write_to from main.sync_field_decisions
               where not has_base or base_value is distinct from merged_value order by all"""
        ).fetchall()


def remerged(db: Path) -> int:
    """Pairs the last build merged (its invocation id is the newest `merged_in_build`)."""
    from crmsync.dbt import target_dir

    invocation = json.loads((target_dir(db) / "run_results.json").read_text())["metadata"]["invocation_id"]
    union = " union all ".join(
        f"select pair_key, merged_in_build from intermediate.int_{m.name}__merged" for m in MAPPINGS
    )
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(f"select count(distinct pair_key) from ({union}) where merged_in_build = ?",
                          [invocation]).fetchone()  # fmt: skip
        return int(row[0]) if row else 0


def records(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("select count(*) from raw_keap.contacts").fetchone()
        return int(row[0]) if row else 0


def run(source: Path, factor: int) -> None:
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        db = Path(tmp) / "bench.duckdb"
        shutil.copy2(source, db)
        if factor > 1:
            replicate(db, factor)
            replicate_links(db, factor)
        per_kind = records(db)

        def figure(step: str, full: bool, **extra: Any) -> None:
            figures = build_in_child(db, full)
            nodes = run_results(db)
            emit("dbt_incremental", {
                "size_per_kind": per_kind, "replicated_from": per_kind // factor if factor > 1 else None,
                "step": step, "seconds": round(float(figures["seconds"]), 1),
                "process_seconds": figures["process_seconds"], "peak_rss_mib": figures["peak_rss_mib"],
                "ok": figures["ok"], "pairs_merged": remerged(db), "pairs_unsettled": unsettled(db),
                "node_seconds": node_seconds(nodes), "slowest_nodes": slowest_nodes(nodes),
                # a build that ran out of the account's estimate and ran again at 80%: the
                # figures are the second attempt's, and the state keeps 80% for the next builds
                "second_attempt": figures.get("note") is not None, **extra,
            })  # fmt: skip

        figure("first build", full=True)
        if factor > 1:
            settle_copies(db)
            figure("the copies' bases written", full=False)
        figure("nothing changed", full=False)
        edited = edit_one_percent(db)
        figure("1% changed on each side", full=False, edited=edited)
        incremental = pending(db)
        figure("full rebuild of the same data", full=True)
        rebuilt = pending(db)
        emit("dbt_incremental", {"size_per_kind": per_kind, "step": "compare",
                                 "pending_incremental": len(incremental), "pending_full": len(rebuilt),
                                 "same_pending_changes": incremental == rebuilt})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--from", dest="source", type=Path, required=True, help="a synced DuckDB file")
    parser.add_argument("--replicate", type=int, default=1, help="multiply the account this many times")
    args = parser.parse_args()
    print(f"# machine: {machine()}")
    run(args.source, args.replicate)


if __name__ == "__main__":
    main()
