"""A stand-in for the operator's runner endpoint, for testing the runner (``img2img-runner serve``) on its own.

Why a stand-in: the operator's side of warm pools (its runner endpoint, leases, presigning) is being written at the
same time as the runner, by another change. This fake speaks the protocol's messages (``img2img.api.protocol``:
take / heartbeat / done, bearer tokens signed with ``runner_token``) and records what the runner sent, so the
runner's behaviour can be checked against the contract. Tests of the two together belong to the operator's change.

It also serves presigned-style object URLs (``GET``/``PUT /objects/<key>?X-Amz-Signature=…``) from memory, for the
model tests (``submit``); the stack test queues assignments whose URLs MinIO signed (``queue``).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

from img2img.api.protocol import (DONE, HEARTBEAT, TAKE, Assignment, Done, Heartbeat, JobRef, Outputs, TakeRequest,
                                  runner_token, token_runner)

KEY = b"fake-operator-key"


def token(runner: str) -> str:
    return runner_token(KEY, runner)


@dataclass
class Reply:
    """What the fake answered to one heartbeat."""

    beat: Heartbeat
    stop: str | None


@dataclass
class FakeOperator:
    port: int = 0  # 0: any free port
    heartbeat_seconds: float = 0.05
    done_status: int = 200  # 409: refuse every outcome (a lease that is no longer current)
    next_in_done: bool = False  # answer a done that carries models with the next queued assignment, if any
    stop_when: Callable[[Heartbeat], str | None] = lambda beat: None  # the heartbeat answer's ``stop``
    pending: queue.Queue = field(default_factory=queue.Queue)  # assignments to hand out, in order
    objects: dict[str, bytes] = field(default_factory=dict)  # key -> bytes (the presigned-style URLs)
    content_types: dict[str, str] = field(default_factory=dict)
    takes: list[TakeRequest] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    dones: list[Done] = field(default_factory=list)
    handed_in_done: list[str] = field(default_factory=list)  # leases handed out with the answer to a done
    authorizations: set[str] = field(default_factory=set)  # Authorization headers seen

    def __post_init__(self) -> None:
        self._done = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what a test does ------------------------------------------------------------------------------------

    def object_url(self, key: str) -> str:
        return f"{self.url}/objects/{key}?X-Amz-Signature={uuid.uuid4().hex}"

    def submit(self, job_input: dict, *, images: dict[str, str] | None = None, outputs: int = 4,
               name: str = "job") -> Assignment:
        """Stage a job as the operator does and queue its assignment (the lease id is the operator's form)."""
        uid = str(uuid.uuid4())
        base = f"jobs/ns/{name}/{uid}"
        self.objects[f"{base}/input.json"] = json.dumps({"namespace": "ns", "name": name, "uid": uid,
                                                         "input": job_input}).encode()
        return self.queue(Assignment(
            lease=f"{uid}.1.{uuid.uuid4().hex[:8]}", job=JobRef(namespace="ns", name=name, uid=uid, attempt=1),
            inputUrl=self.object_url(f"{base}/input.json"), images=images or {},
            outputs=Outputs(imageUris=[f"s3://bucket/{base}/attempt-1/images/{i}.png" for i in range(outputs)],
                            imageUrls=[self.object_url(f"{base}/attempt-1/images/{i}.png") for i in range(outputs)],
                            resultUri=f"s3://bucket/{base}/attempt-1/result.json",
                            resultUrl=self.object_url(f"{base}/attempt-1/result.json")),
            submittedAt=int(time.time() * 1000), leaseSeconds=15, heartbeatSeconds=self.heartbeat_seconds))

    def queue(self, assignment: Assignment) -> Assignment:
        self.pending.put(assignment)
        return assignment

    def outcome(self, assignment: Assignment, timeout: float = 120) -> dict:
        """The outcome the runner reported for ``assignment`` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._done:
            while True:
                found = [d for d in self.dones if d.lease == assignment.lease]
                if found:
                    return found[-1].outcome
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no outcome for lease {assignment.lease} after {timeout} s")
                self._done.wait(left)

    @staticmethod
    def key(url: str) -> str:
        return urlsplit(url).path.removeprefix("/objects/")

    def image(self, assignment: Assignment, n: int) -> bytes:
        return self.objects[self.key(assignment.outputs.imageUrls[n])]

    def result(self, assignment: Assignment) -> dict:
        return json.loads(self.objects[self.key(assignment.outputs.resultUrl)])

    def beats(self, assignment: Assignment) -> list[Heartbeat]:
        return [r.beat for r in self.replies if r.beat.lease == assignment.lease]

    # --- the endpoint ----------------------------------------------------------------------------------------

    def answer(self, path: str, body: bytes, authorization: str) -> tuple[int, dict | None]:
        self.authorizations.add(authorization)
        data = json.loads(body)
        bearer = authorization.removeprefix("Bearer ")
        if not authorization.startswith("Bearer ") or token_runner(KEY, bearer) != data.get("runner"):
            return 401, {"error": "unknown runner"}
        if path == TAKE:
            request = TakeRequest.model_validate(data)
            self.takes.append(request)
            try:
                return 200, self.pending.get(timeout=min(request.waitSeconds, 0.2)).model_dump()
            except queue.Empty:
                return 204, None
        if path == HEARTBEAT:
            beat = Heartbeat.model_validate(data)
            stop = self.stop_when(beat)
            self.replies.append(Reply(beat, stop))
            return 200, {"stop": stop, "leaseSeconds": 15}
        if path == DONE:
            with self._done:
                self.dones.append(Done.model_validate(data))
                self._done.notify_all()
            if self.done_status == 409:
                return 409, {"accepted": False, "reason": "the lease is not current"}
            if self.next_in_done and data.get("models") is not None:
                try:
                    following = self.pending.get_nowait()
                except queue.Empty:
                    return 200, {"accepted": True}
                self.handed_in_done.append(following.lease)
                return 200, {"accepted": True, "assignment": following.model_dump()}
            return 200, {"accepted": True}
        return 404, {"error": path}


def _handler(fake: FakeOperator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _key(self) -> str | None:
            parts = urlsplit(self.path)
            signed = parts.path.startswith("/objects/") and "X-Amz-Signature=" in parts.query
            return parts.path.removeprefix("/objects/") if signed else None

        def do_POST(self) -> None:
            status, data = fake.answer(urlsplit(self.path).path, self._body(), self.headers.get("Authorization", ""))
            self._send(status, json.dumps(data).encode() if data is not None else b"")

        def do_GET(self) -> None:
            key = self._key()
            if key is None or key not in fake.objects:
                self._send(403 if key is None else 404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
                return
            self._send(200, fake.objects[key], "application/octet-stream")

        def do_PUT(self) -> None:
            key = self._key()
            if key is None:
                self._send(403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml")
                return
            fake.objects[key] = self._body()
            fake.content_types[key] = self.headers.get("Content-Type", "")
            self._send(200)

    return Handler
