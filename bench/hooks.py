"""Figures: how long a Keap edit takes to reach Customcrm through REST hooks, and what
hooks cost in API requests against polling every 5 minutes.

    python -m bench.hooks --delay 1 --edits 100         # the sandbox delivers 1 s after a change
    python -m bench.hooks --delay 30-60 --edits 20      # Keap's own 30 to 60 s
    python -m bench.hooks --delay 30-60 --edits 100 --lanes 5   # 5 installations side by side

Everything runs as a user runs it, each in a process of its own: the sandboxes
(`crmsync sandbox`, Keap's published limits), `crmsync hooks serve` with its default
debounce (30 s of quiet, at most 120 s) unless `--debounce` says otherwise, and
`crmsync hooks register`. The account: the demo's 25 records per kind, synced and quiet.

Each edit is one PATCH of a linked contact's job title in Keap, made once the previous one
arrived and its sync ended; its latency runs from Keap's answer to the PATCH until the new
title is readable in Customcrm (polled every 0.1 s). Each is split into Keap's delivery
(the sandbox's log of the POST to the receiver), the wait before the sync started (the
debounce), and the sync until the write. The requests of each edit's sync are counted at
the sandboxes.

`--lanes N` runs N such installations side by side on the machine, each with its own
sandboxes (own ports, own data folder), own state file, own `crmsync hooks serve` and
registration, each making its share of the edits one at a time as above (100 edits in 4
lanes: 25 each). The lanes set up together, start editing together once all are ready,
lane i's first edit i × 10 s after lane 0's; the figures are over all edits, and per lane.
Lanes share the machine's cores: their syncs can overlap, which lengthens the sync part
(the delivery delay and the debounce are timers). The load average is printed at the
start, every minute, and at the end.

Requests per hour: a scheduled run where nothing changed (the cost of polling, measured),
the hooks' check each scheduled run adds, and each triggered run's reads (its writes are
needed either way: polling would make them later).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import RunningSandboxes, emit, machine, sandboxes


def crmsync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "crmsync.cli", *args], env=env, capture_output=True,
                          text=True, timeout=3600, check=False)  # fmt: skip
    if done.returncode not in (0, 3):
        raise RuntimeError(f"crmsync {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return done


class Serve:
    """`crmsync hooks serve` in its own process; its log lines, stamped as they come."""

    def __init__(self, env: dict[str, str], debounce: float | None) -> None:
        command = [sys.executable, "-m", "crmsync.cli", "hooks", "serve", "--port", "0"]
        if debounce is not None:
            command += ["--debounce", str(debounce)]
        self.process = subprocess.Popen(command, env={**env, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.PIPE,
                                        text=True)  # fmt: skip
        assert self.process.stderr is not None
        first = self.process.stderr.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+)/hooks/", first)
        if not found:
            raise RuntimeError(f"crmsync hooks serve: {first}")
        self.base = found.group(1)
        self.lines: list[tuple[float, str]] = []
        self.lock = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.lock:
                self.lines.append((time.time(), line.strip()))
                self.lock.notify_all()

    def runs_since(self, index: int) -> list[tuple[float, str]]:
        with self.lock:
            return [(at, line) for at, line in self.lines[index:] if " sync after " in line]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def delivered_at(boxes: RunningSandboxes, after: float) -> float | None:
    """When the sandbox's first successful delivery of a contact.edit after `after` went out."""
    attempts = boxes.admin("keap", "/_sandbox/hooks")["attempts"]
    times = [
        a["at"]
        for a in attempts
        if a["event_key"] == "contact.edit" and a["result"] == "200" and a["at"] > after
    ]
    return min(times) if times else None


@dataclass
class LaneResult:
    figures: list[dict[str, Any]]
    idle: dict[str, int]  # a scheduled run where nothing changed, without hooks
    idle_hooked: dict[str, int]  # ... and with them


@dataclass
class Lanes:
    """One lane's place among the others: its number, the barrier every lane waits at
    once set up, the event that stops the edits when a lane failed, and how long after
    the barrier its first edit waits."""

    index: int
    ready: threading.Barrier
    stop: threading.Event
    stagger_s: float


