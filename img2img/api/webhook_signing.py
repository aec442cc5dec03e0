"""How the operator signs webhooks: the Standard Webhooks specification's asymmetric scheme (ed25519, ``v1a``).

Each delivery carries ``webhook-id`` (the same on every attempt of one delivery: the receiver's idempotency key),
``webhook-timestamp`` (the attempt's Unix time in seconds) and ``webhook-signature``: ``v1a,`` + the base64 ed25519
signature of ``{webhook-id}.{webhook-timestamp}.{body}``, the body exactly as sent.

Keys are serialized as the specification says: ``whsk_`` + base64 of the 32-byte private key (in a Secret of the
operator's namespace, which the operator creates when missing), ``whpk_`` + base64 of the 32-byte public key (which
the operator publishes in a ConfigMap beside it; the gateway serves it). Receivers need only the public key: nothing
of ours lives in the tenants' namespaces. docs/webhooks.md shows a receiver's check.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

SECRET_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"
SIGNATURE_VERSION = "v1a"
SECRET_ENTRY = "signingKey"  # the Secret's data key holding the whsk_ text
PUBLIC_ENTRY = "publicKey"  # the ConfigMap's data key holding the whpk_ text
SIGNING_KEY_SECRET = "img2img-webhook-signing-key"
PUBLIC_KEY_CONFIG_MAP = "img2img-webhook-public-key"


def new_secret_key() -> str:
    """A fresh private key as the Secret holds it."""
    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return SECRET_PREFIX + base64.b64encode(raw).decode()


def read_secret_key(text: str) -> Ed25519PrivateKey:
    """A ``whsk_`` key; ValueError saying what is wrong with it."""
    text = text.strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook signing key starts with {SECRET_PREFIX!r} (Standard Webhooks' ed25519 key)")
    try:
        raw = base64.b64decode(text[len(SECRET_PREFIX):], validate=True)
    except binascii.Error:
        raise ValueError("the webhook signing key is not base64 after its prefix") from None
    if len(raw) != 32:
        raise ValueError(f"the webhook signing key holds {len(raw)} bytes; an ed25519 private key is 32")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The ``whpk_`` text receivers verify with."""
    return PUBLIC_PREFIX + base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def signature_headers(key: Ed25519PrivateKey, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    if "." in webhook_id:
        raise ValueError("a webhook id must not contain '.': it delimits the signed content")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(key.sign(signed)).decode()
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": f"{SIGNATURE_VERSION},{signature}"}
