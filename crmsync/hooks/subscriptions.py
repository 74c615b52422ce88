"""The tenant's subscriptions in Keap (REST v1 `/hooks`): one per event key the mappings
need, all to the receiver's URL (`<public base>/hooks/<secret>`).

A subscription is "ours" when its hookUrl ends in our hook path, whatever base URL it
was registered with. Keap verifies a subscription by POSTing an `X-Hook-Secret` to it
right after it is created or changed; it makes a subscription Inactive after a 410 or the
4th failed delivery, and sends nothing to it until it is verified again: `check`
re-verifies those (with every scheduled sync, `crmsync hooks check`, and when
`crmsync hooks serve` starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.keap_hooks import KeapHooksClient, hooks_client
from crmsync.hooks import EVENT_KEYS
from crmsync.hooks.files import hidden, hook_path
from crmsync.settings import Settings


def hooks_api(settings: Settings) -> KeapHooksClient:
    """Keap's REST v1 hooks with the configured credentials (as the sync's Keap client has
    them: a key, or OAuth with the rotated tokens in the state folder)."""
    settings.validate()
    from crmsync.run import configured_keap

    keap = configured_keap(settings)
    try:
        return hooks_client(keap, settings.keap_api_url)
    finally:
        keap.close()  # the v1 client has its own connection; it shares the auth and the pacing


@dataclass
class Report:
    """Where our subscriptions stand, after whatever was done to them."""

    url: str  # the hook URL, secret hidden
    statuses: dict[str, str] = field(default_factory=dict)  # event key -> Keap's status
    created: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # registered at another base URL before
    reverified: dict[str, str] = field(default_factory=dict)  # event key -> its status before

    @property
    def failing(self) -> list[str]:
        return [k for k in EVENT_KEYS if self.statuses.get(k, "missing") not in ("Verified", "missing")]

    @property
    def missing(self) -> list[str]:
        return [k for k in EVENT_KEYS if k not in self.statuses]

    @property
    def ok(self) -> bool:
        return not (self.failing or self.missing)

    def line(self) -> str:
        verified = sum(1 for s in self.statuses.values() if s == "Verified")
        parts = [f"hooks: {verified} of {len(EVENT_KEYS)} subscriptions verified"]
        if self.created:
            parts.append(f"{len(self.created)} created")
        if self.moved:
            parts.append(f"{len(self.moved)} moved to {self.url}")
        if self.reverified:
            before = "/".join(sorted(set(self.reverified.values())))
            parts.append(f"{len(self.reverified)} re-verified (Keap had them {before})")
        line = ", ".join(parts)
        if self.failing:
            states = sorted({self.statuses[k] for k in self.failing})
            line += (
                f"; {len(self.failing)} still {'/'.join(states)} ({', '.join(self.failing)}): Keap cannot "
                f"reach {self.url}; start `crmsync hooks serve` there, then `crmsync hooks verify` "
                "(until then the scheduled sync alone brings Keap's changes)"
            )
        if self.missing:
            line += f"; {len(self.missing)} missing ({', '.join(self.missing)}): run `crmsync hooks register`"
        return line


class Subscriptions:
    def __init__(self, api: KeapHooksClient, secret: str, url: str) -> None:
        self.api = api
        self.secret = secret
        self.url = url  # the whole hook URL, secret included: only ever sent to Keap

    def shown(self, text: str) -> str:
        return hidden(text, self.secret)

    def ours(self, hooks: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        found = self.api.list() if hooks is None else hooks
        return [h for h in found if str(h["hookUrl"]).rstrip("/").endswith(hook_path(self.secret))]

    def _report(self, hooks: list[dict[str, Any]]) -> Report:
        report = Report(self.shown(self.url))
        for hook in hooks:
            # two of ours for one key (an interrupted register): the better status shows
            if hook["eventKey"] in EVENT_KEYS and report.statuses.get(hook["eventKey"]) != "Verified":
                report.statuses[hook["eventKey"]] = hook["status"]
        return report

    def register(self) -> Report:
        """A subscription to our URL for every event key the mappings need: created where
        missing, moved where registered at another base URL, verified."""
        offered = set(self.api.event_keys())
        absent = [k for k in EVENT_KEYS if k not in offered]
        if absent:
            raise ValueError(f"Keap does not offer the hook event keys {', '.join(absent)}")
        ours = self.ours()
        by_key: dict[str, dict[str, Any]] = {}
        for hook in ours:
            by_key.setdefault(hook["eventKey"], hook)
        created: list[str] = []
        moved: list[str] = []
        for event_key in EVENT_KEYS:
            found = by_key.get(event_key)
            if found is None:
                by_key[event_key] = self.api.create(event_key, self.url)
                created.append(event_key)
            elif found["hookUrl"] != self.url:
                by_key[event_key] = self.api.update(found["key"], event_key, self.url)
                moved.append(event_key)
        report = self._settle([by_key[k] for k in EVENT_KEYS])
        report.created, report.moved = created, moved
        return report

    def _settle(self, hooks: list[dict[str, Any]]) -> Report:
        """Keap verifies a subscription right after it is created or changed; one still not
        Verified is verified again at once (the answer says how that went)."""
        return self._report([self.api.verify(h["key"]) if h["status"] != "Verified" else h for h in hooks])

    def check(self) -> Report:
        """Re-verify our subscriptions that are not Verified (Keap made them Inactive, or
        they never were verified); report what is missing."""
        ours = self.ours()
        reverified = {}
        for index, hook in enumerate(ours):
            if hook["eventKey"] in EVENT_KEYS and hook["status"] != "Verified":
                ours[index] = self.api.verify(hook["key"])
                if ours[index]["status"] == "Verified":
                    reverified[str(hook["eventKey"])] = str(hook["status"])
        report = self._report(ours)
        report.reverified = reverified
        return report

    def verify(self) -> Report:
        """Ask Keap to verify every subscription of ours that is not Verified."""
        return self.check()

    def remove(self) -> list[str]:
        """Delete every subscription of ours; the event keys removed."""
        removed = []
        for hook in self.ours():
            self.api.delete(hook["key"])
            removed.append(str(hook["eventKey"]))
        return removed
