"""The Helm chart: lints, renders the operator's real configuration, grants exactly what the operator uses."""

from __future__ import annotations

import filecmp
import ipaddress
from pathlib import Path

import pytest
import yaml

from helm_support import CHART, EXAMPLES, FULLNAME, RELEASE_NAMESPACE, find, helm, one, operator_config, render
from img2img.api.crd import POOL, crd
from img2img.api.pool import RunnerPool
from img2img_operator.config import WebhooksConfig, parse_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VALUES = sorted(EXAMPLES.glob("values-*.yaml"))

# The operator's API calls (img2img_operator.kube: kopf handles no resource; docs/gitops.md, "RBAC"):
# nothing more is granted. kopf scans neither namespaces nor CRDs (settings.scanning.disabled).
# On jobs, where they are watched: no pods, no Secrets, nothing else in the tenants' namespaces.
OPERATOR_RULES = {
    ("img2img.dev", "img2imgjobs"): {"get", "list", "watch", "delete"},
    ("img2img.dev", "img2imgjobs/status"): {"patch"},
    ("", "events"): {"create"},
}
# In the runner namespace (the release's): runner pods (and the leader's label on its own pod), the token and webhook
# signing keys (read by name, created once), the webhook public key's ConfigMap (written by name, created once), the
# pools, the leader election's Lease (read and renewed by name, created once).
RUNNER_NAMESPACE_RULES = {
    ("", "pods"): {"get", "list", "watch", "create", "delete", "patch"},
    ("coordination.k8s.io", "leases", FULLNAME): {"get", "update"},
    ("coordination.k8s.io", "leases"): {"create"},
    ("", "secrets", "img2img-runner-token"): {"get"},
    ("", "secrets", "img2img-webhook-signing-key"): {"get"},
    ("", "secrets"): {"create"},
    ("", "configmaps", "img2img-webhook-public-key"): {"patch"},
    ("", "configmaps"): {"create"},
    ("img2img.dev", "runnerpools"): {"get", "list", "watch", "patch"},
    ("img2img.dev", "runnerpools/status"): {"patch"},
    ("", "events"): {"create"},
}


