"""The trigger: hook events in the spool start the ordinary incremental sync, debounced.

A run starts once no event came for `debounce_s` (Keap delivers in batches, and an edit
often comes with others), or `max_wait_s` after the oldest waiting event, whichever is
first: a steady stream of events cannot hold a sync back for longer than that. Runs never
overlap: one thread runs them one after the other (and each takes the state file's lock,
so a scheduled sync and a triggered one never run together either). Events that come
during a run wait for the next one. A run that could not take the events into account
(Keap unreachable, the state file busy) is tried again after `retry_s`, doubling up to
`retry_max_s`; the events stay in the spool meanwhile.

The runner decides what "taken into account" means (crmsync.hooks.runs): it returns
True when the spool's events up to its start were consumed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from crmsync.hooks.spool import Spool

Runner = Callable[[], bool]


@dataclass(frozen=True)
class TriggerOptions:
    debounce_s: float = 30.0  # run once no event came for this long
    max_wait_s: float = 120.0  # ... or this long after the oldest waiting event
    poll_s: float = 1.0  # how often the spool is looked at when nothing woke the trigger
    retry_s: float = 30.0  # after a run that could not take the events into account
    retry_max_s: float = 900.0

    def __post_init__(self) -> None:
        if self.debounce_s < 0 or self.max_wait_s < self.debounce_s:
            raise ValueError("the hooks' debounce must be >= 0 and the maximum wait at least the debounce")


class Trigger:
    def __init__(
        self,
        spool: Spool,
        run: Runner,
        options: TriggerOptions | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.spool = spool
        self.run = run
        self.options = options or TriggerOptions()
        self.clock = clock
        self.log = log
        self.woken = threading.Event()
        self.idle = threading.Event()  # set while no run is going and nothing is pending
        self.runs = 0
        self.running = False
        self.one_at_a_time = threading.Lock()
        self.failures = 0
        self.not_before = 0.0  # after a failed run: no new one before this

    def wake(self) -> None:
        """Something came in (the receiver, in this process): look at the spool now."""
        self.idle.clear()
        self.woken.set()

    def due_in(self, now: float | None = None) -> float | None:
        """Seconds until a run is due (0: now), or None when nothing is pending."""
        pending = self.spool.pending()
        if pending is None:
            return None
        now = self.clock() if now is None else now
        at = min(pending.last_at + self.options.debounce_s, pending.first_at + self.options.max_wait_s)
        return max(0.0, max(at, self.not_before) - now)

    def run_once(self) -> bool:
        """One run, whatever the schedule (after the one going, if any); True when the
        events were taken into account."""
        with self.one_at_a_time:
            self.runs += 1
            self.running = True
            try:
                handled = self.run()
            except Exception as exc:  # a bug, or something unforeseen: said, and tried again later
                handled = False
                if self.log:
                    self.log(f"the triggered sync stopped: {type(exc).__name__}: {exc}")
            finally:
                self.running = False
            self._after(handled)
        return handled

    def _after(self, handled: bool) -> None:
        if handled:
            self.failures, self.not_before = 0, 0.0
        else:
            self.failures += 1
            wait = min(self.options.retry_max_s, self.options.retry_s * 2 ** (self.failures - 1))
            self.not_before = self.clock() + wait
            if self.log:
                self.log(f"the events stay in the spool; the next try in {wait:.0f} s")

    def settled(self) -> bool:
        """No run going and nothing waiting in the spool."""
        return not self.running and self.spool.pending() is None

    def step(self) -> float | None:
        """Run if a run is due; else the seconds until one is (None: nothing pending)."""
        wait = self.due_in()
        if wait == 0:
            self.run_once()
            return 0.0
        return wait

    def serve(self, stop: threading.Event) -> None:
        """Until `stop` is set: watch the spool, run when due."""
        while not stop.is_set():
            try:
                wait = self.step()
            except Exception as exc:  # the spool unreadable for a moment (locked, disk): look again
                if self.log:
                    self.log(f"the spool could not be read: {type(exc).__name__}: {exc}")
                wait = self.options.poll_s
            if wait == 0:
                continue
            if wait is None:
                self.idle.set()
            self.woken.wait(timeout=self.options.poll_s if wait is None else min(wait, self.options.poll_s))
            self.woken.clear()
