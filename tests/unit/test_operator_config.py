"""config: the operator's configuration file (rendered by the Helm chart)."""

from __future__ import annotations

import pytest
from img2img_operator.config import ConfigError, load_config, parse_config


def test_minimal_file_gets_every_default():
    cfg = parse_config({"s3": {"bucket": "img2img"}})
    assert cfg.all_namespaces and cfg.default_class == "default"
    assert cfg.gpu_classes["default"].resources == {"nvidia.com/gpu": 1}
    assert cfg.runner.command == ["img2img-runner"] and cfg.runner.service_account_name == "img2img-runner"
    assert cfg.runner.model_cache is None and cfg.s3.credentials_secret is None
    assert (cfg.defaults.priority, cfg.defaults.timeout_seconds, cfg.defaults.retries) == (0, 3600, 2)
    assert cfg.defaults.ttl_seconds_after_finished is None
    assert (cfg.metrics_port, cfg.health_port) == (9090, 8080)
    election = cfg.leader_election  # client-go's defaults
    assert (election.lease_name, election.lease_duration_seconds, election.renew_deadline_seconds,
            election.retry_period_seconds, election.label_pod) == ("img2img-operator", 15, 10, 2, False)


def test_the_local_stacks_configuration_loads():
    from img2img.local.components import operator_config

    data = operator_config(s3_endpoint="http://127.0.0.1:9000", bucket="img2img", catalog=None, health_port=18080,
                           metrics_port=19090, runners_port=18443, gpus=1, overrides={"queue": {"maxConcurrent": 2}})
    cfg = parse_config(data)
    assert cfg.gpu_classes["local"].max_concurrent == 1 and cfg.queue.max_concurrent == 2
    assert cfg.runner.catalog_path is None
    # its one operator has nothing to restart it: an event loop stalled for tens of seconds on a loaded machine must
    # not make it give up leading (and exit)
    assert cfg.leader_election.renew_deadline_seconds >= 30


@pytest.mark.parametrize("data,fragment", [
    ({}, "s3: Field required"),
    ({"s3": {"bucket": "b"}, "gpuClasses": {"a": {}, "b": {}}}, "defaultGpuClass: needed"),
    ({"s3": {"bucket": "b"}, "gpuClasses": {"a": {}}, "defaultGpuClass": "c"}, "'c' is not one of gpuClasses"),
    ({"s3": {"bucket": "b"}, "gpuClasses": {}}, "at least one GPU class"),
    ({"s3": {"bucket": "b", "credentialSecret": "x"}}, "s3.credentialSecret: Extra inputs are not permitted"),
    ({"s3": {"bucket": "b"}, "defaults": {"timeoutSeconds": 0}}, "defaults.timeoutSeconds"),
    ({"s3": {"bucket": "b"}, "runner": {"modelCache": {"persistentVolumeClaim": "m", "hostPath": "/m"}}},
     "not both"),
    ({"s3": {"bucket": "b"}, "logging": {"level": "info"}}, "logging.level"),
    ({"s3": {"bucket": "b"}, "leaderElection": {"renewDeadlineSeconds": 20}},
     "leaderElection: Value error, need leaseDurationSeconds (15) > renewDeadlineSeconds (20) > retryPeriodSeconds (2)"),
    ({"s3": {"bucket": "b"}, "leaderElection": {"retryPeriodSeconds": 10}}, "renewDeadlineSeconds (10) > "
     "retryPeriodSeconds (10): a leader must stop before a standby may take over"),
    ([1, 2], "expected a mapping"),
])
def test_bad_configuration_names_the_key(data, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "config.yaml")
    assert fragment in str(err.value) and "config.yaml" in str(err.value)


def test_load_from_path_or_environment(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("s3: {bucket: from-file}\nnamespaces: [team-a]\n")
    assert load_config(path).s3.bucket == "from-file"
    monkeypatch.setenv("IMG2IMG_OPERATOR_CONFIG", str(path))
    assert load_config().namespaces == ["team-a"]
    monkeypatch.delenv("IMG2IMG_OPERATOR_CONFIG")
    with pytest.raises(ConfigError, match="--config"):
        load_config()
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("s3: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_s3_locations():
    cfg = parse_config({"s3": {"bucket": "b", "prefix": "/jobs/", "allowedReadPrefixes": {"*": ["s3://x/"]}}})
    assert cfg.s3.job_prefix("ns", "job", "u") == "s3://b/jobs/ns/job/u/"
    assert cfg.s3.job_prefix("ns", "job", "u", bucket="o", prefix="") == "s3://o/ns/job/u/"
    assert cfg.s3.allowed_reads("ns") == ["s3://b/jobs/ns/", "s3://b/uploads/ns/", "s3://x/"]


def test_retry_back_off():
    cfg = parse_config({"s3": {"bucket": "b"}, "retryBackoff": {"initialSeconds": 5, "maxSeconds": 30}})
    assert [cfg.retry_backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 30, 30]
