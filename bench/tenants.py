"""Figures: many Keap accounts on one installation, `crmsync sync --all-tenants`.

    python -m bench.tenants                         # 20 tenants of 1,000 records per kind
    python -m bench.tenants --tenants 20 --size 1000 --parallel 2 --limits published

Each tenant has a sandbox pair of its own (`crmsync sandbox`, its own process, seeded
with its own seed: 1,000 records per kind in Keap, the demo's 8% twins and 4% own records
in Customcrm), and its own state. One `crmsync sync --all-tenants --json` syncs them all,
`--parallel` at once. Then the slowest tenant's first sync runs again alone, on fresh
sandboxes of the same seed and a fresh state: the total against that is what the
sharing costs (on 2 cores, tenants beyond 2 at once only queue for the CPU).

Printed: the total wall time, each tenant's own seconds in the shared run (slowest,
median, sum), the slowest tenant alone, the requests each API served, the largest
peak memory of one process (a tenant's sync), and that every tenant ended ok with a link
row for every Keap record: the link rows by status, over all tenants (`ambiguous` and
`waiting` are held for a person, as the demo's data asks; Customcrm's own records, not
in Keap, are `customcrm_only` while creating in Keap is off, the default).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import RunningSandboxes, emit, main_for, sandboxes


def _tenants_file(path: Path, boxes: dict[str, RunningSandboxes], env: dict[str, str], states: Path) -> None:
    entries = []
    for name, box in boxes.items():
        key, token = f"{name.upper()}_KEAP_KEY", f"{name.upper()}_CRM_TOKEN"
        env[key], env[token] = box.keap_key, box.customcrm_token
        entries.append(f"""[tenants.{name}]
keap_api_url = "{box.keap_url}"
keap_api_key = {{ env = "{key}" }}
customcrm_api_url = "{box.customcrm_url}"
customcrm_api_token = {{ env = "{token}" }}
state = "{states / name}.duckdb"
""")
    path.write_text("\n".join(entries))
    path.chmod(0o600)


def _crmsync(env: dict[str, str], *args: str) -> dict[str, Any]:
    """One `crmsync ... --json` process: its document, wall time and the largest peak memory
    of it and its children (each tenant's sync is a child)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "crmsync.cli", *args, "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, _ = os.wait4(process.pid, 0)
    return {"answer": json.loads(output), "seconds": time.perf_counter() - started,
            "exit": os.waitstatus_to_exitcode(status),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024}  # fmt: skip


def _links(state: Path) -> dict[str, int]:
    """The tenant's link rows by status, over the four mappings, and (`keap_records`) the
    Keap records they name."""
    import duckdb

    found: dict[str, int] = {"keap_records": 0}
    with duckdb.connect(str(state), read_only=True) as con:
        for mapping in ("customers", "contacts", "orders", "products"):
            query = f"select link_status, count(*) from link_{mapping} group by all"
            for status, count in con.execute(query).fetchall():
                found[status] = found.get(status, 0) + count
            (named,) = con.execute(f"select count(distinct keap_id) from link_{mapping}").fetchone() or (0,)
            found["keap_records"] += named
    return found


def run(size: int, tenants: int, parallel: int, limits: str) -> None:
    keap_limits, crm_limits = ("published", "default") if limits == "published" else ("off", "off")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KEAP_", "CUSTOMCRM_", "CRMSYNC_"))}
    with tempfile.TemporaryDirectory(prefix="crmsync-tenants-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        names = [f"t{i:02d}" for i in range(1, tenants + 1)]
        boxes = {name: stack.enter_context(sandboxes(work / "sandbox" / name, size, keap_limits=keap_limits,
                                                     customcrm_limits=crm_limits, seed=100 + i))
                 for i, name in enumerate(names)}  # fmt: skip
        env = {**base, "CRMSYNC_TENANTS": str(work / "tenants.toml")}
        _tenants_file(work / "tenants.toml", boxes, env, work / "state")
        for box in boxes.values():
            box.reset_stats()
        shared = _crmsync(env, "sync", "--all-tenants", "--parallel", str(parallel))
        runs = shared["answer"]["tenants"]
        own = {run["tenant"]: run["seconds"] for run in runs}
        served = [(box.admin("keap", "/_sandbox/stats"), box.admin("customcrm", "/_sandbox/stats"))
                  for box in boxes.values()]  # fmt: skip
        links = {name: _links(work / "state" / f"{name}.duckdb") for name in names}
        keap_records = {
            name: sum(box.admin("keap", "/_sandbox/counts").values()) for name, box in boxes.items()
        }
        slowest = max(own, key=lambda name: own[name])
        stack.close()  # every sandbox stopped: the tenant alone has the machine to itself

        # the slowest tenant's first sync again, alone: fresh sandboxes of its seed, a fresh state
        i = names.index(slowest)
        alone_dir = work / "alone"
        with sandboxes(alone_dir / "sandbox", size, keap_limits=keap_limits, customcrm_limits=crm_limits,
                       seed=100 + i) as box:  # fmt: skip
            alone_env = {**base, "CRMSYNC_TENANTS": str(alone_dir / "tenants.toml")}
            _tenants_file(alone_dir / "tenants.toml", {slowest: box}, alone_env, alone_dir / "state")
            alone = _crmsync(alone_env, "sync", "--tenant", slowest)
    emit("tenants", {
        "tenants": tenants, "size_per_kind": size, "parallel": parallel, "limits": limits,
        "exit_code": shared["exit"], "ok": sum(run["exit_code"] == 0 for run in runs),
        "keap_records": sum(keap_records.values()),
        # every Keap record has its row in a link table: linked, or held (ambiguous, waiting)
        "keap_records_without_a_link_row": sum(keap_records[n] - links[n].pop("keap_records") for n in names),
        "links_by_status": {s: sum(found.get(s, 0) for found in links.values())
                            for s in sorted({s for found in links.values() for s in found})},
        "total_s": round(shared["seconds"], 1),
        "tenant_s_slowest": round(own[slowest], 1), "tenant_s_median": round(statistics.median(own.values()), 1),
        "tenant_s_sum": round(sum(own.values()), 1),
        "slowest_alone_s": round(alone["seconds"], 1), "slowest_alone_exit": alone["exit"],
        "total_over_slowest_alone": round(shared["seconds"] / alone["seconds"], 2),
        "keap_requests": sum(k["total"] for k, _ in served), "customcrm_requests": sum(c["total"] for _, c in served),
        "keap_429": sum(k["by_status"].get("429", 0) for k, _ in served),
        "peak_rss_mib_one_process": shared["peak_rss_mib"],
    })  # fmt: skip


def main() -> None:
    main_for(run, __doc__, default_size=1_000, tenants={"type": int, "default": 20}, parallel={"type": int, "default": 2},
             limits={"choices": ["published", "off"], "default": "published"})  # fmt: skip


if __name__ == "__main__":
    main()
