"""The trigger: a sync once the events stop for the debounce, or at most the maximum wait
after the first; never two at once; a run that failed is tried again, later."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from crmsync.hooks.spool import Spool
from crmsync.hooks.trigger import Trigger, TriggerOptions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Runs:
    """A runner that consumes the spool (or fails, when told), counting its runs."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.fail = False
        self.started: list[float] = []

    def __call__(self) -> bool:
        self.started.append(time.time())
        if self.fail:
            return False
        batch = self.spool.take(limit=500)
        self.spool.consume(batch.upto)
        return True


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "hooks.sqlite3")


def test_a_sync_waits_for_the_events_to_stop_for_the_debounce(spool: Spool) -> None:
    clock, runs = Clock(), Runs(spool)
    trigger = Trigger(spool, runs, TriggerOptions(debounce_s=30, max_wait_s=120), clock=clock)
    assert trigger.step() is None  # nothing pending
    for at in (1000, 1010, 1020):
        spool.append("contact.edit", ["1"], float(at))
    clock.now = 1049
    assert trigger.step() == pytest.approx(1) and runs.started == []
    clock.now = 1050
    assert trigger.step() == 0 and len(runs.started) == 1
    assert trigger.step() is None and trigger.settled()


def test_a_steady_stream_is_synced_at_most_the_maximum_wait_after_its_first_event(spool: Spool) -> None:
    clock, runs = Clock(), Runs(spool)
    trigger = Trigger(spool, runs, TriggerOptions(debounce_s=30, max_wait_s=120), clock=clock)
    synced_at = []
    for second in range(1000, 1400, 10):  # an event every 10 s: never 30 s of quiet
        clock.now = float(second)
        spool.append("contact.edit", [str(second)], clock.now)
        if trigger.step() == 0:
            synced_at.append(second)
    assert synced_at == [1120, 1250, 1380]  # 120 s after the oldest waiting event each time


def test_a_failed_run_keeps_the_events_and_is_tried_again_later_and_later(spool: Spool) -> None:
    clock, runs = Clock(), Runs(spool)
    trigger = Trigger(spool, runs, TriggerOptions(debounce_s=0, max_wait_s=0, retry_s=30), clock=clock)
    spool.append("contact.delete", ["7"], clock.now)
    runs.fail = True
    assert trigger.step() == 0 and len(runs.started) == 1
    assert trigger.step() == pytest.approx(30)  # kept, not run again before the retry delay
    clock.now += 30
    assert trigger.step() == 0 and len(runs.started) == 2
    assert trigger.step() == pytest.approx(60)  # doubled
    runs.fail = False
    clock.now += 60
    assert trigger.step() == 0 and trigger.settled()
    spool.append("contact.edit", ["8"], clock.now)
    assert trigger.step() == 0  # a success resets the delay


def test_runs_never_overlap_however_many_events_wake_the_trigger(spool: Spool) -> None:
    running, overlaps = threading.Semaphore(1), []

    def slow() -> bool:
        if not running.acquire(blocking=False):
            overlaps.append(time.time())
            return False
        try:
            time.sleep(0.1)
            batch = spool.take(limit=500)
            spool.consume(batch.upto)
            return True
        finally:
            running.release()

    trigger = Trigger(spool, slow, TriggerOptions(debounce_s=0.02, max_wait_s=0.05, poll_s=0.01))
    stop = threading.Event()
    serving = threading.Thread(target=trigger.serve, args=(stop,))
    serving.start()
    pushed = threading.Thread(target=lambda: [trigger.run_once() for _ in range(5)])  # and runs on demand
    pushed.start()
    for n in range(50):
        spool.append("contact.edit", [str(n)], time.time())
        trigger.wake()
        time.sleep(0.01)
    pushed.join()
    deadline = time.monotonic() + 20
    while not trigger.settled():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stop.set()
    trigger.wake()
    serving.join()
    assert overlaps == [] and 6 <= trigger.runs < 55
