"""config `runners:`: where runner pods live, how they reach the operator, leases, the implicit pool."""

from __future__ import annotations

import pytest
from img2img_operator.config import ConfigError, parse_config


def runners(**section):
    return parse_config({"s3": {"bucket": "b"}, "runners": section}).runners


def test_defaults(monkeypatch):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    cfg = parse_config({"s3": {"bucket": "b"}}).runners
    assert cfg.namespace == "img2img-system"
    assert cfg.port == 8081 and cfg.url == "http://127.0.0.1:8081"  # the local stack: runners on this machine
    assert cfg.token_secret == "img2img-runner-token" and cfg.model_store_secret is None
    assert (cfg.lease_seconds, cfg.heartbeat_seconds, cfg.take_wait_seconds) == (15, 3, 25)
    assert (cfg.implicit_pool.idle_seconds, cfg.implicit_pool.max_runners) == (60, 8)


def test_the_namespace_defaults_to_the_operators_own(monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "gpu-system")
    assert runners().namespace == "gpu-system"
    assert runners(namespace="img2img-runners").namespace == "img2img-runners"


def test_a_cluster_sets_the_services_url_and_its_own_sizes():
    cfg = runners(operatorUrl="http://img2img-operator-runners.img2img-system.svc:8081", port=9000,
                  leaseSeconds=30, heartbeatSeconds=5, takeWaitSeconds=50, modelStoreSecret="model-store",
                  implicitPool={"idleSeconds": 0, "maxRunners": 2})
    assert cfg.url == "http://img2img-operator-runners.img2img-system.svc:8081" and cfg.port == 9000
    assert (cfg.lease_seconds, cfg.heartbeat_seconds, cfg.take_wait_seconds) == (30, 5, 50)
    assert cfg.model_store_secret == "model-store"
    assert (cfg.implicit_pool.idle_seconds, cfg.implicit_pool.max_runners) == (0, 2)


@pytest.mark.parametrize("section,fragment", [
    ({"heartbeatSeconds": 15}, "heartbeatSeconds (15) must be below leaseSeconds (15)"),
    ({"leaseSeconds": 0}, "runners.leaseSeconds: Input should be greater than 0"),
    ({"takeWaitSeconds": 61}, "runners.takeWaitSeconds: Input should be less than or equal to 60"),
    ({"operatorUrl": "img2img-operator-runners:8081"}, "runners.operatorUrl: String should match pattern"),
    ({"namespace": "GPU_System"}, "runners.namespace: String should match pattern"),
    ({"port": 0}, "runners.port: Input should be greater than or equal to 1"),
    ({"tokenSecret": ""}, "runners.tokenSecret: String should have at least 1 character"),
    ({"implicitPool": {"maxRunners": 0}}, "runners.implicitPool.maxRunners: Input should be greater than or equal"),
    ({"implicitPool": {"idleSecond": 5}}, "runners.implicitPool.idleSecond: Extra inputs are not permitted"),
    ({"leaseSecond": 5}, "runners.leaseSecond: Extra inputs are not permitted"),
])
def test_bad_runners_section_names_the_key(section, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config({"s3": {"bucket": "b"}, "runners": section}, "config.yaml")
    assert fragment in str(err.value) and "config.yaml" in str(err.value)
