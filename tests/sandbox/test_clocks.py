"""A sandbox's clock can be set apart from the machine's: it stamps records and writes the
Date header by it, and a client measures the offset from the Date headers it sees."""

from __future__ import annotations

import time
from email.utils import formatdate, parsedate_to_datetime

import pytest

from connectors.customcrm import customcrm_client
from connectors.http import ServerClock
from connectors.keap import keap_client
from sandbox.bundle import Sandboxes
from support.times import parse_time
from tests.conftest import admin


def test_the_offset_lies_in_the_intersection_of_what_each_answer_allows() -> None:
    clock = ServerClock()
    assert clock.reading() is None
    # the server is 60.3 s behind; each answer's Date is whole seconds of its own time
    for sent in (1000.0, 1000.45, 1001.2, 1002.9):
        answered = sent + 0.05
        clock.observe(formatdate(int(answered - 60.3), usegmt=True), sent, sent + 0.1)
    reading = clock.reading()
    assert reading is not None and reading.samples == 4
    assert reading.offset_s - reading.uncertainty_s <= -60.3 <= reading.offset_s + reading.uncertainty_s
    assert reading.uncertainty_s < 0.5  # narrower than one Date's second
    clock.observe("not a date", 1003.0, 1003.1)
    assert clock.reading().samples == 4  # type: ignore[union-attr]


@pytest.mark.parametrize(("which", "offset"), [("keap", 60), ("customcrm", -60)])
def test_a_sandbox_clock_set_apart_stamps_records_and_dates_by_it(
    sandboxes: Sandboxes, which: str, offset: int
) -> None:
    """(Keap ahead: its store stamped its stages when it started, and a clock never goes back.)"""
    root = sandboxes.keap_root if which == "keap" else sandboxes.customcrm_root
    client = (
        keap_client(base_url=sandboxes.keap_url, api_key=sandboxes.keap.credentials.api_key)
        if which == "keap"
        else customcrm_client(base_url=sandboxes.customcrm_url, token=sandboxes.customcrm.credentials.token)
    )
    admin(client.http, root, "/_sandbox/config", {"clock_offset_s": offset})
    before = time.time()
    if which == "keap":
        response = client.request(
            "POST", "/products", json={"name": "P", "price": 100, "short_description": "p"}
        )
        stamp = parse_time(response.json()["update_time"])
    else:
        response = client.request("POST", "/customers", json={"Name": "Behind AS"})
        stamp = parse_time(response.json()["UpdatedAt"])
    after = time.time()
    assert stamp is not None and before + offset - 0.001 <= stamp.timestamp() <= after + offset
    date = parsedate_to_datetime(response.headers["date"]).timestamp()
    assert int(before + offset) <= date <= after + offset
    for _ in range(3):
        client.request("GET", "/products" if which == "keap" else "/customers")
    reading = client.clock.reading()
    assert reading is not None and reading.samples == 4
    low, high = reading.offset_s - reading.uncertainty_s, reading.offset_s + reading.uncertainty_s
    assert low - 0.01 <= offset <= high + 0.01
    assert reading.uncertainty_s <= 0.5
