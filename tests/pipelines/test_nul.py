"""NUL characters in what the APIs send: dropped from the payload, where they were reported,
an id with one rejected (the end-to-end case: tests/e2e/test_nul_characters.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pipelines.common import NUL, ResourceReport, check_record, payload_text, raw_row, rejection, without_nul

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def test_nul_is_dropped_from_strings_keys_and_nested_items_and_each_place_is_named() -> None:
    record = {
        "id": 7,
        "job_title": "Night\x00shift",
        "email_addresses": [
            {"field": "EMAIL1", "email": "a@example.com"},
            {"field": "EMAIL2", "email": "\x00b@x.no"},
        ],
        "cu\x00stom": {"deep": ["ok", "\x00"]},
        "count": 3,
        "none": None,
    }
    cleaned, where = without_nul(record)
    assert cleaned == {
        "id": 7,
        "job_title": "Nightshift",
        "email_addresses": [
            {"field": "EMAIL1", "email": "a@example.com"},
            {"field": "EMAIL2", "email": "b@x.no"},
        ],
        "custom": {"deep": ["ok", ""]},
        "count": 3,
        "none": None,
    }
    assert where == ["job_title", "email_addresses.1.email", "custom", "custom.deep.1"]
    assert record["job_title"] == "Night\x00shift"  # the API's record itself is left as it came


def test_a_record_without_nul_is_dumped_once_as_before_and_the_escape_typed_as_text_is_kept() -> None:
    record = {"id": 1, "notes": "a literal \\u0000 typed by someone", "name": "Ødegård"}
    text, where = payload_text(record)
    assert where == []
    assert text == json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(text) == record


def test_raw_row_counts_a_cleaned_record_once_and_names_it_with_its_fields() -> None:
    counts = ResourceReport("contacts")
    row = raw_row({"id": 9, "a": "x\x00", "b": "\x00y\x00", "update_time": "2026-12-07T10:00:00Z"},
                  "id", "update_time", NOW, counts)  # fmt: skip
    assert json.loads(row["payload"]) == {"id": 9, "a": "x", "b": "y", "update_time": "2026-12-07T10:00:00Z"}
    assert "\\u0000" not in row["payload"]
    assert (counts.cleaned, counts.cleaned_fields) == (1, ["9: a, b"])
    raw_row({"id": 10, "a": "clean"}, "id", None, NOW, counts)
    assert counts.cleaned == 1


def test_an_id_with_a_nul_is_rejected_naming_the_field() -> None:
    assert check_record({"Id": "cus_1\x00"}, "Id", None) == ("Id", "a NUL character in the id")
    assert check_record({"Id": "cus_1"}, "Id", None) is None
    row = rejection("customers", 1, 0, "Id", "a NUL character in the id", {"Id": "cus_1\x00"}, NOW).data
    assert NUL not in row["id"] + row["record"]  # PostgreSQL's text could not hold the row
    assert row["id"] == "cus_1\\x00"
