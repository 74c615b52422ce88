"""One refused read or write of one resource does not stop the whole run: that mapping
is not pushed (named in one line), the others are, and nothing advances past what was
really written; the exit code says the run was incomplete."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import World

KEAP_BAD_REQUEST = {"code": 400, "message": "Invalid request", "status": "Bad Request", "details": []}


class RefuseOpportunityLists(httpx.HTTPTransport):
    """Keap as it answers a request it refuses: 400 for `GET /opportunities` lists, from
    the `after`-th one on (1: every one; 2: all but the extract's)."""

    def __init__(self, after: int = 1) -> None:
        super().__init__()
        self.after, self.seen, self.refused = after, 0, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/opportunities"):
            self.seen += 1
            if self.seen >= self.after:
                self.refused += 1
                return httpx.Response(400, json=KEAP_BAD_REQUEST, request=request)
        return super().handle_request(request)


def _edit_an_order_and_a_product(world: World) -> tuple[tuple[str, str], tuple[str, str]]:
    order = world.sql("select keap_id, customcrm_id from sync_state.links where mapping = 'orders' limit 1")[
        0
    ]
    product = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'products' limit 1"
    )[0]
    assert world.crm.patch(f"/orders/{order[1]}", json={"Title": "Renamed in Customcrm"}).status_code == 200
    assert world.crm.patch(f"/products/{product[1]}", json={"Name": "Renamed product"}).status_code == 200
    return order, product


@pytest.mark.synced
def test_a_refused_read_skips_only_its_mapping_and_the_next_run_catches_up(world: World) -> None:
    order, product = _edit_an_order_and_a_product(world)
    cursor_before = world.sql("select max(_cursor) from raw_keap.opportunities")[0][0]

    refusing = RefuseOpportunityLists()
    outcome = world.sync(keap_transport=refusing)
    assert refusing.refused >= 1
    assert outcome.status == "incomplete" and outcome.exit_code == 4
    assert outcome.problems[0].startswith("keap.opportunities: refused [keap GET ")
    assert outcome.problems[0].endswith("-> 400]: Invalid request"), outcome.problems
    assert outcome.push.errors == {"orders": "not pushed this run: keap.opportunities could not be read"}
    # the other mappings went on: the product edit reached Keap; the order's did not
    assert world.keap.get(f"/products/{product[0]}").json()["name"] == "Renamed product"
    assert world.keap.get(f"/opportunities/{order[0]}").json()["opportunity_title"] != "Renamed in Customcrm"
    assert world.sql("select max(_cursor) from raw_keap.opportunities")[0][0] == cursor_before
    assert world.sql("select count(*) from sync_state.quiet_inputs")[0][0] == 0

    again = world.sync()
    assert again.status == "ok" and again.exit_code == 0, again.problems
    assert world.keap.get(f"/opportunities/{order[0]}").json()["opportunity_title"] == "Renamed in Customcrm"
    world.served()
    assert not world.sync().push.wrote
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0


@pytest.mark.synced
def test_a_refused_reread_before_writes_stops_that_mapping_and_the_later_ones_go_on(world: World) -> None:
    order, product = _edit_an_order_and_a_product(world)
    base_before = world.sql(
        f"select field, value from sync_state.base_values where mapping = 'orders' and keap_id = '{order[0]}'"
    )

    refusing = RefuseOpportunityLists(after=2)  # the extract reads; the re-read before writes is refused
    outcome = world.sync(keap_transport=refusing)
    assert refusing.refused >= 1
    assert outcome.status == "incomplete" and outcome.exit_code == 4
    assert set(outcome.push.errors) == {"orders"}
    assert outcome.push.errors["orders"].startswith("stopped:")
    # products come after orders, and still went through
    assert world.keap.get(f"/products/{product[0]}").json()["name"] == "Renamed product"
    # nothing advanced for the order: no write, no base moved
    assert world.keap.get(f"/opportunities/{order[0]}").json()["opportunity_title"] != "Renamed in Customcrm"
    assert (
        world.sql(
            "select field, value from sync_state.base_values"
            f" where mapping = 'orders' and keap_id = '{order[0]}'"
        )
        == base_before
    )

    again = world.sync()
    assert again.status == "ok", again.problems
    assert world.keap.get(f"/opportunities/{order[0]}").json()["opportunity_title"] == "Renamed in Customcrm"
