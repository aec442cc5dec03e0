"""Image references are fetched safely: refusals happen before any request is sent.

The https tests run a real TLS server on loopback (certificates from the local stack's CA helper); loopback is
refused by default, so those tests opt in with ``allow_private`` exactly as a cluster-internal image server would.
"""

from __future__ import annotations

import base64
import http.server
import io
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from img2img.local.certs import make_certs
from img2img_runner.errors import BadInput, StorageError
from img2img_runner.fetch import FetchPolicy, address_refusal, check_https, load_image

FIELD = "init_images[0]"


def png() -> bytes:
    return encoded(Image.new("RGB", (16, 16), "red"), "PNG")


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


class Listener:
    """A TCP port on loopback that records whether anyone connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.3)
        self.port = self.sock.getsockname()[1]

    def connected(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except (socket.timeout, TimeoutError):
            return False
        conn.close()
        return True

    def close(self):
        self.sock.close()


@pytest.fixture
def listener():
    item = Listener()
    yield item
    item.close()


@pytest.fixture
def no_connections(monkeypatch):
    """A tripwire: any outgoing TCP connection fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.mark.parametrize("url, reason", [
    ("https://169.254.169.254/latest/meta-data/iam", "link-local"),  # cloud metadata
    ("https://[fd00:ec2::254]/latest/meta-data", "private"),  # AWS metadata over IPv6
    ("https://10.1.2.3/image.png", "private"),
    ("https://192.168.0.10/image.png", "private"),
    ("https://172.16.5.5/image.png", "private"),
    ("https://100.100.100.200/latest/meta-data", "non-public"),  # Alibaba metadata (shared address space)
    ("https://[::1]/image.png", "loopback"),
    ("https://[::ffff:127.0.0.1]/image.png", "loopback"),
    ("https://0.0.0.0/image.png", "unspecified"),
    # IPv4 inside IPv6: the IPv4 address decides (a translator or relay would take the connection there)
    ("https://[2002:a9fe:a9fe::1]/latest/meta-data", "169.254.169.254 in 6to4 form, a link-local"),
    ("https://[64:ff9b::a9fe:a9fe]/latest/meta-data", "169.254.169.254 in NAT64 form, a link-local"),
    ("https://[64:ff9b::a00:1]/image.png", "10.0.0.1 in NAT64 form, a private"),
    ("https://[::ffff:a9fe:a9fe]/latest/meta-data", "169.254.169.254 in IPv4-mapped form"),
    ("https://[::a9fe:a9fe]/latest/meta-data", "169.254.169.254 in IPv4-compatible form"),
    ("https://[2001:0:4136:e378:8000:63bf:5601:5601]/x", "169.254.169.254 in Teredo form"),
    ("https://[fec0::1]/image.png", "site-local"),
    ("https://168.63.129.16/machine?comp=goalstate", "Azure's wire server"),  # public, yet the cloud's own
])
def test_non_public_addresses_are_refused_before_any_connection(url, reason, no_connections):
    with pytest.raises(BadInput) as exc:
        load_image(url, FIELD, FetchPolicy())
    assert reason in str(exc.value)
    assert exc.value.path == f"input.payload.{FIELD}"
    assert no_connections == []


def test_loopback_is_refused_and_the_port_sees_no_connection(listener):
    with pytest.raises(BadInput, match="loopback"):
        load_image(f"https://127.0.0.1:{listener.port}/x.png", FIELD, FetchPolicy())
    assert not listener.connected()


def test_a_name_resolving_to_a_private_address_is_refused_and_nothing_is_sent(listener):
    policy = FetchPolicy(resolver=lambda host, port: ["93.184.216.34", "127.0.0.1"])  # one public, one not
    with pytest.raises(BadInput, match="resolves to 127.0.0.1"):
        load_image(f"https://images.example.com:{listener.port}/x.png", FIELD, policy)
    assert not listener.connected()
    policy = FetchPolicy(resolver=lambda host, port: ["2002:a9fe:a9fe::1"])  # metadata, in 6to4 form
    with pytest.raises(BadInput, match="resolves to 2002:a9fe:a9fe::1, 169.254.169.254 in 6to4 form"):
        load_image(f"https://images.example.com:{listener.port}/x.png", FIELD, policy)


def test_localhost_by_name_is_refused(listener):
    with pytest.raises(BadInput, match="loopback"):
        load_image(f"https://localhost:{listener.port}/x.png", FIELD, FetchPolicy())
    assert not listener.connected()


def test_only_https(no_connections):
    with pytest.raises(BadInput, match="https"):
        load_image("http://example.com/x.png", FIELD, FetchPolicy())
    with pytest.raises(BadInput):
        check_https("ftp://example.com/x.png", FetchPolicy(), FIELD)


