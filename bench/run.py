"""`make bench`: the quick set (10,000 records per kind), each figure printed as it comes.

python -m bench.run --quick        # extract, dbt build and sync at 10,000
python -m bench.run --size 100000  # the same at another size
"""

from __future__ import annotations

import argparse

from bench import dbt_build, extract, sync
from bench.common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 records per kind (the default)")
    parser.add_argument("--size", type=int, default=10_000)
    args = parser.parse_args()
    size = 10_000 if args.quick else args.size
    print(f"# machine: {machine()}")
    extract.run(size)
    dbt_build.run(size)
    sync.run(size)


if __name__ == "__main__":
    main()
