"""A NUL character in a value: both APIs send it (JSON's `\\u0000`), PostgreSQL cannot hold
it in text (its `->>` refuses the escape), so the ingest drops it on either engine; the
record syncs without it and says so, and nothing is written again for it."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import World


def _linked(world: World, mapping: str) -> list[tuple[str, str]]:
    return world.sql(
        f"select keap_id, customcrm_id from sync_state.links where mapping = '{mapping}' order by keap_id"
    )


@pytest.mark.synced
def test_a_nul_character_in_either_system_is_dropped_and_the_record_syncs(world: World) -> None:
    (keap_a, crm_a), (keap_b, crm_b) = _linked(world, "contacts")[:2]
    company_keap, company_crm = _linked(world, "customers")[0]
    assert (
        world.keap.patch(
            f"/contacts/{keap_a}", params={"update_mask": "job_title"}, json={"job_title": "Night\x00shift"}
        ).status_code
        == 200
    )
    assert world.crm.patch(f"/contacts/{crm_b}", json={"Title": "Day\x00shift"}).status_code == 200
    assert (
        world.crm.patch(
            f"/customers/{company_crm}", json={"Description": "\x00Hello\x00 world\x00"}
        ).status_code
        == 200
    )
    assert world.keap.get(f"/contacts/{keap_a}").json()["job_title"] == "Night\x00shift"  # the API kept it

    outcome = world.sync()
    assert outcome.status == "ok", outcome.error or outcome.problems
    cleaned = {
        (report.system, counts.resource): counts.cleaned
        for report in outcome.extract
        for counts in report.resources.values()
        if counts.cleaned
    }
    assert cleaned == {("keap", "contacts"): 1, ("customcrm", "contacts"): 1, ("customcrm", "customers"): 1}
    assert world.crm.get(f"/contacts/{crm_a}").json()["Title"] == "Nightshift"
    assert world.keap.get(f"/contacts/{keap_b}").json()["job_title"] == "Dayshift"
    assert (
        world.keap.get(f"/companies/{company_keap}", params={"fields": "notes"}).json()["notes"]
        == "Hello world"
    )
    # the raw rows hold the records without it, and the models read them
    (payload,) = world.sql(f"select payload from raw_keap.contacts where id = '{keap_a}'")[0]
    assert "\\u0000" not in payload and "Nightshift" in payload

    world.served()
    again = world.sync(rebuild=True)  # the sides still differ by the NUL: no write comes of it
    assert again.status == "ok", again.error or again.problems
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0


@pytest.mark.synced
def test_a_payload_loaded_with_a_nul_before_the_ingest_dropped_them_builds_and_reads_without_it(
    world: World,
) -> None:
    """A raw row as an older version loaded it: the JSON escape of a NUL in a mapped field and
    in one nothing reads (which jsonb would refuse for the whole row), beside the six
    characters `\\u0000` typed as text, which stay."""
    (keap_id, crm_id), *_ = _linked(world, "contacts")
    ((text,),) = world.sql("select payload from raw_keap.contacts where id = ?", [keap_id])
    record = json.loads(text)
    # a NUL, a backslash, a NUL (in JSON: a NUL's escape right after an escaped backslash,
    # itself right after a NUL's escape); a backslash then a NUL, at the end
    record["job_title"] = "Night\x00\x00shift C:\\u0000 \x00\\\x00x \\\x00"
    record["unmapped_note"] = "\x00hidden"
    old = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    assert old.count("\\u0000") == 7
    world.sql("update raw_keap.contacts set payload = ? where id = ?", [old, keap_id])

    outcome = world.sync(rebuild=True)
    assert outcome.status == "ok", outcome.error or outcome.problems
    assert world.crm.get(f"/contacts/{crm_id}").json()["Title"] == "Nightshift C:\\u0000 \\x \\"