def test_host_allowlist(no_connections):
    policy = FetchPolicy(allowed_hosts=("images.example.com", ".cdn.example.org"),
                         resolver=lambda host, port: ["93.184.216.34"])
    with pytest.raises(BadInput, match="not on the allowed list"):
        load_image("https://evil.example.net/x.png", FIELD, policy)
    assert check_https("https://a.cdn.example.org/x.png", policy, FIELD)[2] == ["93.184.216.34"]
    assert check_https("https://images.example.com/x.png", policy, FIELD)[0] == "images.example.com"


def test_public_addresses_pass():
    assert address_refusal("93.184.216.34") is None
    assert address_refusal("2606:2800:220:1:248:1893:25c8:1946") is None
    # a public IPv4 address in NAT64 form: how an IPv6-only cluster reaches an IPv4-only server; and in 6to4 form
    assert address_refusal("64:ff9b::5db8:d822") is None
    assert address_refusal("2002:5db8:d822::1") is None


@pytest.mark.parametrize("uri, allowed, ok", [
    ("s3://img2img/uploads/ns/a.png", ("s3://img2img/uploads/ns",), True),
    ("s3://img2img/uploads/ns/a.png", ("s3://img2img/uploads/ns/",), True),
    ("s3://img2img/uploads/nsx/a.png", ("s3://img2img/uploads/ns",), False),  # a prefix ends at a /
    ("s3://other/uploads/ns/a.png", ("s3://img2img/uploads/ns",), False),
    ("s3://img2img/jobs/ns/a.png", ("s3://img2img/uploads/ns",), False),
    ("s3://img2img/anything.png", ("s3://img2img",), True),
    ("s3://img2img/uploads/ns/a.png", (), False),  # nothing allowed by default
])
def test_s3_buckets_and_prefixes(uri, allowed, ok, no_connections):
    from img2img.api.images import parse_reference
    from img2img_runner.fetch import check_s3

    ref = parse_reference(uri)
    if ok:
        check_s3(ref, FetchPolicy(allowed_s3=allowed), FIELD)
    else:
        with pytest.raises(BadInput, match="may not read"):
            load_image(uri, FIELD, FetchPolicy(allowed_s3=allowed))


def test_s3_key_with_dot_segments_is_refused(no_connections):
    with pytest.raises(BadInput, match=r"'\.\.'"):
        load_image("s3://img2img/uploads/ns/../../jobs/x/result.json", FIELD,
                   FetchPolicy(allowed_s3=("s3://img2img/uploads/ns",)))


