"""Shared fixtures: the real embedded stack (kube-apiserver, etcd, kube-controller-manager, MinIO, the local executor).

The stack starts once per test session from the same code as `img2img local up`; tests that need the operator or the
gateway start and stop them themselves (each is the component under test there, and some tests kill the operator).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from img2img.local.stack import Stack, StackInfo

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never read weights from a hub


@dataclass
class StackHandle:
    stack: Stack
    info: StackInfo

    @property
    def kubeconfig(self) -> Path:
        return self.info.kubeconfig

    @property
    def env(self) -> dict[str, str]:
        return self.info.env()

    @property
    def bucket(self) -> str:
        return self.info.bucket

    @property
    def catalog(self) -> Path | None:
        return self.info.catalog

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = self.info.kubectl(*args, input=input, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def s3(self):
        import boto3

        env = self.env
        return boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )

    def api_client(self):
        from kubernetes import client, config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def start_operator(self, overrides: dict | None = None, name: str = "operator") -> None:
        """Start an operator replica; ``name`` is its identity in the leader election (as a pod name is)."""
        self.stack.start_operator(self.info, overrides or {}, name=name)

    def stop_operator(self, sig: int = signal.SIGTERM, name: str = "operator") -> None:
        self.stack.stop(name, sig=sig)

    def operator_url(self, name: str = "operator") -> str:
        """The replica's health and metrics server (``/healthz``; ``/metrics`` is on the metrics port)."""
        return f"http://127.0.0.1:{self.stack.read_state()['ports'][f'{name}_health']}"

    @property
    def operator_metrics_url(self) -> str:
        ports = self.stack.read_state()["ports"]
        return f"http://127.0.0.1:{ports['operator_metrics']}/metrics"


_STARTED: list[StackHandle] = []  # the session's stack, once a test has asked for it


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> StackHandle:
    state_dir = tmp_path_factory.mktemp("stack")
    s = Stack(state_dir=state_dir, with_operator=False, with_gateway=False)
    try:
        info = s.up()
        _STARTED.append(StackHandle(s, info))
        yield _STARTED[-1]
    finally:
        _STARTED.clear()
        s.down()


@pytest.fixture(autouse=True, scope="module")
def runners_do_not_outlive_their_module():
    """Runner pods are long-lived: an operator a module stopped leaves its runners holding the node's only GPU, and
    the next module's runners would stay Pending. Each module starts from a node with no runner on it."""
    yield
    for handle in _STARTED:
        handle.kubectl("delete", "pods", "--all-namespaces", "-l", "app.kubernetes.io/component=runner",
                       "--grace-period=0", "--force", "--wait=true", "--timeout=120s", check=False)


@pytest.fixture
def namespace(stack: StackHandle):
    """A fresh namespace, as `kubectl create namespace` makes it: jobs need nothing of ours in it."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    stack.kubectl("create", "namespace", name)
    yield name
    stack.kubectl("delete", "namespace", name, "--wait=false", check=False)
