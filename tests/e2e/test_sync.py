"""`crmsync sync` end to end, for all four mappings (issue: push exactly once, converge)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import World

RESOURCES = {
    "customers": "companies",
    "contacts": "contacts",
    "orders": "opportunities",
    "products": "products",
}


def _by_keap_ref(records: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for record in records:
        found.setdefault(record["ExternalRefs"].get("keap", ""), []).append(record)
    return found


def test_first_sync_links_or_creates_every_keap_record_without_duplicates(world: World) -> None:
    before = {m: world.crm_all(m) for m in RESOURCES}
    outcome = world.sync()
    assert outcome.status == "ok", outcome.error
    links = dict(world.sql("select mapping, count(*) from sync_state.links group by mapping"))
    for mapping, resource in RESOURCES.items():
        keap_ids = {r["id"] for r in world.keap_all(resource)}
        assert links[mapping] == len(keap_ids) == 25, mapping  # every Keap record has its counterpart
        linked = dict(
            world.sql(f"select keap_id, customcrm_id from sync_state.links where mapping = '{mapping}'")
        )
        assert set(linked) == keap_ids
        after = world.crm_all(mapping)
        assert len({r["Id"] for r in after}) == len(after)
        # pre-existing Customcrm records were matched, not duplicated: nothing else was created
        assert len(after) == len(before[mapping]) + outcome.push.mappings[mapping].created
        assert outcome.push.mappings[mapping].created + outcome.push.mappings[mapping].linked == 25
        # Customcrm-only records are still there, unlinked
        crm_only = {r["Id"] for r in before[mapping]} - set(linked.values())
        assert crm_only and crm_only <= {r["Id"] for r in after}


def test_a_first_sync_creates_parents_and_children_in_one_round(world: World) -> None:
    """Children whose parents the same push creates are not left for another round: the
    push fills each reference in from the parent's new link (unlinked_parents), and every
    reference points at the counterpart of the Keap record's own parent."""
    outcome = world.sync()
    assert outcome.status == "ok", outcome.error
    assert outcome.rounds == 1
    assert sum(m.waiting for m in outcome.push.mappings.values()) == 0
    links = {
        (mapping, keap_id): crm_id
        for mapping, keap_id, crm_id in world.sql(
            "select mapping, keap_id, customcrm_id from sync_state.links"
        )
    }
    crm_contacts = {c["Id"]: c for c in world.crm_all("contacts")}
    crm_orders = {o["Id"]: o for o in world.crm_all("orders")}
    keap_contacts = {c["id"]: c for c in world.keap_all("contacts")}
    checked = 0
    for contact in keap_contacts.values():
        company = (contact.get("company") or {}).get("id")
        crm = crm_contacts[links[("contacts", contact["id"])]]
        assert crm["CustomerId"] == (links[("customers", str(company))] if company else None), contact["id"]
        checked += bool(company)
    for order in world.keap_all("opportunities"):
        contact_id = str(order["contact"]["id"])
        crm = crm_orders[links[("orders", order["id"])]]
        assert crm["ContactId"] == links[("contacts", contact_id)], order["id"]
        company = (keap_contacts[contact_id].get("company") or {}).get("id")
        assert crm["CustomerId"] == (links[("customers", str(company))] if company else None), order["id"]
        checked += 1
    assert checked > 25  # contacts with a company, and every order


def test_unmapped_fields_survive_on_both_sides(world: World) -> None:
    crm_customers = {c["Id"]: c for c in world.crm_all("customers")}
    with_org = {i: c["OrgNumber"] for i, c in crm_customers.items() if c["OrgNumber"]}
    keap_contacts = {c["id"]: c for c in world.keap_all("contacts")}
    assert world.sync().status == "ok"
    after = {c["Id"]: c for c in world.crm_all("customers")}
    assert {i: after[i]["OrgNumber"] for i in with_org} == with_org
    # EMAIL2 and SHIPPING stay in Keap, whatever the sync wrote there
    for record in world.keap_all("contacts"):
        original = keap_contacts[record["id"]]
        others = [e for e in original["email_addresses"] if e["field"] != "EMAIL1"]
        assert [e for e in record["email_addresses"] if e["field"] != "EMAIL1"] == others
        shipping = [a for a in original.get("addresses", []) if a["field"] == "SHIPPING"]
        assert [a for a in record.get("addresses", []) if a["field"] == "SHIPPING"] == shipping


