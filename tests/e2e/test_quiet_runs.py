"""A sync after one that found nothing to do skips dbt and the push; any change ends the skip."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import crmsync.run
from tests.e2e.conftest import World


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every dbt build the sync asks for, still carried out."""
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., Any] = crmsync.run.dbt_build

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(crmsync.run, "dbt_build", counted)
    return calls


def _quiet(world: World) -> str:
    """Sync until the state is quiet; the run id that recorded it."""
    for _ in range(3):
        outcome = world.sync()
        assert outcome.status == "ok", outcome.error
        if outcome.quiet_since:
            return outcome.quiet_since
    raise AssertionError("three syncs and never quiet")


@pytest.mark.synced  # the demo's first sync left nothing to write: the next run may skip
def test_nothing_changed_means_no_dbt_no_push_and_any_change_ends_the_skip(
    world: World, builds: list[tuple[Any, ...]]
) -> None:
    """One world through the whole cycle (each step needs the quiet state the previous left)."""
    quiet_run = _quiet(world)
    world.served()
    builds.clear()
    skipped = world.sync()
    assert skipped.status == "ok" and skipped.rounds == 0
    assert skipped.quiet_since == quiet_run
    assert builds == []
    keap, crm = world.served()
    assert keap["writes"] == crm["writes"] == 0
    assert (keap["reads"], crm["reads"]) == (5, 4)  # the extract's one page per resource, nothing else
    again = world.sync()
    assert again.quiet_since == quiet_run and builds == []  # still the same quiet run: nothing recorded since

    # other vars: a build; then quiet with those vars
    policy = {"conflict_policy": {m: "keap" for m in ("customers", "contacts", "orders", "products")}}
    assert world.sync(variables=policy).quiet_since is None and len(builds) == 1
    assert world.sync(variables=policy).quiet_since is not None and len(builds) == 1

    # a changed sync_state: a build, which writes nothing (both sides still agree) and confirms the bases
    world.sql(
        "delete from sync_state.base_values where (mapping, keap_id) in "
        "(select mapping, keap_id from sync_state.links where mapping = 'contacts' limit 1)"
    )
    after_state_change = world.sync(variables=policy)
    assert after_state_change.quiet_since is None and len(builds) == 2
    assert not after_state_change.push.wrote
    assert world.sync(variables=policy).quiet_since is not None and len(builds) == 2

    # --rebuild builds anyway
    assert world.sync(variables=policy, rebuild=True).quiet_since is None and len(builds) == 3

    # an edit in Customcrm: a build, and the edit arrives in Keap
    keap_id, crm_id = world.sql(
        "select keap_id, customcrm_id from sync_state.links where mapping = 'contacts' order by keap_id limit 1"
    )[0]
    edited = world.crm.patch(f"/contacts/{crm_id}", json={"Title": "Edited after a quiet run"})
    assert edited.status_code == 200
    outcome = world.sync(variables=policy)
    assert outcome.status == "ok" and outcome.quiet_since is None and len(builds) > 3
    assert world.keap.get(f"/contacts/{keap_id}").json()["job_title"] == "Edited after a quiet run"