def rules_of(role: dict) -> dict[tuple[str, ...], set[str]]:
    """(group, resource[, name]) -> verbs."""
    granted: dict[tuple[str, ...], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames") or [None]:
                    key = (group, resource) if name is None else (group, resource, name)
                    granted.setdefault(key, set()).update(rule["verbs"])
    return granted


# ---- lint and render -----------------------------------------------------------------------------------------------
def test_helm_lint_strict_passes_with_the_default_values():
    proc = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", EXAMPLE_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict_passes_with_each_example_values_file(values):
    proc = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "0 chart(s) failed" in proc.stdout


def test_there_is_an_example_values_file_for_a_gpu_cluster():
    assert EXAMPLES / "values-gpu-cluster.yaml" in EXAMPLE_VALUES


@pytest.mark.parametrize("values", [None, *EXAMPLE_VALUES], ids=lambda p: p.name if p else "defaults")
def test_the_rendered_configuration_is_a_valid_operator_configuration(values):
    manifests = render([values] if values else [])
    config = parse_config(operator_config(manifests), "rendered config.yaml")
    deployment = one(manifests, "Deployment", FULLNAME)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--config", "/etc/img2img-operator/config.yaml"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": config.health_port, "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize("values", [None, *EXAMPLE_VALUES], ids=lambda p: p.name if p else "defaults")
def test_the_operator_accepts_the_rendered_configuration_file(values, tmp_path):
    import subprocess
    import sys

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(operator_config(render([values] if values else []))))
    operator = Path(sys.executable).parent / "img2img-operator"
    proc = subprocess.run([str(operator), "--config", str(config), "--check-config"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_default_configuration_is_the_operators_defaults_where_values_say_nothing():
    config = parse_config(operator_config(render()))
    assert config.all_namespaces
    assert list(config.gpu_classes) == ["default"] and config.gpu_classes["default"].resources == {"nvidia.com/gpu": 1}
    assert config.runner.image == "ghcr.io/img2img-operator/runner:0.1.0"
    assert config.runner.service_account_name == "img2img-runner"
    assert config.runner.catalog_config_map == f"{FULLNAME}-catalog"
    assert config.s3.credentials_secret is None
    assert config.defaults.timeout_seconds == 3600 and config.defaults.retries == 2
    assert config.metrics_port == 9090 and config.health_port == 8080
    assert config.webhooks == WebhooksConfig(namespace=RELEASE_NAMESPACE)


def test_the_default_values_cap_what_each_namespace_may_ask_for_and_bound_runner_memory():
    config = parse_config(operator_config(render()))
    caps = config.policy.of("any-namespace")
    assert (caps.max_priority, caps.max_timeout_seconds, caps.max_retries, caps.max_concurrent,
            caps.max_megapixel_steps) == (100, 21600, 3, 8, 2000)
    assert config.runner.resources.limits == {"memory": "32Gi"}
    farm = parse_config(operator_config(render(sets=["policy.namespaces.render-farm.maxPriority=500"])))
    assert farm.policy.of("render-farm").max_priority == 500 and farm.policy.of("render-farm").max_retries == 3


def test_the_gpu_cluster_values_become_two_gpu_classes_a_read_only_model_volume_and_irsa():
    manifests = render([EXAMPLES / "values-gpu-cluster.yaml"])
    config = parse_config(operator_config(manifests))
    assert set(config.gpu_classes) == {"a100", "h100"} and config.default_class == "a100"
    for name, product in (("a100", "NVIDIA-A100-SXM4-80GB"), ("h100", "NVIDIA-H100-80GB-HBM3")):
        gpu = config.gpu_classes[name]
        assert gpu.node_selector == {"nvidia.com/gpu.product": product}
        assert [t.model_dump(by_alias=True, exclude_none=True) for t in gpu.tolerations] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert gpu.resources["nvidia.com/gpu"] == 1
    assert config.gpu_classes["a100"].max_concurrent == 8 and config.gpu_classes["h100"].max_concurrent == 4
    cache = config.runner.model_cache
    assert cache.kind == "persistentVolumeClaim" and cache.read_only and cache.mount_path == "/models"
    assert config.s3.credentials_secret is None
    assert config.namespaces == ["img2img-jobs", "team-a"]
    sa = one(manifests, "ServiceAccount", "img2img-runner", RELEASE_NAMESPACE)
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/img2img-runner")
    catalog = yaml.safe_load(one(manifests, "ConfigMap", f"{FULLNAME}-catalog", RELEASE_NAMESPACE)["data"]["catalog.yaml"])
    assert catalog["models"]["sd_xl_base_1.0"]["source"]["path"].startswith("/models/")
    assert [(p.metadata.name, p.spec.gpuClass, p.spec.minReady) for p in pools_of(manifests)] == [("sdxl", "a100", 1)]
    deployment = one(manifests, "Deployment", FULLNAME)
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "AWS_ACCESS_KEY_ID" not in env  # IRSA: no credentials anywhere
    assert find(manifests, "ServiceMonitor")


def test_the_default_catalog_maps_the_seed_requests_models_and_the_sd15_controlnet_under_sdxl():
    manifests = render()
    catalog = yaml.safe_load(one(manifests, "ConfigMap", f"{FULLNAME}-catalog", RELEASE_NAMESPACE)["data"]["catalog.yaml"])
    models = catalog["models"]
    for name in ("sd_xl_base_1.0", "sd_xl_refiner_1.0", "sdxl_vae.safetensors", "control_v11p_sd15_canny"):
        assert name in models
    assert models["control_v11p_sd15_canny"]["substitutes"]["sdxl"] in models


def test_a_catalog_in_the_values_replaces_the_default_one_whole(tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"catalog": {"content": {"version": 1, "models": {
        "mine": {"architecture": "sdxl", "source": {"path": "/models/mine"}}}}}}))
    catalog = yaml.safe_load(one(render([values]), "ConfigMap", f"{FULLNAME}-catalog")["data"]["catalog.yaml"])
    assert list(catalog["models"]) == ["mine"]


def test_output_locations_per_namespace_reach_the_operator(tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"s3": {"allowedOutputLocations": {"team-a": ["s3://team-a-results/img2img"]}}}))
    s3 = parse_config(operator_config(render([values]))).s3
    assert s3.output_locations("team-a") == ["s3://img2img/jobs", "s3://team-a-results/img2img"]
    assert s3.output_locations("team-b") == ["s3://img2img/jobs"]
    assert parse_config(operator_config(render())).s3.output_locations("team-b") == ["s3://img2img/jobs"]


def test_deleted_jobs_objects_are_deleted_unless_the_values_retain_them():
    assert parse_config(operator_config(render())).s3.reclaim_policy == "Delete"
    retained = parse_config(operator_config(render(sets=["s3.reclaimPolicy=Retain"])))
    assert retained.s3.reclaim_policy == "Retain"


def test_the_limit_on_a_runner_pods_time_pending_reaches_the_operator_and_null_lifts_it():
    assert parse_config(operator_config(render())).runners.max_pending_seconds == 900
    lifted = parse_config(operator_config(render(sets=["runners.maxPendingSeconds=null"])))
    assert lifted.runners.max_pending_seconds is None


