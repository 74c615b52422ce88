"""Near real time: Keap's REST hooks trigger the sync, and deletions arrive at once.

Keap POSTs batches of `{event_key, object_type, object_keys: [{id, apiUrl, timestamp}]}`
30 to 60 s after a change (docs/keap-api.md, REST hooks). Deliveries are not signed, so
they are hints, never data: they start reads from Keap's API, nothing else.

- `receiver`: the ASGI app Keap POSTs to, on a path holding a per-tenant secret
  (`/hooks/<secret>`); it answers the verification handshake and appends the event keys
  and ids (nothing else) to the spool.
- `spool`: an SQLite file in the state folder (not the DuckDB file, which the sync holds).
- `trigger`: waits until no event came for `debounce_s` (or `max_wait_s` after the first),
  then runs the ordinary incremental sync; one run at a time.
- `runs`: what a run takes from the spool: the deletions to confirm with Keap (a direct
  read answering 404) and record as the full pass does; consumed once the run read Keap.
- `subscriptions`: `crmsync hooks register|list|verify|remove|check` through REST v1.
- `files`: the secret (0600), the registered public URL.

Polling stays the safety net: hooks can be lost (a receiver down past Keap's retries, a
subscription made Inactive), and the scheduled sync and its full pass run as before.
"""

from __future__ import annotations

from registry import MAPPINGS

# The event keys the four mappings need (every one is among Keap's `GET /hooks/event_keys`):
# each mapped Keap resource's `<singular>.<verb>`, as the registry describes it
EVENT_KEYS: tuple[str, ...] = tuple(
    f"{m.keap.singular}.{verb}" for m in MAPPINGS for verb in m.keap.hook_verbs
)

# an event key's object type -> the Keap resource (table in raw_keap) it is about
RESOURCES: dict[str, str] = {m.keap.singular: m.keap.name for m in MAPPINGS}


def resource_of(event_key: str) -> str | None:
    return RESOURCES.get(event_key.split(".", 1)[0])


class HooksProblem(Exception):
    """What stands in the hooks' way, said in one line as it is (crmsync prints it, exit 1)."""
