"""webhooks: one attempt against a real receiver on loopback, and the address check on the connection's path."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from img2img.api.webhook_signing import new_secret_key, public_key_text, read_secret_key
from img2img_operator.metrics import Metrics
from img2img_operator.webhooks import CheckedResolver, RefusedAddress, Webhooks
from operator_samples import config
from webhook_receiver import Receiver, verify

KEY = read_secret_key(new_secret_key())
BODY = json.dumps({"id": "uid-1", "status": "COMPLETED"}).encode()


def attempt(url: str, **webhooks):
    hooks = Webhooks(config(webhooks=webhooks), None, None, None, Metrics(), KEY)

    async def post():
        try:
            return await hooks._post(url, "uid-1", BODY)
        finally:
            await hooks.close()

    return asyncio.run(post())


@pytest.mark.parametrize("status", [200, 404, 500])
def test_an_attempt_reports_the_receivers_status_and_what_it_said(status):
    receiver = Receiver(script=[status])
    try:
        made = attempt(receiver.url, allowPrivateAddresses=True)
    finally:
        receiver.close()
    assert made.status == status and not made.refused
    assert made.error == (None if status == 200 else f"the receiver answered {status}: nope")
    [delivery] = receiver.received
    assert delivery.body == BODY and verify(delivery.headers, delivery.body, public_key_text(KEY))


def test_no_receiver_is_an_attempt_without_a_status():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    made = attempt(f"http://127.0.0.1:{port}/hook", allowPrivateAddresses=True)
    assert made.status is None and not made.refused and made.error.startswith("cannot reach the receiver")


def test_a_private_address_is_refused_before_anything_is_sent():
    receiver = Receiver()
    try:
        made = attempt(receiver.url)  # the production default: https to public addresses only
    finally:
        receiver.close()
    assert made.refused and made.error == f"{receiver.url!r} must be an https:// URL"
    assert receiver.received == []


def test_a_name_resolving_to_a_refused_address_stops_the_connection():
    async def post():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=CheckedResolver())) as session:
            await session.post("http://localhost:9/hook", data=BODY)

    with pytest.raises(RefusedAddress, match="'localhost' resolves to .*a loopback address; refused"):
        asyncio.run(post())
