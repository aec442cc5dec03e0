"""`make bench` with some benchmarks skipped: their sections come from their last run, saying when that was."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import run_all  # noqa: E402

GATEWAY = {"parameters": {"jobs": 50, "json": "/tmp/tmpabc.json"}, "machine": {"cores": 2},
           "native": {"seconds": 1.0}}


def test_a_skipped_benchmark_is_rendered_from_its_last_run_with_its_date(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "LAST", tmp_path / "last")
    monkeypatch.setattr(run_all, "kube_apiserver_version", lambda: "v0")  # not the stack's binaries here
    rendered: dict = {}
    monkeypatch.setattr(run_all, "write_markdown", lambda path, info, scale, overhead, failures, argv, pools,
                        gateway: rendered.update(gateway=gateway, scale=scale))
    run_all.keep_last("gateway", GATEWAY, {"load_average_at_start": [0.25, 0.5, 0.75]})

    run_all.main(["--skip-scale", "--skip-pools", "--skip-overhead", "--skip-gateway",
                  "--output", str(tmp_path / "B.md")])

    assert rendered["scale"] is None  # never run: nothing to show
    assert rendered["gateway"]["native"] == {"seconds": 1.0}
    note = run_all.taken_note(rendered["gateway"])
    assert "not rerun" in note[0] and "0.25" in note[0]


def test_kept_figures_hold_no_machine_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "LAST", tmp_path)
    run_all.keep_last("gateway", GATEWAY, {"load_average_at_start": [0.0, 0.0, 0.0]})

    kept = run_all.last_run("gateway")

    assert kept["parameters"] == {"jobs": 50}
    assert "/tmp/" not in (tmp_path / "gateway.json").read_text()


def test_a_fresh_run_is_shown_without_a_note():
    assert run_all.taken_note(GATEWAY) == []
