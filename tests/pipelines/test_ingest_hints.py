"""Deletions announced by Keap's REST hooks: hints the ingest confirms with a direct read
(404) before recording them in raw_keap.deletions, in any run, without the full pass; the
runs hooks trigger leave the full pass's schedule to the scheduled runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.bundle import Sandboxes
from tests.conftest import admin
from tests.pipelines.test_ingest import Ingest, unpaced_ingest


@pytest.fixture
def small(sandboxes: Sandboxes, tmp_path: Path) -> Iterator[Ingest]:
    with unpaced_ingest(sandboxes, tmp_path, 5, 5) as found:
        yield found


def test_a_hinted_deletion_is_recorded_only_once_keap_confirms_it(small: Ingest) -> None:
    small.run(full_pass_every=2)  # counted toward the full pass: 1
    key = {"X-Keap-API-Key": small.boxes.keap.credentials.api_key}
    assert httpx.delete(f"{small.boxes.keap_url}/contacts/1002", headers=key).status_code == 204
    assert httpx.delete(f"{small.boxes.keap_url}/companies/2003", headers=key).status_code == 204
    small.served()

    hints = {"contacts": ["1002", "1003", "999999"], "companies": ["2003"], "products": ["4001"]}
    hinted = {"deletion_hints": hints, "full_pass_every": 2, "counts_toward_full_pass": False}  # as triggered
    reports = small.run(**hinted)
    keap = reports["keap"]
    assert not keap.full_pass and not keap.errors
    assert keap.resources["contacts"].deleted == 1 and keap.resources["companies"].deleted == 1
    assert keap.resources["products"].deleted == 0  # 4001 answers: live, a wrong hint proves nothing
    assert small.sql("select resource, id, is_deleted from raw_keap.deletions order by all") == [
        ("companies", "2003", True),
        ("contacts", "1002", True),
    ]
    served, _ = small.served()
    # one direct read per hinted id that was loaded and not marked: 999999 was never loaded
    assert served["by_endpoint"]["GET /contacts/{id}"] == 2
    assert served["by_endpoint"]["GET /companies/{id}"] == 1
    assert served["by_endpoint"]["GET /products/{id}"] == 1

    again = small.run(**hinted)  # marked already: neither read nor counted again
    assert again["keap"].resources["contacts"].deleted == 0
    served, _ = small.served()
    assert served["by_endpoint"]["GET /contacts/{id}"] == 1  # 1003, live: read again, as asked
    assert "GET /companies/{id}" not in served["by_endpoint"]
    assert not again["keap"].full_pass  # the two triggered runs did not count toward it ...
    assert small.run(full_pass_every=2)["keap"].full_pass  # ... the next scheduled one does: 2


def test_a_hint_that_cannot_be_confirmed_is_an_error_of_that_resource_not_a_deletion(small: Ingest) -> None:
    small.run()
    admin(httpx.Client(), small.boxes.keap_root, "/_sandbox/config", {"faults": {"error_500": 1.0}})
    small.keap.retry = type(small.keap.retry)(max_attempts=2, base_delay=0)
    reports = small.run(deletion_hints={"contacts": ["1001"]})
    assert any("deletions announced by hooks" in e for e in reports["keap"].errors)
    admin(httpx.Client(), small.boxes.keap_root, "/_sandbox/config", {"faults": {}})
    tables = small.sql("select table_name from information_schema.tables where table_schema = 'raw_keap'")
    assert ("contacts",) in tables and ("deletions",) not in tables  # nothing recorded
