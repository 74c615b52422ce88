"""Figure: how long after the read that cleared it a Keap write goes out, at a personal
key's published limits (the window in which an edit made in Keap could be overwritten).

    python -m bench.keap_reread [--size 300] [--writes 300]

Setup as in `bench.keap_floor` (not timed, sandbox limits off): `size` demo records per
kind, synced until quiet, then `writes` linked records edited in Customcrm (a quarter
per mapping), so that the sync must PATCH exactly `writes` Keap records. Then the Keap
sandbox is set to a personal access token's published limits (10 a second, 240 a
minute) and one `crmsync sync` runs.

The push re-reads what Keap changed before each chunk of writes and holds back the
records edited since the extract; per write it notes the seconds from the moment the
re-read that cleared it was sent to the moment the write's answer arrived (an upper
bound of the window). Printed: the max and the median of those, the number of re-reads
and the share of requests they added.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import emit, machine, sandboxes
from bench.keap_floor import converge, edit_in_customcrm
from bench.sync import sync_process


def run(size: int, writes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="crmsync-reread-") as tmp:
        work = Path(tmp)
        db = work / "reread.duckdb"
        with sandboxes(work / "sandbox", size, keap_limits="off", customcrm_limits="off") as boxes:
            converge(boxes, db)
            edit_in_customcrm(boxes, db, writes)
            boxes.admin("keap", "/_sandbox/config", {"limits": "published"})
            boxes.admin("customcrm", "/_sandbox/config", {"limits": "default"})
            boxes.reset_stats()
            run = sync_process(boxes, db)
            answer = run["answer"]
            if answer.get("status") != "ok":
                raise RuntimeError(f"the timed sync did not go through: {answer}")
            keap = boxes.admin("keap", "/_sandbox/stats")
        window = answer["keap_read_to_write"]
        emit("keap_reread", {
            "size_per_kind": size, "keap_writes": window["writes"], "limits": "published (key)",
            "read_to_write_max_s": window["max_s"], "read_to_write_median_s": window["median_s"],
            "rereads": window["rereads"], "keap_requests": keap["total"], "keap_429": keap["by_status"].get("429", 0),
            "rereads_per_write": round(window["rereads"] / max(1, window["writes"]), 3),
            "push_seconds": answer["seconds"].get("push"), "seconds": round(run["seconds"], 1),
        })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=300, help="demo records per kind")
    parser.add_argument("--writes", type=int, default=300, help="Keap records the sync must write")
    args = parser.parse_args()
    print(f"# machine: {machine()}")
    run(args.size, args.writes)


if __name__ == "__main__":
    main()