def test_an_unreachable_s3_is_retried_then_a_storage_error_naming_the_field(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("IMG2IMG_S3_ATTEMPTS", "2")
    with pytest.raises(StorageError, match="after 2 attempts") as caught:
        load_image("s3://img2img/uploads/ns/a.png", FIELD, FetchPolicy(allowed_s3=("s3://img2img/uploads/ns/",)))
    assert caught.value.field == FIELD and "s3://img2img/uploads/ns/a.png" in str(caught.value)


def test_policy_from_environment():
    policy = FetchPolicy.from_env({"IMG2IMG_ALLOWED_HOSTS": '["images.example.com"]',
                                   "IMG2IMG_ALLOWED_S3": '["s3://img2img/uploads/ns"]',
                                   "IMG2IMG_MAX_IMAGE_BYTES": "1000"})
    assert policy.allowed_hosts == ("images.example.com",)
    assert policy.allowed_s3 == ("s3://img2img/uploads/ns",)
    assert policy.max_bytes == 1000 and not policy.allow_private


def test_inline_images_decode_and_bad_ones_name_the_field():
    image = load_image(base64.b64encode(png()).decode(), FIELD, FetchPolicy())
    assert image.size == (16, 16)
    image = load_image("data:image/png;base64," + base64.b64encode(png()).decode(), FIELD, FetchPolicy())
    assert image.size == (16, 16)
    with pytest.raises(BadInput) as exc:
        load_image(base64.b64encode(b"not an image").decode(), FIELD, FetchPolicy())
    assert exc.value.path == f"input.payload.{FIELD}"


# --- a real TLS server --------------------------------------------------------------------------------------


def serve_tls(handler, certs) -> tuple[http.server.ThreadingHTTPServer, int]:
    """``handler`` served over TLS with the test certificate on a free loopback port, in a thread."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.serving.cert, certs.serving.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


class Server:
    def __init__(self, certs, routes):
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                status, headers, body = routes[self.path](outer.port)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd, self.port = serve_tls(Handler, certs)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(Path(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def server(certs):
    routes = {
        "/image.png": lambda port: (200, {"Content-Type": "image/png"}, png()),
        "/to-ip": lambda port: (302, {"Location": f"https://127.0.0.1:{port}/image.png"}, b""),
        "/to-metadata": lambda port: (302, {"Location": "https://169.254.169.254/latest/meta-data"}, b""),
        "/missing.png": lambda port: (404, {}, b"no"),
        "/broken.png": lambda port: (503, {}, b"busy"),
        "/big.png": lambda port: (200, {"Content-Type": "image/png"}, png() + b"\0" * 5000),
        "/image.tiff": lambda port: (200, {"Content-Type": "image/tiff"}, encoded(Image.new("RGB", (16, 16)), "TIFF")),
        "/tall.png": lambda port: (200, {"Content-Type": "image/png"}, encoded(Image.new("L", (64, 262144)), "PNG")),
    }
    s = Server(certs, routes)
    yield s
    s.close()


def private_policy(certs, **kwargs) -> FetchPolicy:
    return FetchPolicy(**{"allow_private": True, "ca_file": str(certs.ca.cert), "timeout": 5, **kwargs})


def test_https_fetch_with_a_verified_certificate(server, certs):
    image = load_image(f"https://localhost:{server.port}/image.png", FIELD, private_policy(certs))
    assert image.size == (16, 16)
    assert server.requests == ["/image.png"]


def test_an_untrusted_certificate_is_refused(server):
    with pytest.raises(BadInput, match="certificate"):
        load_image(f"https://localhost:{server.port}/image.png", FIELD, FetchPolicy(allow_private=True, timeout=5))


def test_redirects_are_checked_like_the_first_url(server, certs):
    policy = private_policy(certs, allowed_hosts=("localhost",))
    with pytest.raises(BadInput, match="not on the allowed list"):
        load_image(f"https://localhost:{server.port}/to-ip", FIELD, policy)
    assert server.requests == ["/to-ip"]  # the redirect target was never requested
    strict = FetchPolicy(ca_file=str(certs.ca.cert), resolver=lambda host, port: ["127.0.0.1"])
    with pytest.raises(BadInput):
        load_image(f"https://localhost:{server.port}/to-metadata", FIELD, strict)  # refused at the first hop


def test_redirect_to_metadata_is_refused(server, certs, monkeypatch):
    # the first hop is allowed (a private image server), the redirect points at the metadata service
    policy = private_policy(certs)
    import img2img_runner.fetch as fetch

    real = fetch.check_https

    def strict_after_first(url, pol, field):
        if "169.254" in url:
            return real(url, FetchPolicy(), field)
        return real(url, pol, field)

    monkeypatch.setattr(fetch, "check_https", strict_after_first)
    with pytest.raises(BadInput, match="link-local"):
        load_image(f"https://localhost:{server.port}/to-metadata", FIELD, policy)


def test_size_cap(server, certs):
    with pytest.raises(BadInput, match="more than"):
        load_image(f"https://localhost:{server.port}/big.png", FIELD, private_policy(certs, max_bytes=1000))


def test_4xx_is_bad_input_and_5xx_is_retried_then_a_storage_error(server, certs):
    with pytest.raises(BadInput, match="404"):
        load_image(f"https://localhost:{server.port}/missing.png", FIELD, private_policy(certs))
    with pytest.raises(StorageError, match="503"):
        load_image(f"https://localhost:{server.port}/broken.png", FIELD, private_policy(certs))
    assert server.requests.count("/broken.png") == 3


@pytest.mark.parametrize("path, reason", [("/image.tiff", "TIFF images are not accepted"),
                                          ("/tall.png", "aspect ratio of 4096:1")])
def test_a_fetched_image_outside_the_input_budget_is_bad_input_naming_the_field(server, certs, path, reason):
    with pytest.raises(BadInput, match=reason) as caught:
        load_image(f"https://localhost:{server.port}{path}", FIELD, private_policy(certs))
    assert caught.value.path == f"input.payload.{FIELD}"


class DrippingServer:
    """A TLS server that answers a byte a second: its status line and headers (``/headers``), or a body
    (``/body``); each byte comes well within any read timeout."""

    def __init__(self, certs):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                answer = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 64\r\n\r\n"
                if self.path == "/body":
                    self.wfile.write(answer)
                    answer = b"\x89PNG" + b"\0" * 60
                try:
                    for i in range(len(answer)):
                        self.wfile.write(answer[i:i + 1])
                        self.wfile.flush()
                        time.sleep(1)
                except OSError:  # the client gave up
                    pass

            def log_message(self, *args):
                pass

        self.httpd, self.port = serve_tls(Handler, certs)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("path", ["/headers", "/body"])
def test_a_server_dripping_a_byte_a_second_is_cut_off_at_the_fetch_deadline(certs, path):
    dripping = DrippingServer(certs)
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match="no complete answer within 2 s") as caught:
            load_image(f"https://localhost:{dripping.port}{path}", FIELD, private_policy(certs, timeout=2))
        assert time.monotonic() - started < 3.5  # each read came within the timeout: only a deadline stops it
        assert caught.value.path == f"input.payload.{FIELD}"
    finally:
        dripping.close()
