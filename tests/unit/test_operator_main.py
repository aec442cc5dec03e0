"""main: the kopf wiring (stateless, nothing written on objects), the command line, logging, metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from img2img_operator.main import Runtime, build_registry, build_settings, main
from img2img_operator.metrics import Metrics

from operator_samples import CONFIG, RUNNER_KEY, config, job_body, runner_pod_body

REPO = Path(__file__).resolve().parents[2]


def test_kopf_neither_scans_nor_peers():
    settings = build_settings(CONFIG)
    assert settings.peering.standalone  # one replica acts through the Lease, not through kopf's peering
    assert settings.scanning.disabled  # no cluster-wide list of namespaces or CRDs (the chart grants none)


def test_registry_has_only_stateless_handlers():
    registry = build_registry(Runtime(CONFIG))
    # no on.create/update/delete, no timers or daemons: kopf writes nothing on a job (no diff-base copy of the
    # spec, no progress, no finalizer)
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    # no resource at all: jobs, runner pods and pools are watched by the runtime's own reflectors (kopf would list
    # the jobs unpaged and hold each one's whole body)
    assert not registry._watching.get_all_handlers()
    assert not registry._indexing.get_all_handlers()
    activities = {h.activity.value for h in registry._activities.get_all_handlers()}
    assert {"startup", "cleanup", "probe", "authentication"} <= activities


def test_events_feed_the_cache_and_wake_the_dispatcher():
    from img2img_operator.dispatcher import Dispatcher
    from img2img_operator.leases import LeaseTable
    from img2img_operator.runners import Registry

    runtime = Runtime(CONFIG)
    runtime.key = RUNNER_KEY  # as startup reads it
    pool = {"apiVersion": "img2img.dev/v1alpha1", "kind": "RunnerPool",
            "metadata": {"name": "warm", "namespace": "img2img-system", "resourceVersion": "5"},
            "spec": {"gpuClass": "l4"}}

    async def scenario():
        # the dispatcher as startup makes it, asleep between passes; nothing it talks to is reached before a pass
        runtime.dispatcher = Dispatcher(CONFIG, runtime.cache, kube=None, staging=None, metrics=runtime.metrics,
                                        leases=LeaseTable(), registry=Registry(), key=b"k", webhooks=None)
        feeds = [  # what the reflectors call
            lambda: runtime.cache.job_event("ADDED", job_body(None)),
            lambda: runtime.cache.pod_event("ADDED", runner_pod_body("l4-aaaaa")),
            lambda: runtime.cache.pool_event("ADDED", pool),
        ]
        for feed in feeds:
            runtime.dispatcher.wake.clear()
            sleeping = asyncio.create_task(runtime.dispatcher.wake.wait())
            await asyncio.sleep(0)
            assert not sleeping.done()
            feed()
            await asyncio.wait_for(sleeping, timeout=5)  # woken by the event, not by its tick

    asyncio.run(scenario())
    (job,) = runtime.cache.snapshot()
    assert job.name == "seed" and [p.name for p in runtime.cache.pods()] == ["l4-aaaaa"]
    assert [p["metadata"]["name"] for p in runtime.cache.pools()] == ["warm"]


def test_the_runner_namespaces_pods_are_runners_only_if_this_operator_made_them(caplog):
    runtime = Runtime(CONFIG)
    runtime.key = RUNNER_KEY
    foreign = runner_pod_body("l4-fake1")  # the runner labels, no token of its name
    foreign["spec"]["containers"][0]["env"] = []
    another_key = runner_pod_body("l4-fake2")  # a token signed by someone else's key
    another_key["spec"]["containers"][0]["env"][0]["value"] = "l4-fake2.0123"
    runtime.cache.replace_pods([runner_pod_body("l4-aaaaa"), foreign], list_rv=10)
    for _ in range(2):
        runtime.cache.pod_event("ADDED", another_key)
    assert [p.name for p in runtime.cache.pods()] == ["l4-aaaaa"]
    warnings = [r.getMessage() for r in caplog.records if "did not make it" in r.getMessage()]
    assert len(warnings) == 2 and "img2img-system/l4-fake1" in warnings[0]  # once per pod


def test_health_reports_a_standby_as_alive_and_a_leaders_dead_dispatcher():
    from img2img_operator.elector import Elector

    runtime = Runtime(CONFIG)
    assert runtime.health() == {"role": "starting"}
    runtime.elector = Elector(kube=None, config=CONFIG.leader_election, namespace="img2img-system", identity="b")
    runtime.elector.holder = "a"
    assert runtime.health() == {"role": "standby", "leader": "a"}
    runtime.elector.leading = True
    assert runtime.health() == {"role": "leader", "dispatcher": "starting"}

    async def scenario():
        class D:
            synced, last_pass = True, None

        async def boom():
            raise RuntimeError("x")

        runtime.dispatcher = D()
        runtime.task = asyncio.create_task(boom())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="dispatcher stopped"):
            runtime.health()

    asyncio.run(scenario())


def test_bad_configuration_exits_2_with_the_reason(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("s3: {}\n")
    assert main(["--config", str(path)]) == 2
    assert "s3.bucket: Field required" in capsys.readouterr().err


def test_check_config_prints_the_effective_configuration(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("s3: {bucket: b}\n")
    proc = subprocess.run([sys.executable, "-m", "img2img_operator.main", "--config", str(path), "--check-config"],
                          capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    assert data["s3"]["bucket"] == "b" and data["defaults"]["retries"] == 2


def test_operator_never_imports_torch_or_diffusers():
    code = ("import sys, img2img_operator.main, img2img_operator.dispatcher; "
            "print(any(m in sys.modules for m in ('torch', 'diffusers', 'img2img_runner')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_operator_command_runs_without_any_kubernetes_client_library(tmp_path):
    """The entry point keeps kopf from loading the sync client and kubernetes_asyncio (about 40 and 70 MB the
    operator never uses: it talks to the API with aiohttp)."""
    path = tmp_path / "c.yaml"
    path.write_text("s3: {bucket: b}\n")
    code = ("import sys; sys.argv = ['img2img-operator', '--config', sys.argv[1], '--check-config']\n"
            "from img2img_operator.entry import main\n"
            "assert main() == 0\n"
            "import kopf, img2img_operator.main\n"
            "print([m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kubernetes_asyncio')"
            " and sys.modules[m] is not None], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["s3"]["bucket"] == "b"
    assert proc.stderr.strip() == "[]"


def test_metrics_count_what_status_writes_mean():
    m = Metrics()
    m.observe_status_write({"status": "IN_PROGRESS"}, {"status": "COMPLETED", "delayTime": 1500, "executionTime": 3000})
    m.observe_status_write({"status": "IN_PROGRESS"},
                           {"status": "IN_QUEUE", "runnerPod": None, "lastFailure": {"reason": "Evicted"}})
    m.observe_status_write({"status": "IN_PROGRESS"}, {"status": "FAILED", "lastFailure": {"reason": "ModelError"}})
    m.observe_jobs([("COMPLETED", "l4"), ("IN_QUEUE", "l4")], {"l4": 1})
    text = m.render().decode()
    assert 'img2img_jobs_finished_total{state="COMPLETED"} 1.0' in text
    assert 'img2img_job_retries_total{reason="Evicted"} 1.0' in text
    assert 'img2img_job_failures_total{reason="ModelError"} 1.0' in text
    assert "img2img_job_execution_seconds_count 1.0" in text
    assert 'img2img_jobs{gpu_class="l4",state="COMPLETED"} 1.0' in text
    assert 'img2img_queue_depth{gpu_class="l4"} 1.0' in text
    assert 'img2img_api_writes_total{kind="status"} 3.0' in text
    m.observe_jobs([], {})
    assert 'img2img_jobs{gpu_class="l4",state="COMPLETED"} 0.0' in m.render().decode()


def test_metrics_of_pools_runners_and_assignments():
    m = Metrics()
    m.observe_pools({("warm", "idle"): 2, ("warm", "busy"): 1, ("l4", "starting"): 1}, {"warm": 3})
    m.assigned("warm", True, 0.08)
    m.assigned("l4", False, 12.0)
    text = m.render().decode()
    assert 'img2img_runners{pool="warm",state="idle"} 2.0' in text
    assert 'img2img_runners{pool="l4",state="starting"} 1.0' in text
    assert 'img2img_jobs_waiting{pool="warm"} 3.0' in text
    assert 'img2img_assignments_total{pool="warm",warm="true"} 1.0' in text
    assert 'img2img_assignments_total{pool="l4",warm="false"} 1.0' in text
    assert 'img2img_job_delay_seconds_bucket{le="0.1",warm="true"} 1.0' in text
    assert 'img2img_job_delay_seconds_bucket{le="10.0",warm="false"} 0.0' in text
    m.observe_pools({}, {})  # the pool's runners went: its gauges read 0, not their last values
    text = m.render().decode()
    assert 'img2img_runners{pool="warm",state="idle"} 0.0' in text and 'img2img_jobs_waiting{pool="warm"} 0.0' in text


def test_status_json_patch_keeps_nulls_inside_values_and_locks_on_the_resource_version():
    from img2img_operator.kube import status_json_patch

    ops = status_json_patch({"status": "COMPLETED", "output": {"parameters": {"init_images": None}},
                             "runnerPod": None, "queuePosition": None},
                            {"status": "IN_PROGRESS", "runnerPod": "x-1"}, "42")
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
        {"op": "replace", "path": "/metadata/resourceVersion", "value": "42"},
        {"op": "add", "path": "/status/status", "value": "COMPLETED"},
        {"op": "add", "path": "/status/output", "value": {"parameters": {"init_images": None}}},
        {"op": "remove", "path": "/status/runnerPod"},
    ]
    first = status_json_patch({"status": "IN_QUEUE", "queuePosition": None}, None, None)
    assert first == [{"op": "add", "path": "/status", "value": {"status": "IN_QUEUE"}}]
