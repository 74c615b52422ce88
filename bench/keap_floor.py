"""Figure: a sync that must write 1,000 Keap records, at a personal key's limits, against
the floor those limits impose.

    python -m bench.keap_floor [--size 1000] [--writes 1000]

Setup, not timed, sandbox limits off: `size` demo records per kind, a first sync that
links or creates everything, a quiet second sync, then `writes` linked records edited
in Customcrm (a quarter per mapping), so that the sync must PATCH exactly `writes` Keap
records. Then the Keap sandbox is set to a personal access token's published limits
(10 requests a second, 240 a minute) with a full minute's allowance, and one
`crmsync sync` runs, timed.

The floor is what those limits alone impose on the requests the scenario needs (the
writes and one page per resource): the first 240 in a burst at 10 a second, then 4 a
second, so max(n / 10, (n - 240) / 4) seconds. 429s are counted at the sandbox.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import httpx

from bench.common import RunningSandboxes, emit, machine, sandboxes
from bench.sync import KEAP, sync_process
from bench.sync import keap_floor_seconds as floor_seconds

EDITED_FIELD = {
    "customers": "Description",
    "contacts": "Title",
    "orders": "Description",
    "products": "Description",
}


def converge(boxes: RunningSandboxes, db: Path) -> None:
    """Sync (limits off, each run a process of its own) until a run finds nothing to do."""
    for _ in range(4):
        answer = sync_process(boxes, db)["answer"]
        assert answer["status"] == "ok", answer
        if not any(m["created"] or m["updated"] or m["linked"] for m in answer["mappings"].values()):
            return
    raise RuntimeError("the setup syncs did not converge")


def edit_in_customcrm(boxes: RunningSandboxes, db: Path, writes: int) -> None:
    from reverse_etl.state import connect

    per_mapping = writes // 4
    rng = random.Random(7)
    with connect(db) as con:  # this process's dbt may still hold the file: same configuration
        linked = {
            m: [
                r[0]
                for r in con.execute(
                    "select customcrm_id from sync_state.links where mapping = ? order by customcrm_id", [m]
                ).fetchall()
            ]
            for m in KEAP
        }
    with httpx.Client(base_url=boxes.customcrm_url, timeout=60,
                      headers={"Authorization": f"Bearer {boxes.customcrm_token}"}) as crm:  # fmt: skip
        for mapping, ids in linked.items():
            assert len(ids) >= per_mapping, f"{mapping}: {len(ids)} linked, {per_mapping} needed"
            chosen = rng.sample(ids, per_mapping)
            for start in range(0, len(chosen), 100):
                operations = [
                    {
                        "op": "update",
                        "id": i,
                        "data": {EDITED_FIELD[mapping]: f"edited for the floor run {i}"},
                    }
                    for i in chosen[start : start + 100]
                ]
                answer = crm.post(f"/{mapping}/batch", json={"operations": operations})
                answer.raise_for_status()
                assert all(r["status"] == 200 for r in answer.json()["results"])


def run(size: int, writes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="crmsync-floor-") as tmp:
        work = Path(tmp)
        db = work / "floor.duckdb"
        with sandboxes(work / "sandbox", size, keap_limits="off", customcrm_limits="off") as boxes:
            converge(boxes, db)
            edit_in_customcrm(boxes, db, writes)
            boxes.admin("keap", "/_sandbox/config", {"limits": "published"})
            boxes.admin("customcrm", "/_sandbox/config", {"limits": "default"})
            boxes.reset_stats()
            run = sync_process(boxes, db)
            if run["answer"].get("status") != "ok":
                raise RuntimeError(f"the timed sync did not go through: {run['answer']}")
            seconds = run["seconds"]
            keap = boxes.admin("keap", "/_sandbox/stats")
            crm = boxes.admin("customcrm", "/_sandbox/stats")
        needed = writes + 5  # the PATCHes, and one page per Keap resource and the stages
        emit("keap_floor", {
            "size_per_kind": size, "keap_writes_needed": writes, "seconds": round(seconds, 1),
            "rounds": run["answer"].get("rounds"), "phases": run["answer"].get("seconds"),
            "peak_rss_mib": run["peak_rss_mib"],
            "keap_requests": keap["total"], "keap_writes": keap["writes"], "keap_reads": keap["reads"],
            "keap_429": keap["by_status"].get("429", 0), "customcrm_requests": crm["total"],
            "floor_seconds": round(floor_seconds(needed), 1),
            "floor_of_requests_made": round(floor_seconds(keap["total"]), 1),
            "ratio_to_floor": round(seconds / floor_seconds(needed), 3),
        })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000, help="demo records per kind")
    parser.add_argument("--writes", type=int, default=1_000, help="Keap records the sync must write")
    args = parser.parse_args()
    print(f"# machine: {machine()}")
    run(args.size, args.writes)


if __name__ == "__main__":
    main()
