"""The executor's configuration file."""

from __future__ import annotations

from img2img.local.executor.config import Config


def test_config_accepts_the_stack_camel_case_and_snake_case():
    cfg = Config.from_dict({
        "nodeName": "n", "capacity": {"cpu": 2, "nvidia.com/gpu": 1}, "labels": {"a": "b"},
        "stateDir": "/tmp/x", "images": {"img2img/runner:*": {"pathPrepend": ["/v/bin"]}, "plain:*": "/p/bin",
                                         "e:*": {"path_prepend": "/e", "env": {"A": 1}}},
        "taints": [{"key": "k", "effect": "NoSchedule"}], "schedulerName": "s", "hostPorts": ["9000", 9001],
    })
    assert cfg.node_name == "n" and cfg.capacity == {"cpu": "2", "nvidia.com/gpu": "1"}
    assert cfg.images["img2img/runner:*"]["path_prepend"] == ["/v/bin"]
    assert cfg.images["plain:*"]["path_prepend"] == ["/p/bin"]
    assert cfg.images["e:*"] == {"path_prepend": ["/e"], "env": {"A": "1"}, "inherit": [], "paths": []}
    assert cfg.scheduler_name == "s" and cfg.taints[0]["key"] == "k"
    assert cfg.host_ports == [9000, 9001]
    default = Config.from_dict({})
    assert default.node_name == "local-gpu-0" and default.capacity["nvidia.com/gpu"] == "1"