def test_s3_credentials_secret_reaches_the_operator_only():
    manifests = render(sets=["s3.credentialsSecret=img2img-s3", "s3.endpoint=http://minio.storage:9000"])
    config = parse_config(operator_config(manifests))
    assert config.s3.credentials_secret == "img2img-s3" and config.s3.endpoint == "http://minio.storage:9000"
    env = one(manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]["env"]
    keys = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in env}
    assert keys["AWS_ACCESS_KEY_ID"] == {"name": "img2img-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert keys["AWS_SECRET_ACCESS_KEY"] == {"name": "img2img-s3", "key": "AWS_SECRET_ACCESS_KEY"}


def test_the_hub_token_secret_is_rendered_for_the_runners():
    manifests = render(sets=["runner.hubToken.secretName=hf-token"])
    rendered = operator_config(manifests)
    assert rendered["runner"]["hubTokenSecret"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert parse_config(rendered).runner.hub_token_secret.name == "hf-token"


def pools_of(manifests: list[dict]) -> list[RunnerPool]:
    return [RunnerPool.model_validate(m) for m in find(manifests, "RunnerPool")]


# ---- warm runner pools -------------------------------------------------------------------------------------------
def test_pools_in_the_values_become_runner_pools_in_the_release_namespace(tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({
        "gpuClasses": {"l4": {}, "a100": {}}, "defaultGpuClass": "l4",
        "pools": [{"name": "sdxl", "gpuClass": "a100", "models": ["sd_xl_base_1.0", "sdxl_vae.safetensors"],
                   "minReady": 2, "buffer": 1, "maxRunners": 6, "idleSeconds": 600},
                  {"name": "cheap", "gpuClass": "l4"}]}))
    manifests = render([values])
    assert [m["metadata"]["namespace"] for m in find(manifests, "RunnerPool")] == [RELEASE_NAMESPACE] * 2
    sdxl, cheap = pools_of(manifests)
    assert sdxl.metadata.name == "sdxl" and sdxl.spec.model_dump() == {
        "gpuClass": "a100", "models": ["sd_xl_base_1.0", "sdxl_vae.safetensors"], "minReady": 2, "buffer": 1,
        "maxRunners": 6, "idleSeconds": 600}
    assert cheap.spec.sent() == {"gpuClass": "l4"}  # the rest: the RunnerPool's defaults, as for kubectl users
    assert not find(render(), "RunnerPool")


def test_the_values_schema_of_a_pool_is_the_runner_pools_spec():
    import json

    item = json.loads((CHART / "values.schema.json").read_text())["properties"]["pools"]["items"]["properties"]
    spec = crd(POOL)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(item) == {"name", *spec}
    for field, rules in spec.items():
        for key in ("minimum", "maximum", "maxItems", "maxLength", "pattern"):
            assert item[field].get(key) == rules.get(key), (field, key)
    assert item["models"]["items"] == {"type": "string", "minLength": 1, "maxLength": 256}


def test_the_runners_configuration_points_runners_at_the_charts_service():
    manifests = render(sets=["runners.modelStoreSecret=model-store", "runners.leaseSeconds=20"])
    config = parse_config(operator_config(manifests))
    assert config.runners.namespace == RELEASE_NAMESPACE
    assert config.runners.url == f"http://{FULLNAME}-runners.{RELEASE_NAMESPACE}.svc:8081"
    assert (config.runners.port, config.runners.lease_seconds, config.runners.heartbeat_seconds) == (8081, 20, 3)
    assert config.runners.token_secret == "img2img-runner-token" and config.runners.model_store_secret == "model-store"
    assert (config.runners.implicit_pool.idle_seconds, config.runners.implicit_pool.max_runners) == (60, 8)
    assert parse_config(operator_config(render())).runners.model_store_secret is None
    service = one(manifests, "Service", f"{FULLNAME}-runners", RELEASE_NAMESPACE)
    assert service["spec"]["ports"] == [{"name": "runners", "port": 8081, "targetPort": "runners", "protocol": "TCP"}]
    pod = one(manifests, "Deployment", FULLNAME)["spec"]["template"]
    # runners reach the leader only: the operator's pods, with the label the leader sets on its own pod
    from img2img_operator.views import LABEL_LEADER

    selector = dict(service["spec"]["selector"])
    assert selector.pop(LABEL_LEADER) == "true" and config.leader_election.label_pod
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert {"name": "runners", "containerPort": 8081, "protocol": "TCP"} in pod["spec"]["containers"][0]["ports"]
    moved = render(sets=["runners.port=9443"])
    assert parse_config(operator_config(moved)).runners.url.endswith(".svc:9443")
    assert one(moved, "Service", f"{FULLNAME}-runners")["spec"]["ports"][0]["port"] == 9443


def test_only_runner_pods_reach_the_runner_endpoint():
    manifests = render()
    policy = one(manifests, "NetworkPolicy", f"{FULLNAME}-runner-endpoint", RELEASE_NAMESPACE)["spec"]
    pod_labels = one(manifests, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    runners_rule, open_rule = policy["ingress"]
    # both labels the operator puts on runner pods, in the release namespace only (no namespaceSelector)
    assert runners_rule == {"from": [{"podSelector": {"matchLabels": RUNNER_LABELS}}],
                            "ports": [{"port": "runners", "protocol": "TCP"}]}
    assert open_rule == {"ports": [{"port": "health", "protocol": "TCP"}, {"port": "metrics", "protocol": "TCP"}]}


# ---- what a NetworkPolicy lets through (its semantics, for the cases below) ------------------------------------------
RUNNER_LABELS = {"app.kubernetes.io/managed-by": "img2img-operator", "app.kubernetes.io/component": "runner"}
METADATA = ["169.254.169.254", "fd00:ec2::254", "168.63.129.16", "169.254.170.2"]  # ECS/EKS credentials too


def _in(address: str, cidr: str) -> bool:
    ip, net = ipaddress.ip_address(address), ipaddress.ip_network(cidr)
    return ip.version == net.version and ip in net


def egress_allows(policy: dict, port: int, address: str | None = None, pod: dict | None = None,
                  protocol: str = "TCP") -> bool:
    """Whether one of the policy's egress rules lets a connection out to ``address`` (or a pod of the same namespace
    with labels ``pod``) on ``port``."""
    for rule in policy["egress"]:
        ports = rule.get("ports")
        if ports and not any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        if not rule.get("to"):
            return True
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block and address and _in(address, block["cidr"]) and \
                    not any(_in(address, e) for e in block.get("except", [])):
                return True
            selector = peer.get("podSelector")
            if selector is not None and pod is not None and "namespaceSelector" not in peer and \
                    selector.get("matchLabels", {}).items() <= pod.items():
                return True
    return False


def test_runner_pods_reach_the_operator_dns_and_s3_and_never_the_metadata_services():
    manifests = render(sets=["s3.endpoint=http://minio.storage:9000"])
    policy = one(manifests, "NetworkPolicy", f"{FULLNAME}-runners", RELEASE_NAMESPACE)["spec"]
    # the labels the operator puts on runner pods (img2img_operator.runner_pods)
    from img2img_operator.runner_pods import LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY, RUNNER_COMPONENT

    assert policy["podSelector"]["matchLabels"] == {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: RUNNER_COMPONENT}
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["ingress"] == []
    operator = one(manifests, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"]
    assert egress_allows(policy, 8081, pod=operator)
    assert egress_allows(policy, 53, "10.96.0.10", protocol="UDP") and egress_allows(policy, 53, "169.254.20.10")
    assert egress_allows(policy, 443, "52.216.8.1")  # S3, a model hub, an https:// input image
    assert egress_allows(policy, 9000, "10.12.0.7")  # the in-cluster S3 endpoint's port
    for address in METADATA:
        for port in (80, 443, 9000):
            assert not egress_allows(policy, port, address), (address, port)
    assert not egress_allows(policy, 22, "10.12.0.7") and not egress_allows(policy, 5432, "10.12.0.8")
    assert not egress_allows(policy, 8081, "10.12.0.9")  # the operator by its pod only
    assert not egress_allows(policy, 80, "52.216.8.1")  # no plain http to the internet with an https S3


def test_the_gateway_takes_connections_on_its_port_only_and_reaches_the_api_server_and_s3_only():
    manifests = render([GATEWAY_VALUES])
    policy = one(manifests, "NetworkPolicy", GATEWAY, RELEASE_NAMESPACE)["spec"]
    pod_labels = one(manifests, "Deployment", GATEWAY)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]  # from anywhere, its port only
    assert egress_allows(policy, 443, "10.96.0.1") and egress_allows(policy, 6443, "172.18.0.2")  # the API server
    assert egress_allows(policy, 443, "52.216.8.1") and egress_allows(policy, 53, "10.96.0.10", protocol="UDP")
    for address in METADATA:
        assert not egress_allows(policy, 80, address) and not egress_allows(policy, 443, address), address
    assert not egress_allows(policy, 5432, "10.12.0.8") and not egress_allows(policy, 8081, "10.12.0.9")
    assert not find(render(), "NetworkPolicy", GATEWAY)  # no gateway, no policy for it


def test_the_gateway_may_take_connections_from_the_ingress_controller_only(tmp_path):
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"networkPolicy": {"gatewayIngressFrom": peers}}))
    policy = one(render([GATEWAY_VALUES, values]), "NetworkPolicy", GATEWAY)["spec"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}], "from": peers}]