class LoadAverage:
    """The machine's load average (os.getloadavg), printed at the start, every `every_s`
    seconds, when the lanes begin their edits, and at the end; the figures "during" are
    the samples taken once the edits began (all of them with one lane)."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self.began = time.time()
        self.start = self._print("at the start")
        self.samples: list[tuple[float, tuple[float, float, float]]] = []
        self.editing_since: float | None = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _print(self, when: str) -> tuple[float, float, float]:
        load = os.getloadavg()
        print(f"# load average {when} (+{time.time() - self.began:.0f} s): "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)  # fmt: skip
        return load

    def _sample(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.samples.append((time.time(), self._print("during")))

    def editing(self) -> None:
        self.editing_since = time.time()
        self._print("as the edits begin")

    def stop(self) -> dict[str, Any]:
        self.stopped.set()
        self.thread.join()
        end = self._print("at the end")
        since = self.editing_since or 0.0
        during = [load[0] for at, load in self.samples if at >= since] or [end[0]]
        return {"start": [round(x, 2) for x in self.start], "end": [round(x, 2) for x in end],
                "during_1min_min": round(min(during), 2), "during_1min_median": round(statistics.median(during), 2),
                "during_1min_max": round(max(during), 2), "samples": len(during),
                "sample_every_s": self.every_s, "cores": os.cpu_count()}  # fmt: skip


def run(
    edits: int,
    delay: tuple[float, float],
    debounce: float | None,
    budget_s: float | None = None,
    lanes: int = 1,
) -> None:
    """`edits` edits, one after the other, in each of `lanes` installations side by side
    (the edits split between them); with `budget_s`, no lane starts an edit after that many
    seconds of its editing (the figures say how many were made)."""
    if not 1 <= lanes <= edits:
        raise ValueError("--lanes must be between 1 and the number of edits")
    print(f"# lanes: {lanes}", flush=True)
    load = LoadAverage()
    if lanes == 1:
        results = [_lane(edits, delay, debounce, budget_s)]
    else:
        shares = [edits // lanes + (1 if i < edits % lanes else 0) for i in range(lanes)]
        # no lane edits while another one still sets up
        ready = threading.Barrier(lanes, action=load.editing, timeout=1800)
        stop = threading.Event()  # a lane failed: the others make no more edits

        def lane(i: int) -> LaneResult:
            try:
                return _lane(shares[i], delay, debounce, budget_s, Lanes(i, ready, stop, 10.0 * i))
            except BaseException:
                stop.set()
                ready.abort()
                raise

        with ThreadPoolExecutor(max_workers=lanes) as pool:
            futures = [pool.submit(lane, i) for i in range(lanes)]
            wait(futures)
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            load.stop()
            raise RuntimeError(f"{len(failed)} of {lanes} lanes failed") from failed[0]
        results = [f.result() for f in futures]
    load_figures = load.stop()
    figures = [f for r in results for f in r.figures]
    emit("hooks_latency", {
        "delivery_delay_s": list(delay), "debounce_s": debounce if debounce is not None else 30.0,
        "edits": len(figures), "edits_asked": edits, "lanes": lanes, **_latency(figures),
        "syncs": sum(f["syncs"] for f in figures),
    })  # fmt: skip
    if lanes > 1:
        for i, r in enumerate(results):
            emit("hooks_lane", {"lane": i, "edits": len(r.figures), **_latency(r.figures),
                                "syncs": sum(f["syncs"] for f in r.figures)})  # fmt: skip
    emit("hooks_load_average", {"lanes": lanes, **load_figures})
    reads = [f["keap_reads"] + f["customcrm_reads"] for f in figures]
    per_run = statistics.median(f["keap_requests"] + f["customcrm_requests"] for f in figures)
    # the same on every lane (each its own sandboxes, the same demo data): the median lane's
    idle = statistics.median_low(r.idle["total"] for r in results)
    idle_hooked = statistics.median_low(r.idle_hooked["total"] for r in results)
    polling_per_hour = 12 * idle
    check = idle_hooked - idle
    triggered_reads = statistics.median(reads)
    per_lane = {"scheduled_idle_run_per_lane": [r.idle["total"] for r in results],
                "scheduled_idle_run_with_hooks_per_lane": [r.idle_hooked["total"] for r in results]}  # fmt: skip
    emit("hooks_requests", {
        "scheduled_idle_run": idle, "scheduled_idle_run_with_hooks": idle_hooked,
        **(per_lane if lanes > 1 else {}),
        "polling_every_5_min_per_hour": polling_per_hour, "check_per_scheduled_run": check,
        "triggered_run_requests_median": per_run, "triggered_run_reads_median": triggered_reads,
        # each edit alone (more than the debounce apart): a triggered run each
        "extra_per_hour": {f"{n}_edits_an_hour": round(12 * check + n * triggered_reads) for n in (0, 1, 10, 60)},
        # a steady stream (never 30 s quiet): a run each 120 s of maximum wait at most
        "extra_per_hour_steady_stream": round(12 * check + 3600 / 120 * triggered_reads),
    })  # fmt: skip


def _lane(
    edits: int,
    delay: tuple[float, float],
    debounce: float | None,
    budget_s: float | None,
    lanes: Lanes | None = None,
) -> LaneResult:
    """One installation: its sandboxes, its state, its receiver, its edits one at a time."""
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-hooks-") as tmp:
        work = Path(tmp)
        # Customcrm's limits off: the bench's own polling of the edited contact must not slow the sync
        with sandboxes(work / "sandbox", 25, keap_limits="published", customcrm_limits="off") as boxes:
            env = boxes.env(work / "crmsync.duckdb")
            for _ in range(4):  # linked and quiet
                if json.loads(crmsync(env, "sync", "--json").stdout).get("quiet_since"):
                    break
            links = json.loads(crmsync(env, "sql", "--json", "select keap_id, customcrm_id from sync_state.links "
                                       "where mapping = 'contacts' order by keap_id").stdout)  # fmt: skip
            boxes.admin("keap", "/_sandbox/config", {"hooks": {"delay_s": list(delay)}})

            # polling's cost: a scheduled run where nothing changed, without hooks and with them
            boxes.reset_stats()
            crmsync(env, "sync", "--quiet")
            idle = _served(boxes)
            serve = Serve(env, debounce)
            try:
                crmsync(env, "hooks", "register", "--url", serve.base)
                boxes.reset_stats()
                crmsync(env, "sync", "--quiet")
                idle_hooked = _served(boxes)
                if lanes is not None:
                    print(f"# lane {lanes.index}: ready ({work})", file=sys.stderr, flush=True)
                    lanes.ready.wait()
                    if lanes.stop.wait(lanes.stagger_s):
                        raise RuntimeError(f"lane {lanes.index}: stopped, another lane failed")
                figures = _edits(boxes, serve, links, edits, budget_s, lanes)
            finally:
                serve.stop()
    return LaneResult(figures, idle, idle_hooked)


def _latency(figures: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [f["latency_s"] for f in figures]
    return {
        "median_s": round(statistics.median(latencies), 1), "worst_s": round(max(latencies), 1),
        "best_s": round(min(latencies), 1), "p90_s": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 1),
        "median_delivery_s": _median(figures, "delivery_s"), "median_wait_s": _median(figures, "wait_s"),
        "median_sync_to_write_s": _median(figures, "sync_to_write_s"), "median_sync_s": _median(figures, "sync_s"),
    }  # fmt: skip


def _median(figures: list[dict[str, Any]], key: str) -> float | None:
    values = [f[key] for f in figures if f.get(key) is not None]
    return round(statistics.median(values), 1) if values else None


def _served(boxes: RunningSandboxes) -> dict[str, int]:
    keap = boxes.admin("keap", "/_sandbox/stats")
    crm = boxes.admin("customcrm", "/_sandbox/stats")
    return {"keap": keap["total"], "keap_reads": keap["reads"], "customcrm": crm["total"],
            "customcrm_reads": crm["reads"], "total": keap["total"] + crm["total"]}  # fmt: skip


def _edits(
    boxes: RunningSandboxes,
    serve: Serve,
    links: list[dict[str, str]],
    edits: int,
    budget_s: float | None,
    lanes: Lanes | None = None,
) -> list[dict[str, Any]]:
    began = time.time()
    label = "" if lanes is None else f"lane {lanes.index} "
    keap = httpx.Client(base_url=boxes.keap_url, headers={"X-Keap-API-Key": boxes.keap_key}, timeout=60)
    crm = httpx.Client(base_url=boxes.customcrm_url, headers={"Authorization": f"Bearer {boxes.customcrm_token}"},
                       timeout=60)  # fmt: skip
    figures = []
    try:
        for n in range(edits):
            if budget_s is not None and time.time() - began > budget_s:
                break
            if lanes is not None and lanes.stop.is_set():
                raise RuntimeError(f"{label}stopped: another lane failed")
            link = links[n % len(links)]
            title = f"hooks bench {n}"
            boxes.reset_stats()
            seen = len(serve.lines)
            keap.patch(f"/contacts/{link['keap_id']}", params={"update_mask": "job_title"},
                       json={"job_title": title}).raise_for_status()  # fmt: skip
            edited = time.time()
            polls = 0
            while crm.get(f"/contacts/{link['customcrm_id']}").json().get("Title") != title:
                polls += 1
                if time.time() - edited > 900:
                    raise RuntimeError(f"{label}edit {n} never reached Customcrm: {serve.lines[-5:]}")
                time.sleep(0.1)
            arrived = time.time()
            while not serve.runs_since(seen):  # its sync's end (the read-back after the write)
                if time.time() - arrived > 900:
                    raise RuntimeError(f"{label}edit {n}: its sync never ended: {serve.lines[-5:]}")
                time.sleep(0.1)
            ended, line = serve.runs_since(seen)[0]
            time.sleep(0.5)
            served = _served(boxes)  # less the bench's own PATCH and polls
            served["keap"] -= 1
            served["customcrm"] -= polls + 1
            served["customcrm_reads"] -= polls + 1
            took = re.search(r" in ([\d.]+) s", line)
            started = ended - float(took.group(1)) if took else None
            delivered = delivered_at(boxes, edited)
            figures.append({
                "latency_s": arrived - edited,
                "delivery_s": delivered - edited if delivered else None,
                "wait_s": started - delivered if started and delivered else None,
                "sync_to_write_s": arrived - started if started else None,
                "sync_s": ended - started if started else None,
                "syncs": len(serve.runs_since(seen)),
                "keap_requests": served["keap"], "customcrm_requests": served["customcrm"],
                "keap_reads": served["keap_reads"], "customcrm_reads": served["customcrm_reads"],
            })  # fmt: skip
            print(f"# {label}edit {n}: {arrived - edited:.1f} s ({line})", file=sys.stderr, flush=True)
    finally:
        keap.close()
        crm.close()
    return figures


def receiver(deliveries: int = 200, keys: int = 1_000) -> None:
    """How long the receiver takes to answer: `deliveries` POSTs of Keap's largest batch
    (`keys` object keys), each spooled and fsync'ed before its 200, one after the other
    (no trigger runs: the figure is the receiver's alone)."""
    from crmsync.hooks.files import hook_url, path_secret
    from crmsync.hooks.receiver import Receiver, ReceiverApp
    from crmsync.hooks.spool import Spool

    with tempfile.TemporaryDirectory(prefix="crmsync-bench-receiver-") as tmp:
        secret = path_secret(Path(tmp))
        assert secret is not None
        spool = Spool(Path(tmp) / "hooks.sqlite3")
        served = Receiver(ReceiverApp(secret, spool)).start()
        url = hook_url(f"http://127.0.0.1:{served.port}", secret)
        body = {"event_key": "contact.edit", "object_type": "contact", "object_keys": [
            {"id": 1000 + i, "apiUrl": f"https://api.infusionsoft.com/crm/rest/v1/contacts/{1000 + i}",
             "timestamp": "2026-11-29T22:00:00.000Z"} for i in range(keys)]}  # fmt: skip
        size = len(json.dumps(body))
        took = []
        try:
            with httpx.Client(timeout=30) as client:
                for _ in range(deliveries):
                    started = time.perf_counter()
                    client.post(url, json=body).raise_for_status()
                    took.append(time.perf_counter() - started)
        finally:
            served.stop()
            spool.close()
    took.sort()
    emit("hooks_receiver", {
        "deliveries": deliveries, "object_keys_each": keys, "body_bytes": size,
        "median_ms": round(1000 * statistics.median(took), 1),
        "p99_ms": round(1000 * took[int(0.99 * (len(took) - 1))], 1), "worst_ms": round(1000 * took[-1], 1),
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument(
        "--delay", default="1", help="the sandbox's delivery delay: seconds, or lowest-highest"
    )
    parser.add_argument("--debounce", type=float, default=None, help="crmsync hooks serve --debounce")
    parser.add_argument("--receiver", action="store_true", help="only the receiver's answer time")
    parser.add_argument("--budget", type=float, default=None, help="start no edit after this many seconds")
    parser.add_argument(
        "--lanes", type=int, default=1, help="installations side by side, the edits split between them"
    )
    args = parser.parse_args()
    low, _, high = args.delay.partition("-")
    print(f"# machine: {machine()}")
    if args.receiver:
        receiver()
        return
    run(args.edits, (float(low), float(high or low)), args.debounce, args.budget, args.lanes)


if __name__ == "__main__":
    main()
