"""The run summary (issue 14, point 5) and the small things of point 9: a refusal in one line
with its reason once and no Python None, conflicts shown with their winner, `new_links` in a
run's summary (not `linked`, which `status` counts in all), a run's one-line outcome with its
id and duration, the live display that stops a phase's lines when the next begins, where to
find crmsync again after `make sync`, and the sandboxes' data beside CRMSYNC_DB."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from crmsync import cli
from crmsync.progress import RunDisplay
from crmsync.report import conflict_line, rejection_line, run_line, sync_summary
from crmsync.settings import Settings

REFUSAL = {
    "mapping": "contacts",
    "target": "customcrm",
    "op": "create",
    "keap_id": "1026",
    "customcrm_id": None,
    "status": 409,
    "reason": "Email 'ada@x.example' is already used by con_7",
    "fields": [{"field": "Email", "message": "already used by con_7"}],
}


def test_a_refusal_is_one_line_without_none_and_with_its_reason_once() -> None:
    line = rejection_line(REFUSAL)
    assert line == (
        "rejected by customcrm: create contacts keap 1026: Email 'ada@x.example' is already used by con_7 (409) "
        "[key contacts/customcrm/1026]"
    )
    other = rejection_line({**REFUSAL, "fields": [{"field": "Phone", "message": "not a phone number"}]})
    assert other.endswith("(409) - Phone: not a phone number [key contacts/customcrm/1026]")


def test_a_conflict_shows_both_values_the_base_and_the_winner() -> None:
    line = conflict_line({"mapping": "contacts", "keap_id": "1026", "customcrm_id": "con_7", "field": "title",
                          "keap_value": "CEO", "customcrm_value": "CTO", "base_value": "CFO", "winner": "customcrm",
                          "reason": "conflict_customcrm_newer"})  # fmt: skip
    assert line == (
        "conflict contacts keap 1026 ⇄ customcrm con_7 title: Keap 'CEO', Customcrm 'CTO' (was 'CFO') "
        "-> customcrm wins (the newer)"
    )


def _result(**extra: Any) -> dict[str, Any]:
    counts = dict.fromkeys(("linked", "created", "updated", "deleted", "conflicts", "rejected", "waiting",
                            "held_back", "stale", "failed"), 0)  # fmt: skip
    return {"run_id": "20261129T214305Z-074e69", "status": "rejected", "elapsed_s": 12.34, "seconds": {},
            "mappings": {"contacts": {**counts, "linked": 2, "created": 2, "rejected": 1}},
            "rejections": [REFUSAL], "conflicts": [], "set_aside": [], **extra}  # fmt: skip


def test_the_summary_says_new_links_and_ends_with_the_run_id_outcome_and_duration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sync_summary(_result())
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sync summary"
    assert out[1].split("\t")[:2] == ["mapping", "new_links"]  # the links this run made
    assert "linked" not in out[1].split("\t")
    assert out[-1].startswith("rejected by customcrm")
    assert run_line(_result()) == (
        "run 20261129T214305Z-074e69 rejected (exit 3) in 12.3 s: contacts: 2 linked, 2 created, 1 rejected"
    )
    sync_summary(_result(), quiet=True)  # --quiet: the refusals alone (the outcome line follows)
    assert capsys.readouterr().out.splitlines() == [rejection_line(REFUSAL)]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_extract_lines_stop_when_dbt_begins() -> None:
    display = RunDisplay(stream=Terminal())
    with display:
        display.phase("extract")
        display.extract("keap", "contacts", 1, 25)
        assert display.bars is not None
        (extracting,) = display.bars.tasks
        assert not extracting.finished
        display.phase("dbt")
        assert extracting.finished  # no spinner ticks through the dbt phase
        dbt = next(t for t in display.bars.tasks if t.description.startswith("dbt build"))
        assert not dbt.finished
        display.phase("push")
        assert dbt.finished


def test_where_to_look_next_names_the_crmsync_that_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "crmsync").touch()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(venv_bin / "crmsync"), "sync"])
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)  # `make sync`: not on PATH
    assert cli._me() == ".venv/bin/crmsync"
    monkeypatch.setattr(cli.shutil, "which", lambda name: str(venv_bin / "crmsync"))  # activated
    assert cli._me() == "crmsync"


def test_the_sandboxes_keep_their_data_beside_crmsync_db(tmp_path: Path) -> None:
    none = tmp_path / "no.env"
    assert (
        Settings.from_env({"CRMSYNC_DB": str(tmp_path / "x" / "s.duckdb")}, none).sandbox_dir
        == tmp_path / "x" / "sandbox"
    )
    assert Settings.from_env({}, none).sandbox_dir == Path("data/sandbox")
    chosen = Settings.from_env(
        {"CRMSYNC_DB": str(tmp_path / "s.duckdb"), "CRMSYNC_SANDBOX_DIR": str(tmp_path / "b")}, none
    )
    assert chosen.sandbox_dir == tmp_path / "b"