def test_the_denied_addresses_are_configurable():
    policy = one(render(sets=["networkPolicy.deniedCidrs={100.100.100.200/32}"]), "NetworkPolicy",
                 f"{FULLNAME}-runners")["spec"]
    assert not egress_allows(policy, 443, "100.100.100.200")  # Alibaba Cloud's metadata address
    assert egress_allows(policy, 443, "169.254.169.254")  # what the values now leave open


@pytest.mark.parametrize("endpoint,ports", [
    ("http://minio.storage:9000", [443, 9000]), ("http://minio.storage", [443, 80]),
    ("https://s3.example.com", [443]), ("https://s3.example.com:8443", [443, 8443]),
])
def test_runner_pods_reach_a_custom_s3_endpoints_port(endpoint, ports):
    policy = one(render(sets=[f"s3.endpoint={endpoint}"]), "NetworkPolicy", f"{FULLNAME}-runners")["spec"]
    assert [p["port"] for p in policy["egress"][2]["ports"]] == ports


def test_extra_runner_egress_and_no_policies_when_disabled(tmp_path):
    values = tmp_path / "v.yaml"
    rule = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 7000, "protocol": "TCP"}]}
    values.write_text(yaml.safe_dump({"networkPolicy": {"extraRunnerEgress": [rule]}}))
    assert one(render([values]), "NetworkPolicy", f"{FULLNAME}-runners")["spec"]["egress"][-1] == rule
    assert not find(render(sets=["networkPolicy.enabled=false"]), "NetworkPolicy")


