"""What `crmsync plan` shows: the rows a sync would write, field by field.

Read from the marts of the plan's copy of the DuckDB file (crmsync.run.run_plan) before
the copy is removed: per mapping and target, each row of `sync_customcrm__*` and
`sync_keap__*` (ready, waiting with its reason, or set aside: refused before with the same
values, or set aside by a person), its fields old -> new from the merge
(`int_merged_fields`), conflicts with their winner, and what is held for review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from registry import mapping as registry_mapping
from registry import mapping_names
from reverse_etl.state import connect, payload_digest, set_aside

TARGETS = ("customcrm", "keap")


def _model(mapping: str, target: str) -> str:
    return (
        f"main.sync_customcrm__{mapping}"
        if target == "customcrm"
        else f"main.sync_keap__{registry_mapping(mapping).keap.name}"
    )


def _dicts(con: Any, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _fields(merged: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """The fields a write to `target` carries, old -> new, from the merge's rows of one pair:
    the values whose winner is the other system."""
    source = "keap" if target == "customcrm" else "customcrm"
    found = []
    for f in merged:
        if f["winner"] != source or f["keap_value"] == f["customcrm_value"]:
            continue
        found.append({
            "field": f["customcrm_field"] if target == "customcrm" else f["keap_property"],
            "old": f[f"{target}_value"],
            "new": f[f"{source}_value"],
            "conflict": {"keap": f["keap_value"], "customcrm": f["customcrm_value"], "base": f["base_value"],
                         "winner": f["winner"], "reason": f["reason"]} if f["is_conflict"] else None,
        })  # fmt: skip
    return found


def plan_details(db_path: Path, mappings: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Everything the plan shows, from the marts as last built in `db_path`."""
    mappings = mappings or mapping_names()
    waiting = {(m, t): set_aside(db_path, m, t) for m in mappings for t in TARGETS}
    rows: list[dict[str, Any]] = []
    with connect(db_path) as con:
        merged: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for f in _dicts(con, f"""select mapping, keap_id, customcrm_id, field, keap_property, customcrm_field,
                                        keap_value, customcrm_value, base_value, winner, reason, is_conflict
                                 from intermediate.int_merged_fields
                                 where mapping in ({", ".join("?" for _ in mappings)})
                                 order by mapping, field_position""", list(mappings)):  # fmt: skip
            merged.setdefault((f["mapping"], f["keap_id"] or "new:" + str(f["customcrm_id"])), []).append(f)
        for mapping in mappings:
            for target in TARGETS:
                for row in _dicts(con, f"""select op, keap_id, customcrm_id, payload, status, waiting_reason
                                          from {_model(mapping, target)} order by op, keap_id, customcrm_id"""):  # fmt: skip
                    payload = (
                        json.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"]
                    )
                    pair = merged.get((mapping, row["keap_id"] or "new:" + str(row["customcrm_id"])), [])
                    fields = _fields(pair, target) if row["op"] != "delete" else []
                    if target == "customcrm" and isinstance(payload, dict):  # derived ones: an order's Status
                        named = {f["field"] for f in fields}
                        fields += [{"field": k, "old": None, "new": v, "conflict": None, "derived": True}
                                   for k, v in payload.items() if k not in named and k != "ExternalRefs"]  # fmt: skip
                    mark = waiting[(mapping, target)].get((row["keap_id"] or row["customcrm_id"], row["op"]))
                    status, reason = row["status"], row["waiting_reason"]
                    if mark is not None and mark.digest == payload_digest(payload):
                        status, reason = "set_aside", mark.why
                    rows.append({"mapping": mapping, "target": target, "op": row["op"], "keap_id": row["keap_id"],
                                 "customcrm_id": row["customcrm_id"], "status": status, "reason": reason,
                                 "fields": fields})  # fmt: skip
        chosen = ", ".join("?" for _ in mappings)
        held = _dicts(con, f"""select mapping, keap_id, cast(null as varchar) as customcrm_id,
                                       natural_key || ' ' || natural_key_value || ' is shared by '
                                       || array_to_string(customcrm_candidates, ', ') as reason
                                from main.review_ambiguous_matches where mapping in ({chosen})
                                union all
                                select mapping, keap_id, customcrm_id, reason
                                from sync_state.keap_create_intents
                                where status in ('held', 'unsearchable') and mapping in ({chosen})
                                order by 1, 2, 3, 4""", [*mappings, *mappings])  # fmt: skip
    pending: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        counts = pending.setdefault((row["mapping"], row["target"], row["op"]), {
            "mapping": row["mapping"], "target": row["target"], "op": row["op"], "ready": 0, "waiting": 0,
            "set_aside": 0})  # fmt: skip
        counts[row["status"]] += 1
    conflicts = [
        {"mapping": r["mapping"], "target": r["target"], "keap_id": r["keap_id"],
         "customcrm_id": r["customcrm_id"], "field": f["field"], **(f["conflict"] or {})}
        for r in rows for f in r["fields"] if f.get("conflict")
    ]  # fmt: skip
    return {"pending": list(pending.values()), "rows": rows, "conflicts": conflicts, "held": held}


def has_work(details: dict[str, Any]) -> bool:
    """Would a sync write anything now (rows ready or waiting; set-aside rows are no work)?"""
    return any(row["status"] in ("ready", "waiting") for row in details["rows"])
