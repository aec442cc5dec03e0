"""Webhook signatures as the Standard Webhooks specification's asymmetric scheme defines them: checked by a receiver
written from the specification (webhook_receiver.verify), not by the signing code."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from img2img.api.webhook_signing import new_secret_key, public_key_text, read_secret_key, signature_headers
from webhook_receiver import verify

BODY = b'{"id":"4f1c","status":"COMPLETED","output":{"images":["aW1n"]}}'
# RFC 8032, section 7.1, test 1: the private key and the public key it has
RFC_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def whsk(hex_key: str) -> str:
    return "whsk_" + base64.b64encode(bytes.fromhex(hex_key)).decode()


def test_keys_are_serialized_as_the_specification_says_raw_32_bytes_in_base64():
    key = read_secret_key(whsk(RFC_SECRET))
    assert public_key_text(key) == "whpk_" + base64.b64encode(bytes.fromhex(RFC_PUBLIC)).decode()
    made = new_secret_key()
    assert made.startswith("whsk_") and len(base64.b64decode(made[5:])) == 32
    assert made != new_secret_key()


def test_a_receiver_verifies_the_signature_with_the_public_key_alone():
    key = read_secret_key(new_secret_key())
    headers = signature_headers(key, "uid-1", 1_767_225_600, BODY)
    assert headers["webhook-id"] == "uid-1" and headers["webhook-timestamp"] == "1767225600"
    assert headers["webhook-signature"].startswith("v1a,")
    assert verify(headers, BODY, public_key_text(key), now=1_767_225_600)


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "key"])
def test_any_change_to_what_was_signed_fails_verification(tamper):
    key = read_secret_key(new_secret_key())
    headers = signature_headers(key, "uid-1", 1_767_225_600, BODY)
    body, public = BODY, public_key_text(key)
    if tamper == "body":
        body = BODY.replace(b"COMPLETED", b"FAILED")
    elif tamper == "id":
        headers["webhook-id"] = "uid-2"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = "1767225601"
    else:
        public = public_key_text(read_secret_key(new_secret_key()))
    assert not verify(headers, body, public, now=1_767_225_600)


def test_an_old_timestamp_is_refused_by_the_receiver():
    key = read_secret_key(new_secret_key())
    headers = signature_headers(key, "uid-1", 1_767_225_600, BODY)
    assert not verify(headers, BODY, public_key_text(key), now=1_767_225_600 + 3600)


def test_an_id_with_a_full_stop_is_not_signed():
    with pytest.raises(ValueError, match="must not contain '.'"):
        signature_headers(read_secret_key(new_secret_key()), "a.b", 1, BODY)


@pytest.mark.parametrize("text,reason", [
    ("whsec_" + base64.b64encode(b"x" * 32).decode(), "starts with 'whsk_'"),
    ("whsk_not base64!", "not base64"),
    ("whsk_" + base64.b64encode(b"x" * 64).decode(), "holds 64 bytes"),
])
def test_a_wrong_signing_key_says_what_is_wrong(text, reason):
    with pytest.raises(ValueError, match=reason):
        read_secret_key(text)


def test_the_receivers_check_in_the_docs_verifies_a_delivery_as_written():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", docs, re.S)
    key = read_secret_key(new_secret_key())
    scope: dict = {}
    exec(code.replace('"whpk_…"', repr(public_key_text(key))), scope)  # noqa: S102 - the documented snippet
    headers = signature_headers(key, "uid-1", int(time.time()), BODY)
    assert scope["verify"](headers, BODY)
    assert not scope["verify"](headers, BODY + b" ")
    assert not scope["verify"]({**headers, "webhook-timestamp": str(int(time.time()) - 3600)}, BODY)
