"""Keap's REST hooks: subscriptions are managed through REST **v1** (`/crm/rest/v1/hooks`;
v2 has none), with the same credentials, pacing and retries as the v2 client
(docs/keap-api.md, REST hooks)."""

from __future__ import annotations

from typing import Any

from connectors.errors import ProtocolError
from connectors.http import ApiClient
from connectors.keap import KeapClient


def v1_url(v2_url: str) -> str:
    """Keap's REST v1 base beside the v2 one: `.../crm/rest/v2` -> `.../crm/rest/v1`."""
    base = v2_url.rstrip("/")
    if not base.endswith("/v2"):
        raise ValueError(
            f"cannot tell Keap's REST v1 address (where hooks live) from KEAP_API_URL {base!r}: "
            "it should end in /v2"
        )
    return base[: -len("/v2")] + "/v1"


class KeapHooksClient(ApiClient):
    """`/hooks` of Keap REST v1. A hook is `{key, eventKey, hookUrl, status}`; status is
    Verified, Unverified or Inactive."""

    system = "keap"

    def event_keys(self) -> list[str]:
        found = self.request("GET", "/hooks/event_keys").json()
        if not isinstance(found, list) or not all(isinstance(k, str) for k in found):
            raise ProtocolError("Keap's hook event keys are not a list of names", system="keap")
        return found

    def list(self) -> list[dict[str, Any]]:
        found = self.request("GET", "/hooks").json()
        if not isinstance(found, list) or not all(isinstance(h, dict) for h in found):
            raise ProtocolError("Keap's hook subscriptions are not a list of objects", system="keap")
        return [_hook(h) for h in found]

    def create(self, event_key: str, hook_url: str) -> dict[str, Any]:
        """Not idempotent: a failure without an answer is not retried (list, then decide)."""
        return _hook(self.request("POST", "/hooks", json={"eventKey": event_key, "hookUrl": hook_url}).json())

    def get(self, key: str) -> dict[str, Any]:
        return _hook(self.request("GET", f"/hooks/{key}").json())

    def update(self, key: str, event_key: str, hook_url: str) -> dict[str, Any]:
        answer = self.request("PUT", f"/hooks/{key}", json={"eventKey": event_key, "hookUrl": hook_url})
        return _hook(answer.json())

    def delete(self, key: str) -> None:
        self.request("DELETE", f"/hooks/{key}")

    def verify(self, key: str) -> dict[str, Any]:
        """Keap POSTs a new X-Hook-Secret to the hook URL now; the answer says how it went."""
        return _hook(self.request("POST", f"/hooks/{key}/verify", idempotent=True).json())


def _hook(found: Any) -> dict[str, Any]:
    if not isinstance(found, dict) or not {"key", "eventKey", "hookUrl", "status"} <= set(found):
        raise ProtocolError("Keap's hook subscription lacks key, eventKey, hookUrl or status", system="keap")
    return {**found, "key": str(found["key"])}


def hooks_client(keap: KeapClient, v2_url: str) -> KeapHooksClient:
    """A v1 client sharing the v2 client's credentials (key or OAuth, with its token store),
    its pacing (Keap's limits count both versions) and its retry policy."""
    return KeapHooksClient(
        v1_url(v2_url), auth=keap.http.auth, pacer=keap.pacer, retry=keap.retry, sleep=keap.sleep
    )
