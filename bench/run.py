"""`make bench`: the quick set at 10,000 records per kind, each figure printed as it comes.

    python -m bench.run            # extract, dbt build, the sync scenarios unpaced, the incremental
                                   # build on the synced account, a first sync into an empty
                                   # Customcrm at the APIs' limits, drt side by side (creates, updates)
    python -m bench.run --paced    # + the runs at Keap's limits (their floor is minutes by design),
                                   #   the first sync at 100,000 per kind at the limits (about 10 min),
                                   #   20 tenants of 1,000 with --all-tenants (about 7 min),
                                   #   the sync scenarios unpaced on PostgreSQL (about 6 min),
                                   #   and the hooks' latency (100 edits per delay in 4 and 5 lanes,
                                   #   about 70 min: bench/hooks.py)
    python -m bench.run --size 100000

The paced runs take as long as Keap's 240 requests a minute make them: the 1,000-write
run about 4 minutes, the 300-write re-read window about 2, the sync scenarios at 10,000
about 10.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import (
    dbt_build,
    dbt_incremental,
    extract,
    first_sync,
    hooks,
    keap_floor,
    keap_reread,
    peer,
    sync,
    tenants,
)
from bench.common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--paced", action="store_true", help="also the runs at Keap's published limits")
    args = parser.parse_args()
    print(f"# machine: {machine()}")
    extract.run(args.size)
    dbt_build.run(args.size)
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-synced-") as kept:
        sync.run(args.size, limits="off", keep=Path(kept))
        dbt_incremental.run(Path(kept) / f"synced-{args.size}.duckdb", 1)
    first_sync.run(args.size, limits="published")
    peer.run(args.size, rounds=1, scenario="creates")
    peer.run(args.size, rounds=1, scenario="updates")
    if args.paced:
        first_sync.run(100_000, limits="published")
        tenants.run(1_000, 20, parallel=2, limits="published")  # 20 accounts with --all-tenants (~7 min)
        sync.run(args.size, limits="off", warehouse="postgres")  # the scenarios on PostgreSQL (~6 min)
        keap_floor.run(1_000, 1_000)
        keap_reread.run(300, 300)
        sync.run(args.size, limits="published")
        # 100 edits per delay, an edit at a time in each lane (each waits for its delivery, 30 s, its sync)
        hooks.run(100, (1.0, 1.0), None, lanes=4)
        hooks.run(100, (30.0, 60.0), None, lanes=5)


if __name__ == "__main__":
    main()
