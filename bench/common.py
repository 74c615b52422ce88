"""What every benchmark shares: the machine, sandboxes in their own process, figures."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class RunningSandboxes:
    keap_url: str
    keap_root: str
    keap_key: str
    customcrm_url: str
    customcrm_root: str
    customcrm_token: str

    def admin(self, which: str, path: str, body: dict[str, Any] | None = None) -> Any:
        root = self.keap_root if which == "keap" else self.customcrm_root
        with httpx.Client(timeout=60) as client:
            answer = client.get(root + path) if body is None else client.post(root + path, json=body)
            answer.raise_for_status()
            return answer.json()

    def env(self, db: Path) -> dict[str, str]:
        """The environment of a `crmsync` process configured for these sandboxes and `db`."""
        return {**os.environ, "CRMSYNC_DB": str(db), "KEAP_API_URL": self.keap_url, "KEAP_API_KEY": self.keap_key,
                "CUSTOMCRM_API_URL": self.customcrm_url, "CUSTOMCRM_API_TOKEN": self.customcrm_token}  # fmt: skip

    def reset_stats(self) -> None:
        self.admin("keap", "/_sandbox/stats/reset", {})
        self.admin("customcrm", "/_sandbox/stats/reset", {})


@contextmanager
def sandboxes(
    data_dir: Path,
    size: int | None,
    keap_limits: str = "off",
    customcrm_limits: str = "off",
    seed: int = 42,
    customcrm_share: float = 0.08,
) -> Iterator[RunningSandboxes]:
    """`crmsync sandbox` in its own process, seeded afresh with `size` records per kind, or
    (`size` None) serving what `data_dir` already holds."""
    seeding = ["--reset", "--size", str(size), "--seed", str(seed), "--customcrm-share", str(customcrm_share)]
    command = [
        sys.executable,
        "-m",
        "crmsync.cli",
        "sandbox",
        "--data-dir",
        str(data_dir),
        *(seeding if size is not None else []),
        "--keap-port",
        "0",
        "--customcrm-port",
        "0",
        "--keap-limits",
        keap_limits,
        "--customcrm-limits",
        customcrm_limits,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        while not any("Ctrl-C" in line for line in lines):
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("sandbox exited:\n" + "".join(lines))
            lines.append(line)
        text = "".join(lines)

        def grab(name: str) -> str:
            found = re.search(rf"{name}=(\S+)", text)
            assert found, name
            return found.group(1)

        keap_url, customcrm_url = grab("KEAP_API_URL"), grab("CUSTOMCRM_API_URL")
        yield RunningSandboxes(
            keap_url=keap_url,
            keap_root=keap_url.split("/crm/")[0],
            keap_key=grab("KEAP_API_KEY"),
            customcrm_url=customcrm_url,
            customcrm_root=customcrm_url.split("/api/")[0],
            customcrm_token=grab("CUSTOMCRM_API_TOKEN"),
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


class Timer:
    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def emit(name: str, figures: dict[str, Any]) -> None:
    """One line of JSON per figure set (for RESULTS.md), and a readable line."""
    print(json.dumps({"bench": name, **figures}))
    sys.stdout.flush()


def main_for(
    run: Callable[..., None], doc: str | None, default_size: int = 10_000, **options: dict[str, Any]
) -> None:
    """A bench's command line: `--size` (repeatable), `default_size` by default, and `options` (a
    name and its argparse keywords: `--name`, handed to `run` by that name); the machine
    first, then `run(size, **options)` for each size."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", help="records per kind (repeatable)")
    for name, keywords in options.items():
        parser.add_argument(f"--{name}", dest=name, **keywords)
    args = parser.parse_args()
    print(f"# machine: {machine()}")
    for size in args.size or [default_size]:
        run(size, **{name: getattr(args, name) for name in options})
