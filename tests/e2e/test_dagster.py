"""The Dagster extra (crmsync/dagster_definitions.py): one asset partitioned by tenant, run
with Dagster's in-process executor against the sandboxes; the core never imports Dagster."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crmsync.dagster_definitions import definitions
from sandbox.bundle import Sandboxes
from tests.conftest import REPO, admin, crm_http


def test_a_tenants_partition_is_its_sync_and_a_failing_tenant_fails_its_step(
    sandboxes: Sandboxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandboxes.seed_demo(size=5, seed=7)
    with crm_http(sandboxes) as crm:
        admin(crm, sandboxes.customcrm_root, "/_sandbox/config", {"limits": "off"})
    tenants = tmp_path / "tenants.toml"
    tenants.write_text(f"""
[tenants.acme]
keap_api_url = "{sandboxes.keap_url}"
keap_api_key = {{ env = "ACME_KEAP_KEY" }}
customcrm_api_url = "{sandboxes.customcrm_url}"
customcrm_api_token = {{ env = "ACME_CRM_TOKEN" }}

[tenants.revoked]
keap_api_url = "{sandboxes.keap_url}"
keap_api_key = {{ env = "REVOKED_KEAP_KEY" }}
customcrm_api_url = "{sandboxes.customcrm_url}"
customcrm_api_token = {{ env = "ACME_CRM_TOKEN" }}
""")
    tenants.chmod(0o600)
    monkeypatch.setenv("CRMSYNC_TENANTS", str(tenants))
    monkeypatch.setenv("ACME_KEAP_KEY", sandboxes.keap.credentials.api_key)
    monkeypatch.setenv("ACME_CRM_TOKEN", sandboxes.customcrm.credentials.token)
    monkeypatch.setenv("REVOKED_KEAP_KEY", "a-key-keap-no-longer-knows")

    defs = definitions()
    job = defs.resolve_job_def("crmsync_sync_job")
    assert job.partitions_def is not None
    assert job.partitions_def.get_partition_keys() == ["acme", "revoked"]

    with dg.DagsterInstance.ephemeral() as instance:
        done = job.execute_in_process(partition_key="acme", instance=instance)
        assert done.success
        (materialized,) = done.asset_materializations_for_node("crmsync_sync")
        metadata = {key: value.value for key, value in materialized.metadata.items()}
        assert (metadata["tenant"], metadata["status"], metadata["exit_code"]) == ("acme", "ok", 0)
        assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", str(metadata["run_id"]))
        assert metadata["mappings"]["orders"]["created"] == 5  # every Keap opportunity became an order
        assert materialized.partition == "acme"

        failed = job.execute_in_process(partition_key="revoked", instance=instance, raise_on_error=False)
        assert not failed.success
        (step_failure,) = [event for event in failed.all_events if event.is_step_failure]
        description = step_failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
        assert description.startswith("tenant revoked: failed (exit 1): keap refused the credentials (401)")
        assert not failed.asset_materializations_for_node("crmsync_sync")

    schedule = defs.resolve_schedule_def("every_tenant_every_15_minutes")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # nothing runs until it is turned on
    tick = datetime(2026, 12, 7, 8, 15, tzinfo=UTC)
    ticked = schedule.evaluate_tick(
        dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    )
    assert [(request.partition_key, request.run_key) for request in ticked.run_requests or []] == [
        ("acme", "acme@2026-12-07T08:15Z"), ("revoked", "revoked@2026-12-07T08:15Z")]  # fmt: skip


def test_nothing_but_the_dagster_module_imports_dagster() -> None:
    importing = re.compile(r"^\s*(import dagster|from dagster)\b", re.MULTILINE)
    found = [path.relative_to(REPO).as_posix() for folder in ("connectors", "pipelines", "reverse_etl", "crmsync",
             "sandbox", "registry", "support") for path in (REPO / folder).rglob("*.py")
             if importing.search(path.read_text())]  # fmt: skip
    assert found == ["crmsync/dagster_definitions.py"]