def test_the_crd_in_the_chart_is_the_generated_crd():
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    shipped = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert generated, "crds/ holds no CRD"
    assert shipped == generated, "copy crds/*.yaml into helm/img2img-operator/crds/ (`make crd` does)"
    for name in generated:
        assert filecmp.cmp(REPO / "crds" / name, CHART / "crds" / name, shallow=False), (
            f"helm/img2img-operator/crds/{name} differs from crds/{name}: run `make crd` (or cp crds/*.yaml helm/img2img-operator/crds/)")


# ---- the operator's pod ------------------------------------------------------------------------------------------
def test_the_operator_runs_two_replicas_rolled_under_the_restricted_profile():
    manifests = render()
    deployment = one(manifests, "Deployment", FULLNAME)
    spec = deployment["spec"]
    # a new standby comes up before an old replica goes; a drain takes one replica at a time
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    budget = one(manifests, "PodDisruptionBudget", FULLNAME, RELEASE_NAMESPACE)
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert not find(render(sets=["operator.replicas=1"]), "PodDisruptionBudget")
    # the Lease's holder is the pod's name
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/etc/img2img-operator"]]["configMap"]["name"] == f"{FULLNAME}-config"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "checksum/config" in spec["template"]["metadata"]["annotations"]


def test_every_object_carries_the_app_kubernetes_io_labels():
    for m in render([EXAMPLES / "values-gpu-cluster.yaml"]):
        labels = m["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "app.kubernetes.io/component"):
            assert key in labels, (m["kind"], m["metadata"]["name"], key)
        assert labels["app.kubernetes.io/managed-by"] == "Helm"  # never img2img-operator: that marks runner pods


def test_metrics_service_selects_the_operator_and_the_service_monitor_is_optional():
    manifests = render()
    service = one(manifests, "Service", f"{FULLNAME}-metrics")
    pod_labels = one(manifests, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert not find(manifests, "ServiceMonitor")
    monitor = one(render(sets=["metrics.serviceMonitor.enabled=true"]), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert not find(render(sets=["metrics.enabled=false"]), "Service", f"{FULLNAME}-metrics")


# ---- RBAC --------------------------------------------------------------------------------------------------------
def test_watching_every_namespace_grants_one_cluster_role_with_exactly_the_operators_verbs():
    manifests = render()
    assert [r["metadata"]["name"] for r in find(manifests, "Role")] == [f"{FULLNAME}-runners"]
    role = one(manifests, "ClusterRole", FULLNAME)
    assert rules_of(role) == OPERATOR_RULES
    binding = one(manifests, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"]["name"] == FULLNAME
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NAMESPACE}]


def test_watching_a_list_of_namespaces_grants_a_role_in_each_and_nothing_cluster_wide():
    manifests = render(sets=["watch.namespaces={team-a,team-b}"])
    assert not find(manifests, "ClusterRole") and not find(manifests, "ClusterRoleBinding")
    for ns in ("team-a", "team-b"):
        assert rules_of(one(manifests, "Role", FULLNAME, ns)) == OPERATOR_RULES
        binding = one(manifests, "RoleBinding", FULLNAME, ns)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NAMESPACE}]
    # nothing else of ours in the job namespaces: runners, their account and the catalog stay in the release's
    assert {m["metadata"].get("namespace") for m in manifests} - {None} == {"team-a", "team-b", RELEASE_NAMESPACE}
    assert {m["kind"] for m in manifests if m["metadata"].get("namespace") in ("team-a", "team-b")} == {
        "Role", "RoleBinding"}
    assert parse_config(operator_config(manifests)).namespaces == ["team-a", "team-b"]


@pytest.mark.parametrize("sets", [[], ["watch.namespaces={team-a}"], ["watch.namespaces={img2img-system}"]],
                         ids=["every namespace", "a list", "the release namespace"])
