"""Figure: a large account's first sync at the APIs' published limits, against its floor.

    python -m bench.first_sync --size 100000            # issue 17's headline (about 15 min)
    python -m bench.first_sync --size 10000 --limits off

`size` records of each kind in Keap (companies, contacts, opportunities, products) and an
empty Customcrm (the demo's hostile records aside: a handful of twins), both sandboxes at
their published limits: Keap a personal key's 10 a second and 240 a minute, Customcrm the
20 a second with bursts of 40 its sandbox advertises in `RateLimit-*`. One `crmsync sync
--json` in a process of its own; its wall time and peak resident memory (wait4).

The floor is what those limits impose on the requests the scenario needs, measured side by
side in the same run:
- Keap: one page per 1,000 records of each resource and the stages list, plus one request
  per Keap record the run wrote; a bucket of 240, then 4 a second (`bench.sync`).
- Customcrm: one list page per resource (all empty), one batch per 100 operations the run
  recorded as written; a burst of 40, then 20 a second.
The two systems are separate servers with separate limits, so the floor is the larger of
the two (the work of one can overlap the other's waits): `floor_s`. `floor_sequential_s` is
their sum, what a sync that reads everything before writing anything cannot beat.
`floor_with_echo_s` adds reading back what the sync created (one Customcrm page per 500
records it created: an incremental reader reads its own writes once).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from bench.common import emit, main_for, sandboxes
from bench.sync import KEAP, keap_floor_seconds, sync_process, written


def customcrm_floor_seconds(requests: int, rate: float = 20.0, burst: float = 40.0) -> float:
    return max(0.0, (requests - burst) / rate)


def run(size: int, limits: str) -> None:
    paced = limits == "published"
    keap_limits, crm_limits = ("published", "default") if paced else ("off", "off")
    with tempfile.TemporaryDirectory(prefix="crmsync-first-") as tmp:
        work = Path(tmp)
        db = work / "first.duckdb"
        with sandboxes(work / "sandbox", size, keap_limits=keap_limits, customcrm_limits=crm_limits,
                       customcrm_share=0.0) as boxes:  # fmt: skip
            held = {m: c["live"] for m, c in boxes.admin("customcrm", "/_sandbox/counts").items()}
            boxes.reset_stats()
            run = sync_process(boxes, db, paced)
            keap = boxes.admin("keap", "/_sandbox/stats")
            crm = boxes.admin("customcrm", "/_sandbox/stats")
            created = {
                m: c["live"] - held[m] for m, c in boxes.admin("customcrm", "/_sandbox/counts").items()
            }
        answer = run["answer"]
        wrote = written(db, answer["run_id"]) if answer.get("run_id") else {"keap": {}, "customcrm": {}}
    keap_needed = sum(math.ceil(size / 1000) for _ in KEAP.values()) + 1 + sum(wrote["keap"].values())
    crm_needed = len(KEAP) + sum(math.ceil(n / 100) for n in wrote["customcrm"].values())
    echo = sum(math.ceil(n / 500) for n in created.values())
    keap_floor = keap_floor_seconds(keap_needed)
    crm_floor = customcrm_floor_seconds(crm_needed)
    floor = max(keap_floor, crm_floor)
    emit("first_sync", {
        "size_per_kind": size, "limits": limits, "status": answer.get("status"), "rounds": answer.get("rounds"),
        "seconds": round(run["seconds"], 1), "phases": answer.get("seconds"), "peak_rss_mib": run["peak_rss_mib"],
        "customcrm_created": sum(created.values()),
        "keap_requests": keap["total"], "keap_writes": keap["writes"], "keap_needed": keap_needed,
        "customcrm_requests": crm["total"], "customcrm_writes": crm["writes"], "customcrm_needed": crm_needed,
        "keap_floor_s": round(keap_floor, 1), "customcrm_floor_s": round(crm_floor, 1),
        "floor_s": round(floor, 1), "floor_sequential_s": round(keap_floor + crm_floor, 1),
        "floor_with_echo_s": round(max(keap_floor, customcrm_floor_seconds(crm_needed + echo)), 1),
        "ratio": round(run["seconds"] / max(floor, 0.1), 2) if paced else None,
        "keap_429": keap["by_status"].get("429", 0), "customcrm_429": crm["by_status"].get("429", 0),
    })  # fmt: skip


def main() -> None:
    main_for(run, __doc__, limits={"choices": ["published", "off"], "default": "published"})


if __name__ == "__main__":
    main()
