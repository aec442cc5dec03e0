"""A container's environment and command line (the kubelet's makeEnvironmentVariables), and the image table."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest

from img2img.local.executor.env import (
    EnvError, container_argv, container_env, expand, image_env, kubernetes_service_env,
)
from img2img.local.executor.images import image_id, match_image, normalize_image


def pod():
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "uid-p"},
            "spec": {"containers": [{"name": "main", "image": "img2img/runner:local", "command": ["true"]}]},
            "status": {"phase": "Pending"}}


# ---- images -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref,normal", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("img2img/runner:local", "docker.io/img2img/runner:local"),
    ("ghcr.io/a/b:1", "ghcr.io/a/b:1"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("repo/x@sha256:abc", "docker.io/repo/x@sha256:abc"),
])
def test_normalize_image(ref, normal):
    assert normalize_image(ref) == normal


def test_match_image_by_pattern_as_written_or_normalized():
    table = {"img2img/runner:*": {"path_prepend": ["/venv/bin"]}, "docker.io/library/busybox:*": {}}
    assert match_image("img2img/runner:local", table) == {"path_prepend": ["/venv/bin"]}
    assert match_image("busybox", table) == {}
    assert match_image("nosuch/image:1", table) is None
    assert image_id("img2img/runner:local").startswith("docker.io/img2img/runner@sha256:")


# ---- env ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,out", [
    ("$(A)-$(B)", "1-$(B)"),
    ("$$(A)", "$(A)"),
    ("$$", "$"),
    ("a$b", "a$b"),
    ("$(A", "$(A"),
    ("end$", "end$"),
    ("$(A)$(A)", "11"),
])
def test_expand(text, out):
    assert expand(text, {"A": "1"}) == out


SECRET = {"data": {"key": base64.b64encode(b"s3cr3t").decode(), "OTHER": base64.b64encode(b"o").decode()}}
CONFIGMAP = {"data": {"mode": "fast", "bad key": "x"}}


def _env(container, pod_obj=None):
    p = pod_obj or pod()
    return container_env(
        p, container,
        get_secret=lambda ns, name: SECRET if name == "s" else None,
        get_configmap=lambda ns, name: CONFIGMAP if name == "c" else None,
        service_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1"}, pod_ip="127.0.0.1", host_ip="127.0.0.1",
        node_alloc={"cpu": Decimal(2), "memory": Decimal(2**30)},
    )


def test_container_env_sources():
    env = _env({"name": "main", "envFrom": [{"configMapRef": {"name": "c"}, "prefix": "CM_"}],
                "env": [
                    {"name": "PLAIN", "value": "x-$(CM_mode)"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "key"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "mode"}}},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k", "optional": True}}},
                ]})
    assert env["PLAIN"] == "x-fast"
    assert env["TOKEN"] == "s3cr3t"
    assert env["MODE"] == "fast" and env["CM_mode"] == "fast" and "CM_bad key" not in env
    assert (env["NAME"], env["NS"], env["UID"], env["IP"]) == ("p", "ns", "uid-p", "127.0.0.1")
    assert env["CPU"] == "2" and env["MEM"] == "1024"
    assert "OPT" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"


@pytest.mark.parametrize("var,message", [
    ({"secretKeyRef": {"name": "missing", "key": "k"}}, 'secret "missing" not found'),
    ({"secretKeyRef": {"name": "s", "key": "nope"}}, "couldn't find key nope in Secret ns/s"),
    ({"configMapKeyRef": {"name": "missing", "key": "k"}}, 'configmap "missing" not found'),
    ({"configMapKeyRef": {"name": "c", "key": "nope"}}, "couldn't find key nope in ConfigMap ns/c"),
])
def test_container_env_errors_are_create_container_config_errors(var, message):
    with pytest.raises(EnvError) as err:
        _env({"name": "main", "env": [{"name": "X", "valueFrom": var}]})
    assert str(err.value) == message


def test_container_argv_expands_and_requires_a_command():
    assert container_argv({"command": ["echo"], "args": ["$(A)", "$$(A)"]}, {"A": "1"}) == ["echo", "1", "$(A)"]
    assert container_argv({"args": ["x"]}, {}) is None




def test_image_env_puts_the_table_dirs_first_on_the_container_path_and_inherits_only_what_is_set():
    entry = {"path_prepend": ["/venv/bin"], "env": {"HF_HOME": "/models"}, "inherit": ["TOKEN", "UNSET"],
             "paths": []}
    env = image_env(entry, "pod-1", {"TOKEN": "t", "HF_HOME": "/host", "HOME": "/home/me", "OTHER": "x"})
    assert env == {"PATH": "/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "HOSTNAME": "pod-1", "HOME": "/home/me", "TOKEN": "t", "HF_HOME": "/models"}
    assert image_env({"path_prepend": [], "env": {}, "inherit": []}, "p", {})["HOME"] == "/root"


def test_kubernetes_service_env_points_at_the_api_server():
    assert kubernetes_service_env("https://127.0.0.1:6443") == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "6443", "KUBERNETES_PORT": "tcp://127.0.0.1:6443"}
    assert kubernetes_service_env("https://api.example")["KUBERNETES_SERVICE_PORT"] == "443"
