"""Recording a batch on a thread while the next one is sent: in order, one at a time, and
an error while recording reaches the pushing thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from reverse_etl.push import RecordBehind


class SlowRecorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.recorded: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def record(self, outcomes: list[Any], bases: list[Any]) -> None:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.threads.add(threading.current_thread().name)
        time.sleep(0.02)
        with self.lock:
            self.in_flight -= 1
        if outcomes[0] == self.fail_on:
            raise RuntimeError(f"disk full while recording batch {outcomes[0]}")
        self.recorded.append(outcomes[0])


def test_batches_are_recorded_in_order_one_at_a_time_off_the_pushing_thread() -> None:
    recorder = SlowRecorder()
    with RecordBehind(recorder) as record:  # type: ignore[arg-type]
        for batch in range(8):
            record([batch], [])
    assert recorder.recorded == list(range(8))  # all of them, in order, once the block is left
    assert recorder.most_in_flight == 1
    assert threading.current_thread().name not in recorder.threads


def test_an_error_while_recording_is_raised_in_the_pushing_thread() -> None:
    recorder = SlowRecorder(fail_on=2)
    with pytest.raises(RuntimeError, match="batch 2"), RecordBehind(recorder) as record:  # type: ignore[arg-type]
        for batch in range(5):
            record([batch], [])
    assert recorder.recorded == [0, 1]  # nothing after the failed batch was recorded
