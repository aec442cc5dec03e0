"""Image fields -> PIL images: inline base64 / data URI, or a reference fetched safely.

References are checked *before any request is sent*:

- ``https://host/…``: only https; the host must be on ``IMG2IMG_ALLOWED_HOSTS`` (a JSON list; empty or unset = any
  public host; an entry ``.example.com`` allows its subdomains). The name is resolved first and *every* address
  must be public: loopback, private (RFC 1918, ULA), link-local (169.254.0.0/16, where cloud metadata lives),
  shared (100.64.0.0/10), multicast, reserved and unspecified addresses are refused, as are IPv4-mapped forms of
  them. The connection then goes to the address that was checked (no second lookup a DNS rebind could change),
  with TLS verified against the host name. Redirects are not followed blindly: each ``Location`` goes through the
  same checks (at most 3). The body is capped (``IMG2IMG_MAX_IMAGE_BYTES``, default 20 MB), and the whole fetch
  (redirects, retries, connections, TLS handshakes, every read) ends by one deadline, ``IMG2IMG_FETCH_TIMEOUT``
  seconds (default 20) after it began: a server that answers a byte at a time cannot hold the runner past it.
  ``IMG2IMG_ALLOW_PRIVATE_HOSTS=1`` lifts the address rule (for a cluster-internal image server).
- ``s3://bucket/key``: only under an entry of ``IMG2IMG_ALLOWED_S3`` (a JSON list of ``s3://bucket/prefix``;
  unset = none), keys with ``.``/``..``/empty segments refused; read with the runner's S3 credentials, same cap.
  A pool's runner has no such credentials: its assignment maps each ``s3://`` reference the job may read to a
  presigned GET (``presigned``), made by the operator for our S3 endpoint, which is fetched as it is (the address
  rule above is for users' URLs); a reference missing from the map is one the job may not read.

Failures: a reference the job may not use, a 4xx, or data that is not an image (or not one the input budget
accepts: ``img2img.api.images.decode_image``) -> BadInput (never retried); a 5xx, a connection failure after
retries, or no answer by the deadline -> StorageError (the job is retried).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping
from urllib.parse import urljoin, urlsplit

from PIL import Image

from img2img.api.addresses import address_refusal
from img2img.api.images import (ImageError, decode_image, decode_inline, parse_reference, plain_key, s3_allowed,
                                S3Ref, HttpsRef)
from img2img_runner.errors import BadInput, StorageError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_TIMEOUT = 20.0
MAX_REDIRECTS = 3
RETRIES = 3

Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: tuple[str, ...] = ()  # empty = any public host
    allowed_s3: tuple[str, ...] = ()  # s3://bucket/prefix entries; empty = no S3 reads
    allow_private: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT  # seconds one https fetch may take, all of it
    resolver: Resolver = field(default=system_resolver, compare=False)
    ca_file: str | None = None  # extra CA bundle (a private image server's CA)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "FetchPolicy":
        env = os.environ if env is None else env
        return cls(
            allowed_hosts=tuple(_json_list(env, "IMG2IMG_ALLOWED_HOSTS")),
            allowed_s3=tuple(_json_list(env, "IMG2IMG_ALLOWED_S3")),
            allow_private=env.get("IMG2IMG_ALLOW_PRIVATE_HOSTS", "") in ("1", "true", "True", "yes"),
            max_bytes=int(env.get("IMG2IMG_MAX_IMAGE_BYTES") or DEFAULT_MAX_BYTES),
            timeout=float(env.get("IMG2IMG_FETCH_TIMEOUT") or DEFAULT_TIMEOUT),
            ca_file=env.get("IMG2IMG_CA_BUNDLE") or None,
        )


def _json_list(env: dict[str, str], key: str) -> list[str]:
    raw = env.get(key, "").strip()
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        value = [part.strip() for part in raw.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a JSON list of strings")
    return [v for v in value if v]


# --- decisions (pure) --------------------------------------------------------------------------------------


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    allowed = [a.lower().rstrip(".") for a in allowed]
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    return any(host == a or (a.startswith(".") and host.endswith(a)) for a in allowed)


def check_s3(ref: S3Ref, policy: FetchPolicy, field_: str) -> None:
    if not plain_key(ref.key):
        raise BadInput(f"{ref}: key segments may not be empty, '.' or '..'", field_)
    if not s3_allowed(ref, policy.allowed_s3):
        allowed = ", ".join(policy.allowed_s3) or "none (IMG2IMG_ALLOWED_S3 is empty)"
        raise BadInput(f"{ref}: this job may not read from that bucket/prefix; allowed: {allowed}", field_)


def check_https(url: str, policy: FetchPolicy, field_: str) -> tuple[str, int, list[str]]:
    """(host, port, addresses to connect to) for an https URL the job may fetch; BadInput otherwise.

    Resolves the name (one lookup) and checks every address; nothing is sent anywhere.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise BadInput(f"{_short(url)}: only https:// URLs are fetched", field_)
    host = parts.hostname
    if not host:
        raise BadInput(f"{_short(url)}: no host", field_)
    if parts.username or parts.password:
        raise BadInput(f"{_short(url)}: credentials in the URL are not accepted", field_)
    try:
        port = parts.port or 443
    except ValueError:
        raise BadInput(f"{_short(url)}: bad port", field_) from None
    if not host_allowed(host, policy.allowed_hosts):
        raise BadInput(f"{_short(url)}: host {host!r} is not on the allowed list ({', '.join(policy.allowed_hosts)})",
                       field_)
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = policy.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise BadInput(f"{_short(url)}: cannot resolve {host!r} ({exc})", field_) from None
    if not addresses:
        raise BadInput(f"{_short(url)}: {host!r} has no address", field_)
    if not policy.allow_private:
        for address in addresses:
            why = address_refusal(address)
            if why is not None:
                raise BadInput(f"{_short(url)}: {host!r} resolves to {address}, {why}; refused", field_)
    return host, port, addresses


