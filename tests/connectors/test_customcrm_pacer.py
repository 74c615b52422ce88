"""Customcrm's pacer with two requests on the wire: an answer read after another request
went out does not hand that request's token out again."""

from __future__ import annotations

import threading

import httpx

from connectors.customcrm import CustomcrmPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def answer(remaining: int, reset: int) -> httpx.Response:
    return httpx.Response(200, headers={"RateLimit-Remaining": str(remaining), "RateLimit-Reset": str(reset)})


def in_thread(work) -> None:  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_an_answer_read_late_counts_the_requests_sent_after_it() -> None:
    clock = Clock()
    pacer = CustomcrmPacer(clock=clock, sleep=clock.sleep)

    # request A goes out; request B goes out from another thread before A's answer is read
    done = threading.Event()
    go_on = threading.Event()

    def request_a() -> None:
        pacer.before()
        done.set()
        go_on.wait()
        pacer.after(answer(remaining=1, reset=0))  # the server counted A, not B: one left for B

    thread_a = threading.Thread(target=request_a)
    thread_a.start()
    done.wait()
    in_thread(pacer.before)  # B
    go_on.set()
    thread_a.join()
    # that one token is B's: the next request waits for the bucket, it is not sent into a 429
    assert pacer.remaining == 0
    in_thread(pacer.before)
    assert clock.slept and clock.slept[0] > 0


def test_one_request_at_a_time_reads_the_header_as_it_is() -> None:
    clock = Clock()
    pacer = CustomcrmPacer(clock=clock, sleep=clock.sleep)
    pacer.before()
    pacer.after(answer(remaining=3, reset=0))
    assert pacer.remaining == 3
    for _ in range(3):
        pacer.before()
    assert clock.slept == []
