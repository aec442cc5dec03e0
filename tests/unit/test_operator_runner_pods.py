"""runner_pods: the pod of a warm runner, as POOLS.md fixes it."""

from __future__ import annotations

import copy
import json
import random

import pytest
from img2img.api.protocol import token_runner
from img2img_operator.config import parse_config
from img2img_operator.pool_scaling import Pool
from img2img_operator.runner_pods import build_pool_runner_pod, made_by_operator, pool_selector, runner_name

KEY = b"k" * 32
BASE = {
    "s3": {"bucket": "img2img", "endpoint": "http://minio:9000", "region": "us-east-1",
           "credentialsSecret": "img2img-s3"},
    "gpuClasses": {"l4": {"resources": {"nvidia.com/gpu": 1, "memory": "24Gi"},
                          "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                          "priorityClassName": "gpu-serving"}},
    "runner": {"image": "ghcr.io/img2img-operator/runner:0.2.0", "resources": {"requests": {"cpu": "2"}},
               "catalogConfigMap": "img2img-catalog", "modelCache": {"persistentVolumeClaim": "models",
                                                                     "readOnly": True},
               "env": {"HF_HUB_OFFLINE": "1", "IMG2IMG_POOL": "forged"}},
    "runners": {"namespace": "img2img-system", "operatorUrl": "http://img2img-operator-runners.img2img-system.svc:8081"},
}
CONFIG = parse_config(BASE)
SDXL = Pool(name="sdxl", gpu_class="l4", models=("sd_xl_base_1.0", "sdxl_vae.safetensors"), min_ready=1, buffer=0,
            max_runners=4, idle_seconds=300, uid="pool-uid-1")
IMPLICIT = Pool(name="l4", gpu_class="l4", models=(), min_ready=0, buffer=0, max_runners=2, idle_seconds=60,
                implicit=True)


def env_of(pod) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


def test_runner_names_are_the_pool_and_five_random_characters():
    name = runner_name("sdxl", random.Random(7))
    assert name.startswith("sdxl-") and len(name) == len("sdxl-") + 5
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789" for c in name[5:])
    assert runner_name("sdxl", random.Random(7)) == name and runner_name("sdxl", random.Random(8)) != name
    long = runner_name("p" * 70 + ".x", random.Random(1))
    assert len(long) == 63 and long.startswith("p" * 57 + "-")


def test_name_namespace_labels_and_owner():
    pod = build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, CONFIG)
    meta = pod["metadata"]
    assert (meta["name"], meta["namespace"]) == ("sdxl-a1b2c", "img2img-system")
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "img2img-operator",
                              "app.kubernetes.io/component": "runner", "app.kubernetes.io/name": "img2img-runner",
                              "img2img.dev/pool": "sdxl", "img2img.dev/gpu-class": "l4"}
    assert pool_selector("sdxl").items() <= meta["labels"].items()
    assert meta["ownerReferences"] == [{"apiVersion": "img2img.dev/v1alpha1", "kind": "RunnerPool", "name": "sdxl",
                                        "uid": "pool-uid-1", "controller": True}]


def test_an_implicit_pools_runner_has_no_owner():
    meta = build_pool_runner_pod(IMPLICIT, "l4-zz9zz", KEY, CONFIG)["metadata"]
    assert "ownerReferences" not in meta and meta["labels"]["img2img.dev/pool"] == "l4"


def test_the_runner_serves_with_its_token_the_operators_url_and_its_pools_models():
    pod = build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, CONFIG)
    (c,) = pod["spec"]["containers"]
    assert (c["name"], c["image"], c["command"], c["args"]) == (
        "runner", "ghcr.io/img2img-operator/runner:0.2.0", ["img2img-runner"], ["serve"])
    env = env_of(pod)
    assert env["IMG2IMG_OPERATOR_URL"] == "http://img2img-operator-runners.img2img-system.svc:8081"
    assert env["IMG2IMG_RUNNER_NAME"] == "sdxl-a1b2c"
    assert token_runner(KEY, env["IMG2IMG_RUNNER_TOKEN"]) == "sdxl-a1b2c"
    assert token_runner(b"another key" * 3, env["IMG2IMG_RUNNER_TOKEN"]) is None
    assert env["IMG2IMG_POOL"] == "sdxl"  # runner.env cannot forge it
    assert json.loads(env["IMG2IMG_POOL_MODELS"]) == ["sd_xl_base_1.0", "sdxl_vae.safetensors"]
    assert env["IMG2IMG_CATALOG"] == "/etc/img2img/catalog/catalog.yaml"
    assert env["IMG2IMG_MODEL_CACHE"] == "/models" and env["HF_HUB_OFFLINE"] == "1"
    names = [e["name"] for e in c["env"]]
    assert len(names) == len(set(names))
    assert json.loads(env_of(build_pool_runner_pod(IMPLICIT, "l4-zz9zz", KEY, CONFIG))["IMG2IMG_POOL_MODELS"]) == []