# --- I/O ---------------------------------------------------------------------------------------------------


def load_image(value: str, field_: str, policy: FetchPolicy | None = None, *, s3_client=None,
               presigned: Mapping[str, str] | None = None) -> Image.Image:
    """The image a payload field names (inline or a reference), decoded and fully loaded. ``presigned``: ``s3://``
    reference -> presigned GET; when given, ``s3://`` references are read through it only."""
    policy = policy or FetchPolicy.from_env()
    try:
        ref = parse_reference(value)
        if ref is None:
            return decode_inline(value)
    except ImageError as exc:
        raise BadInput(str(exc), field_) from None
    if isinstance(ref, S3Ref) and presigned is not None:
        data = _get_presigned(ref, presigned, policy, field_)
    elif isinstance(ref, S3Ref):
        check_s3(ref, policy, field_)
        data = _get_s3(ref, policy, field_, s3_client)
    else:
        assert isinstance(ref, HttpsRef)
        data = fetch_https(ref.url, policy, field_)
    try:
        return decode_image(data)
    except ImageError as exc:
        raise BadInput(f"{ref}: {exc}", field_) from None


def _remaining(deadline: float) -> float:
    """Seconds left before ``deadline`` (time.monotonic()); TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch's deadline passed")
    return left


class _DeadlineSocket(ssl.SSLSocket):
    """A TLS socket whose every wait ends by one ``deadline``: a socket timeout bounds one wait only, and a server
    that sends a byte now and then would renew it forever."""

    deadline = float("inf")

    def recv_into(self, buffer, nbytes=None, flags=0):  # type: ignore[override]
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data, flags=0):  # type: ignore[override]
        self.settimeout(_remaining(self.deadline))
        return super().sendall(data, flags)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address: TCP to ``address``, TLS (SNI, certificate) for ``host``; connecting, the
    handshake and every read and write end by ``deadline``."""

    def __init__(self, host: str, port: int, address: str, deadline: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=_remaining(deadline), context=context)
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), _remaining(self._deadline))
        sock.settimeout(_remaining(self._deadline))  # bounds the TLS handshake as a whole
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.sock.deadline = self._deadline


def fetch_https(url: str, policy: FetchPolicy, field_: str) -> bytes:
    deadline = time.monotonic() + policy.timeout
    context = ssl.create_default_context(cafile=policy.ca_file) if policy.ca_file else ssl.create_default_context()
    context.sslsocket_class = _DeadlineSocket
    for _ in range(MAX_REDIRECTS + 1):
        host, port, addresses = check_https(url, policy, field_)
        status, headers, body = _with_retries(
            lambda: _get_once(url, host, port, addresses, policy, context, deadline), url, field_, deadline,
            policy.timeout)
        if status in (301, 302, 303, 307, 308):
            location = headers.get("location")
            if not location:
                raise BadInput(f"{_short(url)}: redirect without a Location", field_)
            url = urljoin(url, location)
            continue
        if 400 <= status < 500:
            raise BadInput(f"{_short(url)}: HTTP {status}", field_)
        if status != 200:
            raise StorageError(f"{_short(url)}: HTTP {status}", field_)
        return body
    raise BadInput(f"{_short(url)}: more than {MAX_REDIRECTS} redirects", field_)