def test_runner_rights_are_a_role_in_the_release_namespace_only(sets):
    manifests = render(sets=sets)
    role = one(manifests, "Role", f"{FULLNAME}-runners")
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert rules_of(role) == RUNNER_NAMESPACE_RULES
    binding = one(manifests, "RoleBinding", f"{FULLNAME}-runners", RELEASE_NAMESPACE)
    assert binding["roleRef"]["name"] == f"{FULLNAME}-runners"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NAMESPACE}]
    for role in find(manifests, "Role") + find(manifests, "ClusterRole"):
        granted = rules_of(role)
        assert ("", "pods") not in granted or role["metadata"]["name"] == f"{FULLNAME}-runners"
    assert rules_of(one(render(sets=["runners.tokenSecret=my-key"]), "Role", f"{FULLNAME}-runners"))[
        ("", "secrets", "my-key")] == {"get"}


def test_the_leader_election_settings_reach_the_operator_and_name_the_lease_the_role_grants():
    manifests = render(sets=["leaderElection.leaseName=my-lease", "leaderElection.leaseDurationSeconds=30",
                             "leaderElection.renewDeadlineSeconds=20", "leaderElection.retryPeriodSeconds=4"])
    election = parse_config(operator_config(manifests)).leader_election
    assert (election.lease_name, election.lease_duration_seconds, election.renew_deadline_seconds,
            election.retry_period_seconds, election.label_pod) == ("my-lease", 30, 20, 4, True)
    rules = rules_of(one(manifests, "Role", f"{FULLNAME}-runners"))
    assert rules[("coordination.k8s.io", "leases", "my-lease")] == {"get", "update"}
    assert parse_config(operator_config(render())).leader_election.lease_name == FULLNAME


@pytest.mark.parametrize("values", [None, *EXAMPLE_VALUES], ids=lambda p: p.name if p else "defaults")
def test_the_runner_service_account_has_no_token_and_is_bound_to_nothing(values):
    manifests = render([values] if values else [])
    runner_accounts = [m for m in find(manifests, "ServiceAccount") if m["metadata"]["name"] == "img2img-runner"]
    assert runner_accounts
    for sa in runner_accounts:
        assert sa["automountServiceAccountToken"] is False
    for binding in find(manifests, "RoleBinding") + find(manifests, "ClusterRoleBinding"):
        for subject in binding["subjects"]:
            assert subject["name"] != "img2img-runner"


# ---- the gateway -------------------------------------------------------------------------------------------------
GATEWAY = f"{FULLNAME}-gateway"
GATEWAY_VALUES = EXAMPLES / "values-gpu-cluster.yaml"  # the gateway enabled: two endpoints, two keys, an Ingress
GATEWAY_JOB_RULES = {("img2img.dev", "img2imgjobs"): {"get", "list", "watch", "create", "patch"}}


def gateway_config(manifests: list[dict]) -> dict:
    return yaml.safe_load(one(manifests, "ConfigMap", GATEWAY)["data"]["config.yaml"])


def test_the_gateway_is_off_unless_enabled():
    assert not [m for m in render() if m["metadata"]["name"].startswith(GATEWAY)]


