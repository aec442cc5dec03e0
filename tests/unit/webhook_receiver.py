"""A webhook receiver for tests: a plain http.server on 127.0.0.1 answering a script of statuses, and a check of the
Standard Webhooks ``v1a`` signature written from the specification, independent of the operator's signing code
(what docs/webhooks.md tells a receiver to do)."""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def verify(headers: dict[str, str], body: bytes, public_key: str, now: float | None = None,
           tolerance: int = 300) -> bool:
    """Standard Webhooks, asymmetric: any ``v1a,<base64 ed25519 signature>`` in ``webhook-signature`` over
    ``{webhook-id}.{webhook-timestamp}.{body}`` verifies with the ``whpk_`` key, and the timestamp is recent."""
    assert public_key.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len("whpk_"):]))
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        return False
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), signed)
            return True
        except InvalidSignature:
            pass
    return False


@dataclass
class Delivery:
    headers: dict[str, str]  # lower-case names
    body: bytes
    answered: int


@dataclass
class Receiver:
    """Answers each POST with the next status of ``script`` (the last one from then on)."""

    script: list[int] = field(default_factory=lambda: [200])
    received: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.script[min(len(receiver.received), len(receiver.script) - 1)]
                receiver.received.append(Delivery({k.lower(): v for k, v in self.headers.items()}, data, status))
                self.send_response(status)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"nope" if status >= 300 else b"okay")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
