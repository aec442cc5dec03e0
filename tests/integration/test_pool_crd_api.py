"""The RunnerPool CRD on a real kube-apiserver: a valid pool stored, a floor above the ceiling and a bad GPU class
refused with the field named, and `kubectl get rp` showing the pool's sizing and counts."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module", autouse=True)
def _pool_crd_established(stack):
    stack.kubectl("wait", "--for=condition=Established", "crd/runnerpools.img2img.dev", "--timeout=60s")


def pool(name: str, **spec) -> dict:
    return {"apiVersion": "img2img.dev/v1alpha1", "kind": "RunnerPool", "metadata": {"name": name},
            "spec": {"gpuClass": "l4", **spec}}


def create(stack, namespace: str, manifest: dict, check: bool = False):
    return stack.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(manifest), check=check)


def test_a_valid_pool_is_stored_as_sent(stack, namespace):
    sent = pool("sdxl", models=["sd_xl_base_1.0", "sdxl_vae.safetensors"], minReady=1, buffer=1, maxRunners=4,
                idleSeconds=120)
    create(stack, namespace, sent, check=True)
    stored = stack.get_json("-n", namespace, "rp", "sdxl")
    assert stored["spec"] == sent["spec"]
    # no ceiling is fine: the GPU class's maxConcurrent applies at run time
    create(stack, namespace, pool("floor-only", minReady=5), check=True)


@pytest.mark.parametrize("spec, path, message", [
    ({"minReady": 5, "maxRunners": 2}, "spec.minReady", "must not be above maxRunners"),
    ({"gpuClass": "A100_80GB"}, "spec.gpuClass", "should match"),
    ({"maxRunners": 0}, "spec.maxRunners", "greater than or equal to 1"),
    ({"models": [""]}, "spec.models[0]", "at least 1 chars long"),
])
def test_api_server_refuses_a_bad_pool_naming_the_field(stack, namespace, spec, path, message):
    proc = create(stack, namespace, pool("bad", **spec))
    assert proc.returncode != 0
    assert f"{path}:" in proc.stderr and message in proc.stderr, proc.stderr


def test_kubectl_get_rp_shows_sizing_and_counts(stack, namespace):
    create(stack, namespace, pool("shown", minReady=1, maxRunners=3), check=True)
    status = {"readyRunners": 2, "busyRunners": 1, "startingRunners": 1, "queuedJobs": 4,
              "conditions": [{"type": "Ready", "status": "True", "reason": "MinReady", "message": "",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    stack.kubectl("-n", namespace, "patch", "rp", "shown", "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": status}))
    table = stack.kubectl("-n", namespace, "get", "rp", "shown").stdout.splitlines()
    assert table[0].split() == ["NAME", "GPU", "CLASS", "MIN", "MAX", "READY", "BUSY", "STARTING", "QUEUED", "AGE"]
    assert table[1].split()[:8] == ["shown", "l4", "1", "3", "2", "1", "1", "4"]
    listed = stack.kubectl("-n", namespace, "get", "img2img", "-o", "name").stdout.split()
    assert "runnerpool.img2img.dev/shown" in listed  # the category lists pools beside jobs


def test_a_runner_pod_is_admitted_under_the_restricted_profile(stack):
    from img2img_operator.config import parse_config
    from img2img_operator.pool_scaling import Pool
    from img2img_operator.runner_pods import build_pool_runner_pod

    runners_ns = "rp-restricted"
    stack.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": runners_ns, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}}))
    config = parse_config({"s3": {"bucket": "b"}, "runner": {"serviceAccountName": None, "modelCache": {}},
                           "runners": {"namespace": runners_ns}})
    pool = Pool("sdxl", "default", ("sd_xl_base_1.0",), 1, 0, 2, 60)
    pod = build_pool_runner_pod(pool, "sdxl-abcde", b"k" * 32, config)
    proc = stack.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode == 0 and "violate" not in proc.stderr, proc.stderr