def test_no_job_area_credentials_only_the_model_stores_when_configured():
    env = env_of(build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, CONFIG))
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "IMG2IMG_JOB_INPUT", "IMG2IMG_OUTPUT",
                "IMG2IMG_ALLOWED_S3"} & set(env)  # s3.credentialsSecret is the operator's, not the runners'
    assert (env["AWS_ENDPOINT_URL"], env["AWS_REGION"]) == ("http://minio:9000", "us-east-1")
    store = parse_config({**BASE, "runners": {**BASE["runners"], "modelStoreSecret": "model-store"}})
    env = env_of(build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, store))
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "model-store", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "model-store", "key": "AWS_SECRET_ACCESS_KEY"}}


def test_local_runners_reach_the_operator_on_this_machine():
    local = parse_config({**BASE, "runners": {"port": 18081}})
    assert env_of(build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, local))["IMG2IMG_OPERATOR_URL"] == \
        "http://127.0.0.1:18081"


def test_gpu_class_resources_placement_and_volumes():
    spec = build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, CONFIG)["spec"]
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "nvidia.com/gpu": "1", "memory": "24Gi"},
        "limits": {"nvidia.com/gpu": "1", "memory": "24Gi"}}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["priorityClassName"] == "gpu-serving"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache",
                                      "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    assert volumes["catalog"]["configMap"]["name"] == "img2img-catalog"
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}}


def test_a_runner_always_has_a_memory_limit_its_request_unless_one_is_configured():
    def resources(runner_resources: dict, class_resources: dict) -> dict:
        cfg = parse_config({**BASE, "runner": {"resources": runner_resources},
                            "gpuClasses": {"l4": {"resources": class_resources}}})
        return build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, cfg)["spec"]["containers"][0]["resources"]

    gpu = {"nvidia.com/gpu": 1}
    assert resources({"requests": {"cpu": "2", "memory": "16Gi"}}, gpu)["limits"] == {
        "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert resources({"requests": {"memory": "16Gi"}, "limits": {"memory": "32Gi"}}, gpu)["limits"]["memory"] == "32Gi"
    assert resources({"requests": {"memory": "16Gi"}}, {**gpu, "memory": "64Gi"})["limits"]["memory"] == "64Gi"
    assert parse_config({"s3": {"bucket": "b"}}).runner.resources.requests["memory"] == "4Gi"  # so by default: 4Gi


def test_long_lived_restricted_never_restarted_no_api_token():
    spec = build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, CONFIG)["spec"]
    assert spec["restartPolicy"] == "Never" and "activeDeadlineSeconds" not in spec
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "img2img-runner"
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                       "seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": 1000}
    assert spec["containers"][0]["securityContext"] == {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("pool", [SDXL, IMPLICIT], ids=["pool", "implicit"])
def test_the_manifest_is_a_valid_pod(pool):
    from kubernetes import client

    manifest = build_pool_runner_pod(pool, f"{pool.name}-abcde", KEY, CONFIG)
    api = client.ApiClient()
    assert api.sanitize_for_serialization(api._ApiClient__deserialize(manifest, "V1Pod")) == manifest


def test_a_pod_is_one_of_the_operators_runners_only_with_the_token_signed_for_its_own_name():
    ours = build_pool_runner_pod(SDXL, "sdxl-a1b2c", KEY, CONFIG)
    assert made_by_operator(ours, KEY)
    assert not made_by_operator(ours, b"another operator's key")
    copied = copy.deepcopy(ours)  # someone copies a runner's whole manifest under another name
    copied["metadata"]["name"] = "sdxl-zzzzz"
    assert not made_by_operator(copied, KEY)
    labels_only = {"metadata": {"name": "sdxl-zzzzz", "labels": ours["metadata"]["labels"]},
                   "spec": {"containers": [{"name": "runner", "image": "evil"}]}}
    assert not made_by_operator(labels_only, KEY)
    sidecar = copy.deepcopy(ours)  # the token in another container than the runner's
    sidecar["spec"]["containers"][0]["name"] = "other"
    assert not made_by_operator(sidecar, KEY)
