"""pods.build_runner_pod: the runner pod of one attempt, as docs/architecture.md fixes it."""

from __future__ import annotations

import json

import pytest
from img2img_operator.controls import check_spec
from img2img_operator.pods import build_runner_pod, label_value, runner_pod_name

from operator_samples import CONFIG, UID, config, job


def build(cfg=CONFIG, attempt=1, **controls):
    j = job(None, **controls)
    checked = check_spec(j.spec, cfg)
    assert checked.ok, checked.describe()
    return build_runner_pod(j, attempt, checked.controls, cfg)


def env_of(pod) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


def test_name_labels_and_owner():
    pod = build(attempt=2)
    meta = pod["metadata"]
    assert meta["name"] == "seed-2" and meta["namespace"] == "team-a"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "img2img-operator", "app.kubernetes.io/name": "img2img-runner",
        "app.kubernetes.io/component": "runner", "img2img.dev/job": "seed", "img2img.dev/job-uid": UID,
        "img2img.dev/attempt": "2", "img2img.dev/gpu-class": "l4"}
    assert meta["ownerReferences"] == [{"apiVersion": "img2img.dev/v1alpha1", "kind": "Img2ImgJob", "name": "seed",
                                        "uid": UID, "controller": True, "blockOwnerDeletion": True}]


@pytest.mark.parametrize("job_name,attempt", [("a" * 60, 1), ("b" * 61, 12), ("x-" * 100 + "y", 3),
                                               ("seed." + "z" * 70, 10)])
def test_long_job_names_give_unique_names_of_63_characters(job_name, attempt):
    name = runner_pod_name(job_name, attempt)
    assert len(name) <= 63 and name.endswith(f"-{attempt}")
    assert name[0].isalnum()
    assert runner_pod_name(job_name, attempt) == name  # deterministic
    assert runner_pod_name(job_name + "q", attempt) != name
    assert "--" not in name.replace("x-", "")


def test_short_names_are_kept():
    assert runner_pod_name("seed", 1) == "seed-1"
    assert runner_pod_name("a" * 61, 1) == "a" * 61 + "-1"


def test_label_values_stay_valid():
    assert label_value("seed") == "seed"
    long = label_value("j" * 100)
    assert len(long) <= 63 and long[-1].isalnum()
    assert label_value("weird/name") != "weird/name" and len(label_value("weird/name")) <= 63


def test_runner_container_command_env_and_termination_message():
    pod = build(attempt=3)
    (c,) = pod["spec"]["containers"]
    assert c["name"] == "runner" and c["command"] == ["img2img-runner"]
    assert c["image"] == CONFIG.runner.image and c["imagePullPolicy"] == "IfNotPresent"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = env_of(pod)
    base = f"s3://img2img/jobs/team-a/seed/{UID}/"
    assert env["IMG2IMG_JOB_INPUT"] == base + "input.json"
    assert env["IMG2IMG_OUTPUT"] == base
    assert env["IMG2IMG_CATALOG"] == "/etc/img2img/catalog/catalog.yaml"
    assert json.loads(env["IMG2IMG_ALLOWED_S3"]) == ["s3://img2img/jobs/team-a/", "s3://img2img/uploads/team-a/"]
    assert json.loads(env["IMG2IMG_ALLOWED_HOSTS"]) == []
    assert env["IMG2IMG_ATTEMPT"] == "3"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["AWS_REGION"] == "us-east-1"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "img2img-s3", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "img2img-s3", "key": "AWS_SECRET_ACCESS_KEY"}}


def test_no_credentials_secret_means_cloud_identity_no_aws_keys():
    cfg = config(s3={"bucket": "b", "credentialsSecret": None, "endpoint": None, "region": None,
                     "allowedReadPrefixes": {"*": ["s3://shared/"], "team-a": ["s3://team-a-in/x/"]}})
    env = env_of(build(cfg))
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"} & set(env)
    assert json.loads(env["IMG2IMG_ALLOWED_S3"]) == ["s3://b/jobs/team-a/", "s3://b/uploads/team-a/", "s3://shared/", "s3://team-a-in/x/"]


def test_job_output_location_moves_staging_and_results():
    env = env_of(build(output={"bucket": "results", "prefix": "team/out"}))
    assert env["IMG2IMG_OUTPUT"] == f"s3://results/team/out/team-a/seed/{UID}/"
    assert env["IMG2IMG_JOB_INPUT"] == f"s3://results/team/out/team-a/seed/{UID}/input.json"


