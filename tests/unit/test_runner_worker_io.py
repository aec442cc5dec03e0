"""A pool runner's edges without models: its environment, and plain HTTP to presigned URLs (a local server)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from img2img_runner.errors import StorageError
from img2img_runner.presigned import Refused, get, put
from img2img_runner.worker import Settings, StartError

ENV = {"IMG2IMG_OPERATOR_URL": "http://127.0.0.1:8081", "IMG2IMG_RUNNER_TOKEN": "pool-a-x1y2z.abc",
       "IMG2IMG_RUNNER_NAME": "pool-a-x1y2z", "IMG2IMG_POOL": "pool-a",
       "IMG2IMG_POOL_MODELS": '["sd_xl_base_1.0", "sd_xl_refiner_1.0"]', "IMG2IMG_CATALOG": "/etc/img2img/catalog.yaml"}


def test_settings_from_the_pods_environment():
    settings = Settings.from_env(ENV)
    assert settings.models == ("sd_xl_base_1.0", "sd_xl_refiner_1.0")
    assert (settings.runner, settings.token, settings.operator_url) == ("pool-a-x1y2z", "pool-a-x1y2z.abc",
                                                                         "http://127.0.0.1:8081")
    assert Settings.from_env({**ENV, "IMG2IMG_POOL_MODELS": ""}).models == ()  # an implicit pool loads nothing


def test_settings_name_what_is_missing_or_wrong():
    env = {k: v for k, v in ENV.items() if k not in ("IMG2IMG_RUNNER_TOKEN", "IMG2IMG_CATALOG")}
    with pytest.raises(StartError, match="IMG2IMG_RUNNER_TOKEN, IMG2IMG_CATALOG"):
        Settings.from_env(env)
    for bad in ('"sd_xl_base_1.0"', "[1]", '[""]', "[sd_xl_base_1.0]"):
        with pytest.raises(StartError, match="IMG2IMG_POOL_MODELS must be a JSON list of catalog names"):
            Settings.from_env({**ENV, "IMG2IMG_POOL_MODELS": bad})


class Server:
    """Answers each request with the next of ``answers`` ((status, body)); records what it received."""

    def __init__(self, answers: list[tuple[int, bytes]]):
        self.answers = list(answers)
        self.received: list[tuple[str, str, bytes, str]] = []  # method, path, body, content type
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append((self.command, self.path, body, self.headers.get("Content-Type", "")))
                status, data = outer.answers.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/bucket/key?X-Amz-Signature=secret"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    made = []

    def make(*answers):
        made.append(Server(list(answers)))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_transient_answers_are_retried(server):
    s = server((503, b"slow down"), (200, b"the object"))
    assert get(s.url, "reading s3://bucket/key") == b"the object"
    s = server((500, b""), (200, b""))
    put(s.url, b"\x89PNG", "uploading s3://bucket/images/0.png", content_type="image/png")
    assert [(m, body, ct) for m, _, body, ct in s.received] == [("PUT", b"\x89PNG", "image/png")] * 2


def test_a_refusal_is_final_and_names_the_object_not_the_url(server):
    s = server((403, b"<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>"))
    with pytest.raises(Refused) as refused:
        get(s.url, "reading s3://bucket/key")
    assert refused.value.status == 403 and len(s.received) == 1
    assert str(refused.value) == "reading s3://bucket/key: HTTP 403 SignatureDoesNotMatch"


def test_no_connection_after_the_retries_is_a_storage_failure(server, monkeypatch):
    monkeypatch.setenv("IMG2IMG_S3_ATTEMPTS", "2")
    s = server()
    url = s.url
    s.close()
    with pytest.raises(StorageError, match=r"uploading s3://bucket/result.json: .* \(after 2 attempts\)") as failed:
        put(url, b"{}", "uploading s3://bucket/result.json", content_type="application/json")
    assert "secret" not in str(failed.value)


def test_a_size_limit_reads_one_byte_more_and_no_further(server):
    s = server((200, b"x" * 100))
    assert get(s.url, "reading s3://bucket/key", limit=10) == b"x" * 11