class _Retry(Exception):
    pass


def _get_once(url: str, host: str, port: int, addresses: list[str], policy: FetchPolicy,
              context: ssl.SSLContext, deadline: float) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last: Exception | None = None
    for address in addresses:
        try:
            conn = _PinnedHTTPSConnection(host, port, address, deadline, context)
        except TimeoutError as exc:
            raise _Retry(str(exc)) from None
        try:
            conn.request("GET", path, headers={"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": "img2img-runner",
                                                "Accept": "image/*"})
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status >= 500:
                raise _Retry(f"HTTP {resp.status}")
            if resp.status != 200:
                return resp.status, headers, b""
            length = headers.get("content-length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise BadInput(f"{_short(url)}: {length} bytes is more than the {policy.max_bytes} allowed", None)
            chunks, size = [], 0
            while True:
                chunk = resp.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > policy.max_bytes:
                    raise BadInput(f"{_short(url)}: more than the {policy.max_bytes} bytes allowed", None)
                chunks.append(chunk)
            return 200, headers, b"".join(chunks)
        except ssl.SSLCertVerificationError as exc:
            raise BadInput(f"{_short(url)}: TLS certificate not trusted ({exc.verify_message})", None) from None
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        finally:
            conn.close()
    raise _Retry(str(last))


def _with_retries(call: Callable[[], tuple[int, dict[str, str], bytes]], url: str, field_: str, deadline: float,
                  timeout: float):
    delay = 0.5
    for attempt in range(RETRIES):
        try:
            return call()
        except BadInput as exc:
            raise BadInput(str(exc), field_) from None
        except _Retry as exc:
            if time.monotonic() + delay >= deadline:
                raise StorageError(f"{_short(url)}: no complete answer within {timeout:g} s ({exc})", field_) \
                    from None
            if attempt == RETRIES - 1:
                raise StorageError(f"{_short(url)}: {exc} (after {RETRIES} attempts)", field_) from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _get_s3(ref: S3Ref, policy: FetchPolicy, field_: str, client=None) -> bytes:
    """The object, size-capped; transient S3 failures retried like every other S3 call, then a storage failure."""
    import botocore.exceptions

    from img2img_runner.storage import s3_client, transient, with_retries

    client = client or s3_client()

    def read() -> bytes:
        try:
            head = client.head_object(Bucket=ref.bucket, Key=ref.key)
            if head.get("ContentLength", 0) > policy.max_bytes:
                raise BadInput(f"{ref}: {head['ContentLength']} bytes is more than the {policy.max_bytes} allowed",
                               field_)
            data = client.get_object(Bucket=ref.bucket, Key=ref.key)["Body"].read(policy.max_bytes + 1)
        except botocore.exceptions.ClientError as exc:
            if transient(exc):
                raise
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = exc.response.get("Error", {}).get("Code", "")
            raise BadInput(f"{ref}: {code or status}" + (" (no such object)" if status == 404 else ""),
                           field_) from None
        if len(data) > policy.max_bytes:
            raise BadInput(f"{ref}: more than the {policy.max_bytes} bytes allowed", field_)
        return data

    try:
        return with_retries(f"reading {ref}", read)
    except StorageError as exc:
        raise StorageError(str(exc), field_) from None


def _get_presigned(ref: S3Ref, presigned: Mapping[str, str], policy: FetchPolicy, field_: str) -> bytes:
    from img2img_runner.presigned import Refused, get

    url = presigned.get(str(ref))
    if url is None:
        raise BadInput(f"{ref}: this job may not read that object (the operator granted no read of it)", field_)
    try:
        data = get(url, f"reading {ref}", limit=policy.max_bytes, timeout=policy.timeout)
    except Refused as exc:  # as a refused S3 read: the object is missing or not readable
        raise BadInput(str(exc) + (" (no such object)" if exc.status == 404 else ""), field_) from None
    except StorageError as exc:
        raise StorageError(str(exc), field_) from None
    if len(data) > policy.max_bytes:
        raise BadInput(f"{ref}: more than the {policy.max_bytes} bytes allowed", field_)
    return data


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