def test_extra_env_cannot_override_the_operators_own():
    cfg = config(runner={"env": {"HF_HUB_OFFLINE": "1", "IMG2IMG_ATTEMPT": "99"},
                         "hubTokenSecret": {"name": "hf", "key": "token"}})
    pod = build(cfg)
    names = [e["name"] for e in pod["spec"]["containers"][0]["env"]]
    assert len(names) == len(set(names))
    env = env_of(pod)
    assert env["HF_HUB_OFFLINE"] == "1" and env["IMG2IMG_ATTEMPT"] == "1"
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}


def test_gpu_class_resources_placement_and_deadline():
    cfg = config(gpuClasses={"l4": {"resources": {"nvidia.com/gpu": 1, "memory": "24Gi"},
                                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
                                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                     "effect": "NoSchedule"}],
                                    "priorityClassName": "gpu-batch"},
                             "a100": {"resources": {"nvidia.com/gpu": 2}}},
                 runner={"resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}})
    pod = build(cfg)
    spec = pod["spec"]
    assert spec["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "24Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "24Gi", "nvidia.com/gpu": "1"}}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["priorityClassName"] == "gpu-batch"
    assert spec["activeDeadlineSeconds"] == 600  # the configured default
    other = build(cfg, gpuClass="a100", timeoutSeconds=120)
    assert other["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "nodeSelector" not in other["spec"] and "priorityClassName" not in other["spec"]
    assert other["spec"]["activeDeadlineSeconds"] == 120
    assert other["metadata"]["labels"]["img2img.dev/gpu-class"] == "a100"


def test_restricted_pod_security_and_no_api_token():
    spec = build()["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "img2img-runner"
    assert spec["enableServiceLinks"] is False
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert psc["runAsUser"] > 0
    csc = spec["containers"][0]["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False and csc["privileged"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]} and csc["readOnlyRootFilesystem"] is True
    assert csc["runAsNonRoot"] is True and csc["seccompProfile"] == {"type": "RuntimeDefault"}


def volumes_and_mounts(pod):
    return ({v["name"]: v for v in pod["spec"]["volumes"]},
            {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]})


def test_tmp_is_an_empty_dir_and_no_cache_by_default():
    volumes, mounts = volumes_and_mounts(build())
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}}
    assert mounts["/tmp"]["name"] == "tmp"
    assert "model-cache" not in volumes and "IMG2IMG_MODEL_CACHE" not in env_of(build())


@pytest.mark.parametrize("cache,source", [
    ({"persistentVolumeClaim": "models", "readOnly": True},
     {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}}),
    ({"hostPath": "/data/models"}, {"hostPath": {"path": "/data/models", "type": "DirectoryOrCreate"}}),
    ({"sizeLimit": "100Gi"}, {"emptyDir": {"sizeLimit": "100Gi"}}),
    ({}, {"emptyDir": {}}),
])
def test_model_cache_volume(cache, source):
    cfg = config(runner={"modelCache": {"mountPath": "/models", **cache}})
    pod = build(cfg)
    volumes, mounts = volumes_and_mounts(pod)
    assert volumes["model-cache"] == {"name": "model-cache", **source}
    assert mounts["/models"]["readOnly"] is bool(cache.get("readOnly"))
    assert env_of(pod)["IMG2IMG_MODEL_CACHE"] == "/models"


def test_catalog_config_map_is_mounted_where_the_env_says():
    cfg = config(runner={"catalogConfigMap": "img2img-catalog", "catalogKey": "catalog.yaml",
                         "catalogPath": "/etc/img2img/catalog/catalog.yaml"})
    pod = build(cfg)
    volumes, mounts = volumes_and_mounts(pod)
    assert volumes["catalog"]["configMap"] == {"name": "img2img-catalog",
                                               "items": [{"key": "catalog.yaml", "path": "catalog.yaml"}]}
    assert mounts["/etc/img2img/catalog"] == {"name": "catalog", "mountPath": "/etc/img2img/catalog",
                                              "readOnly": True}
    assert env_of(pod)["IMG2IMG_CATALOG"] == "/etc/img2img/catalog/catalog.yaml"


def test_catalog_path_without_config_map_is_only_an_env_var():
    cfg = config(runner={"catalogPath": "/home/me/tiny/catalog.yaml"})
    pod = build(cfg)
    volumes, _ = volumes_and_mounts(pod)
    assert "catalog" not in volumes
    assert env_of(pod)["IMG2IMG_CATALOG"] == "/home/me/tiny/catalog.yaml"
    assert "IMG2IMG_CATALOG" not in env_of(build(config(runner={"catalogPath": None})))


def test_the_manifest_is_deterministic_and_a_valid_pod():
    from kubernetes import client

    a, b = build(), build()
    assert a == b
    # the official client's models accept every field (no typo in a key)
    api = client.ApiClient()
    pod = api._ApiClient__deserialize(a, "V1Pod")
    assert api.sanitize_for_serialization(pod) == a