@pytest.mark.synced
@pytest.mark.engines("duckdb")  # DuckDB's memory limit; PostgreSQL's memory is its server's
def test_a_build_that_ran_out_of_the_estimated_memory_goes_on_and_tells_the_operator(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size-derived memory is a first try: a sync whose build runs out of it (here a
    real 1MB) builds again at DuckDB's default, ends ok, and says so in its notes (stderr
    and `--json`)."""
    import crmsync.dbt

    monkeypatch.delenv("CRMSYNC_DUCKDB_MEMORY_LIMIT", raising=False)
    monkeypatch.setattr(crmsync.dbt, "memory_limit_for", lambda db_path: "1MB")
    heard: list[str] = []
    outcome = world.sync(rebuild=True, on_note=heard.append)
    assert outcome.status == "ok", outcome.error
    assert len(heard) == 1 and heard[0].startswith("dbt build ran out of the 1MB"), heard
    assert outcome.notes == heard and outcome.as_dict()["notes"] == heard


@pytest.mark.synced
def test_a_second_sync_with_no_edits_makes_zero_write_requests(world: World) -> None:
    world.served()
    again = world.sync()
    assert again.status == "ok" and not again.push.wrote
    keap, crm = world.served()
    assert keap["writes"] == 0 and crm["writes"] == 0
    assert keap["reads"] == 5  # one incremental list per resource and the stages; no hold-back re-read
    assert crm["reads"] == 4


@pytest.mark.synced
def test_edits_on_either_side_arrive_on_the_other(world: World) -> None:
    link = dict(
        world.sql("select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' limit 2")
    )
    (keap_a, crm_a), (keap_b, crm_b) = list(link.items())
    assert (
        world.keap.patch(
            f"/contacts/{keap_a}", params={"update_mask": "job_title"}, json={"job_title": "Edited in Keap"}
        ).status_code
        == 200
    )
    assert (
        world.crm.patch(
            f"/contacts/{crm_b}", json={"Title": "Edited in Customcrm", "City": "Tromsø"}
        ).status_code
        == 200
    )
    product = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'products' limit 1"
    )[0]
    assert world.crm.patch(f"/products/{product[1]}", json={"Price": "19.99"}).status_code == 200
    order = world.sql("select keap_id, customcrm_id from sync_state.links where mapping = 'orders' limit 1")[
        0
    ]
    assert world.crm.patch(f"/orders/{order[1]}", json={"Status": "won", "Stage": None}).status_code == 200

    outcome = world.sync()
    assert outcome.status == "ok", outcome.error
    assert world.crm.get(f"/contacts/{crm_a}").json()["Title"] == "Edited in Keap"
    keap_b_now = world.keap.get(f"/contacts/{keap_b}").json()
    assert keap_b_now["job_title"] == "Edited in Customcrm"
    billing = next(a for a in keap_b_now["addresses"] if a["field"] == "BILLING")
    assert billing["locality"] == "Tromsø"
    assert world.keap.get(f"/products/{product[0]}").json()["price"]["amount"] == 1999
    assert world.keap.get(f"/opportunities/{order[0]}").json()["stage"]["name"] == "Closed Won"
    assert world.crm.get(f"/orders/{order[1]}").json()["Stage"] == "Closed Won"
    world.served()
    assert not world.sync().push.wrote  # and they do not come back as new changes
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0


@pytest.mark.synced
def test_the_same_field_edited_on_both_sides_ends_with_the_newer_value_and_a_recorded_conflict(
    world: World,
) -> None:
    # a pair the first sync created (a twin linked by natural key may have had a conflict of its own)
    keap_id, crm_id = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'customers'"
        " and link_rule = 'created_in_customcrm' order by keap_id limit 1"
    )[0]
    world.keap.patch(
        f"/companies/{keap_id}", params={"update_mask": "notes"}, json={"notes": "older, in Keap"}
    )
    time.sleep(2)  # newer by more than two servers' clocks can be told apart (else a tie: Keap wins)
    world.crm.patch(f"/customers/{crm_id}", json={"Description": "newer, in Customcrm"})
    outcome = world.sync()
    assert outcome.status == "ok"
    assert outcome.push.mappings["customers"].conflicts == 1
    notes = world.keap.get(f"/companies/{keap_id}", params={"fields": "notes"}).json()["notes"]
    assert notes == world.crm.get(f"/customers/{crm_id}").json()["Description"] == "newer, in Customcrm"
    assert world.sql(
        f"select field, keap_value, customcrm_value, winner, reason from sync_state.conflicts where keap_id = '{keap_id}'"
    ) == [("description", "older, in Keap", "newer, in Customcrm", "customcrm", "conflict_customcrm_newer")]


@pytest.mark.synced
def test_a_rejected_record_is_listed_does_not_stop_the_others_and_goes_through_once_fixed(
    world: World,
) -> None:
    linked = {r[0] for r in world.sql("select customcrm_id from sync_state.links where mapping = 'contacts'")}
    taken = next(c["Email"] for c in world.crm_all("contacts") if c["Id"] in linked and c["Email"])
    # a new Keap contact with the address of an already linked one: Customcrm refuses it (409)
    twin = world.keap.post(
        "/contacts", json={"given_name": "Twin", "email_addresses": [{"email": taken, "field": "EMAIL1"}]}
    ).json()
    other = world.keap.post(
        "/contacts",
        json={
            "given_name": "Other",
            "email_addresses": [{"email": "other.new@x.example", "field": "EMAIL1"}],
        },
    ).json()

    outcome = world.sync()
    assert outcome.status == "rejected" and outcome.exit_code == 3
    (rejection,) = outcome.push.rejections
    assert rejection["keap_id"] == twin["id"] and rejection["status"] == 409
    assert "already used" in rejection["reason"] and rejection["fields"][0]["field"] == "Email"
    assert world.sql(f"select count(*) from sync_state.links where keap_id = '{other['id']}'") == [(1,)]
    listed = world.sql(
        f"select link_status, status_reason from main.link_contacts where keap_id = '{twin['id']}'"
    )
    assert listed[0][0] == "rejected" and "already used" in listed[0][1]

    again = world.sync()  # the same write is not sent again at once: no work for this run
    assert again.status == "ok" and again.exit_code == 0
    assert [(r["keap_id"], r["target"]) for r in again.push.set_aside] == [(twin["id"], "customcrm")]
    assert world.sql("select attempts from sync_state.rejections where resolved_at is null") == [(1,)]

    world.keap.patch(
        f"/contacts/{twin['id']}",
        params={"update_mask": "email_addresses"},
        json={"email_addresses": [{"email": "twin.fixed@x.example", "field": "EMAIL1"}]},
    )
    fixed = world.sync()
    assert fixed.status == "ok" and fixed.push.mappings["contacts"].created == 1
    assert world.sql("select count(*) from sync_state.rejections where resolved_at is null") == [(0,)]


@pytest.mark.synced
def test_an_edit_made_in_keap_during_the_run_is_held_back_not_overwritten(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crmsync.run

    keap_id, crm_id = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' limit 1"
    )[0]
    world.crm.patch(f"/contacts/{crm_id}", json={"Title": "from Customcrm"})  # a Keap PATCH is now due
    real_build = crmsync.run.dbt_build
    edited: list[bool] = []

    def build_then_edit_in_keap(*args: object, **kwargs: object) -> object:
        result = real_build(*args, **kwargs)  # type: ignore[arg-type]
        if not edited:  # after the extract, before the push: a user edits the record in Keap
            world.keap.patch(f"/contacts/{keap_id}", params={"update_mask": "job_title"},
                             json={"job_title": "typed in Keap meanwhile"})  # fmt: skip
            edited.append(True)
        return result

    monkeypatch.setattr(crmsync.run, "dbt_build", build_then_edit_in_keap)
    outcome = world.sync()
    assert outcome.push.mappings["contacts"].held_back == 1
    assert world.keap.get(f"/contacts/{keap_id}").json()["job_title"] == "typed in Keap meanwhile"
    assert world.sql(
        f"select status from sync_state.operations where keap_id = '{keap_id}' and target = 'keap' "
        "order by attempted_at desc limit 1"
    ) == [("held_back",)]

    monkeypatch.setattr(crmsync.run, "dbt_build", real_build)
    merged = world.sync()  # the next run merges it: both changed, Keap's edit is the newer
    assert merged.status == "ok"
    assert world.crm.get(f"/contacts/{crm_id}").json()["Title"] == "typed in Keap meanwhile"
    assert world.keap.get(f"/contacts/{keap_id}").json()["job_title"] == "typed in Keap meanwhile"