def test_the_rendered_gateway_configuration_is_one_the_gateway_accepts(tmp_path):
    import subprocess
    import sys

    from img2img_gateway.config import parse_config as parse_gateway_config

    manifests = render([GATEWAY_VALUES])
    data = one(manifests, "ConfigMap", GATEWAY)["data"]
    config = parse_gateway_config(gateway_config(manifests))
    assert {k: (e.namespace, e.output.value, e.defaults()) for k, e in config.endpoints.items()} == {
        "sdxl": ("img2img-jobs", "base64", {"gpuClass": "a100", "ttlSecondsAfterFinished": 1800}),
        "team-a-h100": ("team-a", "presigned", {"gpuClass": "h100"})}
    assert config.namespace == config.runnerNamespace == RELEASE_NAMESPACE and config.s3.bucket == "acme-img2img"
    (tmp_path / "catalog.yaml").write_text(data["catalog.yaml"])
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump({**gateway_config(manifests), "catalogPath": str(tmp_path / "catalog.yaml")}))
    gateway = Path(sys.executable).parent / "img2img-gateway"
    proc = subprocess.run([str(gateway), "--config", str(file), "--check-config"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_gateway_runs_its_console_script_under_the_restricted_profile_with_probes():
    import tomllib

    deployment = one(render([GATEWAY_VALUES]), "Deployment", GATEWAY)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert container["command"] == ["img2img-gateway"] and "img2img-gateway" in scripts
    assert container["image"] == "ghcr.io/img2img-operator/operator:0.1.0"  # the operator's image holds it
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    assert pod["serviceAccountName"] == GATEWAY


def test_the_gateway_may_touch_only_jobs_in_its_endpoints_namespaces_pools_and_its_key_secrets():
    manifests = render([GATEWAY_VALUES])
    gateway_roles = [r for r in find(manifests, "Role") if r["metadata"]["name"].startswith(GATEWAY)]
    assert {(r["metadata"]["name"], r["metadata"]["namespace"]) for r in gateway_roles} == {
        (GATEWAY, "img2img-jobs"), (GATEWAY, "team-a"), (f"{GATEWAY}-pools", RELEASE_NAMESPACE),
        (f"{GATEWAY}-keys", RELEASE_NAMESPACE)}
    for ns in ("img2img-jobs", "team-a"):
        assert rules_of(one(manifests, "Role", GATEWAY, ns)) == GATEWAY_JOB_RULES
    assert rules_of(one(manifests, "Role", f"{GATEWAY}-pools")) == {("img2img.dev", "runnerpools"): {"get", "list"}}
    [secrets, public_key] = one(manifests, "Role", f"{GATEWAY}-keys")["rules"]
    assert secrets == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                       "resourceNames": ["platform-runpod-key", "team-a-runpod-key"]}
    assert public_key == {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
                          "resourceNames": ["img2img-webhook-public-key"]}
    for binding in [b for b in find(manifests, "RoleBinding") if b["metadata"]["name"].startswith(GATEWAY)]:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": GATEWAY, "namespace": RELEASE_NAMESPACE}]
    cluster_wide = find(manifests, "ClusterRole") + find(manifests, "ClusterRoleBinding")
    assert not [c for c in cluster_wide if c["metadata"]["name"].startswith(GATEWAY)]


@pytest.mark.parametrize("sets", [[], ["webhooks.publicKeyConfigMap=hook-key"]], ids=["default", "named"])
def test_the_gateway_reads_the_webhook_public_key_where_the_operator_publishes_it(sets):
    from img2img_gateway.config import parse_config as parse_gateway_config

    manifests = render([GATEWAY_VALUES], sets=sets)
    hooks = parse_config(operator_config(manifests)).webhooks
    gateway = parse_gateway_config(gateway_config(manifests))
    assert (gateway.namespace, gateway.webhookPublicKeyConfigMap) == (hooks.namespace, hooks.public_key_config_map)
    readable = rules_of(one(manifests, "Role", f"{GATEWAY}-keys"))
    assert readable[("", "configmaps", hooks.public_key_config_map)] == {"get"}
    writable = rules_of(one(manifests, "Role", f"{FULLNAME}-runners"))
    assert writable[("", "configmaps", hooks.public_key_config_map)] == {"patch"}


def test_the_gateways_ingress_routes_v2_to_its_service_and_the_service_to_its_port():
    manifests = render([GATEWAY_VALUES])
    service = one(manifests, "Service", GATEWAY)
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    ingress = one(manifests, "Ingress", GATEWAY)
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "runpod.acme.example"
    assert rule["http"]["paths"] == [{"path": "/v2", "pathType": "Prefix", "backend": {
        "service": {"name": GATEWAY, "port": {"name": "http"}}}}]
    assert ingress["spec"]["tls"] == [{"hosts": ["runpod.acme.example"], "secretName": "runpod-acme-example-tls"}]
    assert not find(render([GATEWAY_VALUES], sets=["gateway.ingress.enabled=false"]), "Ingress")


# ---- values the chart refuses ------------------------------------------------------------------------------------
BAD_VALUES = {
    "empty bucket": ("s3: {bucket: ''}", ["/s3/bucket", "minLength"]),
    "bucket with capitals": ("s3: {bucket: My_Bucket}", ["/s3/bucket", "does not match pattern"]),
    "typo in a key": ("s3: {bucket: img2img, credentialSecret: x}", ["additional properties 'credentialSecret' not allowed"]),
    "negative maxConcurrent": ("gpuClasses: {a100: {maxConcurrent: -1}}", ["/gpuClasses/a100/maxConcurrent", "minimum"]),
    "gpu class name not a DNS label": ("gpuClasses: {A100_80GB: {}}", ["at '/gpuClasses'", "'A100_80GB' not allowed"]),
    "bad toleration effect": (
        "gpuClasses: {a100: {tolerations: [{key: nvidia.com/gpu, effect: NoScheduling}]}}",
        ["/gpuClasses/a100/tolerations/0/effect", "NoSchedule"]),
    "timeout of zero": ("defaults: {timeoutSeconds: 0}", ["/defaults/timeoutSeconds", "minimum"]),
    "runner as root": ("runner: {securityContext: {runAsUser: 0}}", ["/runner/securityContext/runAsUser", "minimum"]),
    "log level in lower case": ("logging: {level: info}", ["/logging/level", "INFO"]),
    "relative model cache path": ("runner: {modelCache: {mountPath: models}}", ["/runner/modelCache/mountPath"]),
    "namespace not a DNS label": ("watch: {namespaces: [Team_A]}", ["/watch/namespaces/0", "does not match pattern"]),
    "quantity that is no quantity": ("gpuClasses: {a100: {resources: {memory: lots}}}",
                                     ["/gpuClasses/a100/resources/memory", "does not match pattern"]),
    "pool without a class": ("pools: [{name: sdxl}]", ["/pools/0", "missing property 'gpuClass'"]),
    "pool name not a DNS label": ("pools: [{name: SDXL, gpuClass: default}]", ["/pools/0/name", "does not match"]),
    "pool ceiling of zero": ("pools: [{name: sdxl, gpuClass: default, maxRunners: 0}]",
                             ["/pools/0/maxRunners", "minimum"]),
    "typo in a pool": ("pools: [{name: sdxl, gpuClass: default, minready: 1}]",
                       ["additional properties 'minready' not allowed"]),
    "heartbeat of zero": ("runners: {heartbeatSeconds: 0}", ["/runners/heartbeatSeconds"]),
    "take wait over a minute": ("runners: {takeWaitSeconds: 90}", ["/runners/takeWaitSeconds", "maximum"]),
    "a reclaim policy that is neither Delete nor Retain": ("s3: {bucket: img2img, reclaimPolicy: Keep}",
                                                           ["/s3/reclaimPolicy", "must be one of"]),
    "presigned URLs for longer than S3 allows": ("s3: {bucket: img2img, presignExpirySeconds: 2592000}",
                                                 ["/s3/presignExpirySeconds", "maximum"]),
    "typo in a policy": ("policy: {default: {maxPriorty: 5}}", ["additional properties 'maxPriorty' not allowed"]),
    "policy of a namespace not a DNS label": ("policy: {namespaces: {Team_A: {maxPriority: 5}}}",
                                              ["at '/policy/namespaces'", "'Team_A' not allowed"]),
    "gateway output mode unknown": ("gateway: {endpoints: {sdxl: {namespace: team-a, output: png}}}",
                                    ["/gateway/endpoints/sdxl/output", "base64"]),
    "gateway endpoint without namespace": ("gateway: {endpoints: {sdxl: {output: s3}}}",
                                           ["/gateway/endpoints/sdxl", "missing property 'namespace'"]),
    "gateway key without endpoints": ("gateway: {keys: [{secret: k}]}", ["/gateway/keys/0", "'endpoints'"]),
}

TEMPLATE_REFUSALS = {
    "two classes, no default": (
        "gpuClasses: {a100: {}, h100: {}}", "defaultGpuClass: needed when there is more than one GPU class"),
    "default class that does not exist": (
        "gpuClasses: {a100: {}}\ndefaultGpuClass: l4", 'defaultGpuClass: "l4" is not one of gpuClasses (a100)'),
    "two model cache sources": (
        "runner: {modelCache: {persistentVolumeClaim: models, hostPath: /data/models}}",
        "runner.modelCache: set persistentVolumeClaim or hostPath, not both"),
    "no catalog": ("catalog: {create: false}", "catalog.configMapName: needed with catalog.create: false"),
    "pool of an unknown class": (
        "pools: [{name: sdxl, gpuClass: h100}]", 'pools[0].gpuClass: "h100" is not one of gpuClasses (default)'),
    "pool floor above its ceiling": (
        "pools: [{name: sdxl, gpuClass: default, minReady: 5, maxRunners: 2}]",
        "pools[0].minReady: 5 is above maxRunners (2)"),
    "two pools of one name": (
        "pools: [{name: sdxl, gpuClass: default}, {name: sdxl, gpuClass: default}]",
        'pools[1].name: "sdxl" is used by another pool'),
    "gateway without endpoints": ("gateway: {enabled: true}", "gateway.endpoints: at least one endpoint"),
}


def _template_error(values_text: str, tmp_path: Path) -> str:
    values = tmp_path / "values.yaml"
    values.write_text(values_text + "\n")
    proc = helm("template", "x", str(CHART), "-f", str(values), check=False)
    assert proc.returncode != 0, f"helm accepted:\n{values_text}"
    return proc.stderr


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_the_schema_refuses_wrong_values_naming_the_value(case, tmp_path):
    values_text, expected = BAD_VALUES[case]
    error = _template_error(values_text, tmp_path)
    assert "values don't meet the specifications of the schema" in error
    for fragment in expected:
        assert fragment in error, error


@pytest.mark.parametrize("case", list(TEMPLATE_REFUSALS))
def test_the_chart_refuses_inconsistent_values_with_a_reason(case, tmp_path):
    values_text, expected = TEMPLATE_REFUSALS[case]
    assert expected in _template_error(values_text, tmp_path)


def test_the_schema_is_valid_json_schema():
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"])
