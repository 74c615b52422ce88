"""What the Keap client knows of the day's quota: Keap's last answer, until the quota resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from connectors.keap import KeapPacer, keap_client


def _answer(left: int, resets: datetime) -> httpx.Response:
    return httpx.Response(200, headers={"x-keap-product-quota-available": str(left),
                                        "x-keap-product-quota-expiry-time": str(int(resets.timestamp() * 1000))})  # fmt: skip


def test_the_quota_left_is_keaps_last_answer_until_its_reset_passes() -> None:
    pacer = KeapPacer()
    client = keap_client(base_url="https://keap.invalid/crm/rest/v2", api_key="k", pacer=pacer)
    try:
        assert client.quota() == (None, "tomorrow (00:00 UTC)")  # before any answer
        midnight = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        pacer.after(_answer(1234, midnight))
        assert client.quota() == (1234, midnight.strftime("%Y-%m-%d 00:00 UTC"))
        pacer.after(_answer(7, datetime.now(UTC) - timedelta(minutes=1)))  # that day is over
        assert client.quota() == (None, "tomorrow (00:00 UTC)")
    finally:
        client.close()
