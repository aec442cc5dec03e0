"""The runner's entrypoint reports every outcome through its termination message (img2img.api.termination)."""

from __future__ import annotations

import pytest

from img2img.api.exitcodes import ExitCode
from img2img.api.termination import MAX_MESSAGE_BYTES, TerminationMessage
from img2img_runner import main as runner_main


@pytest.fixture
def termination_log(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("IMG2IMG_TERMINATION_LOG", str(path))
    monkeypatch.setattr(runner_main, "setup_logging", lambda context: None)  # keep pytest's log capture
    return path


def test_a_runner_without_its_environment_says_what_is_missing(termination_log, monkeypatch):
    monkeypatch.delenv("IMG2IMG_JOB_INPUT", raising=False)
    monkeypatch.delenv("IMG2IMG_CATALOG", raising=False)
    assert runner_main.main([]) == ExitCode.CRASH
    report = TerminationMessage.parse(termination_log.read_text())
    assert report.error.code is ExitCode.CRASH
    assert "IMG2IMG_JOB_INPUT and IMG2IMG_CATALOG" in report.error.message
    assert report.startedAt is not None and report.finishedAt is not None and report.result is None


def test_a_long_error_still_reaches_the_operator_within_the_kubelets_limit(termination_log, tmp_path, monkeypatch,
                                                                          capsys):
    # a file name far past the file system's limit: the OS error repeats it, so the message runs to ~10 KB
    location = str(tmp_path / ("input-" * 1000 + ".json"))
    monkeypatch.setenv("IMG2IMG_JOB_INPUT", location)
    monkeypatch.setenv("IMG2IMG_CATALOG", str(tmp_path / "catalog.yaml"))
    assert runner_main.main([]) == ExitCode.BAD_INPUT
    written = termination_log.read_bytes()
    assert len(written) <= MAX_MESSAGE_BYTES
    report = TerminationMessage.parse(written.decode())
    assert report.error.code is ExitCode.BAD_INPUT and report.error.field == "input"
    assert report.error.message.startswith(f"cannot read the job input {tmp_path}/input-input-")
    assert report.error.message.endswith("…")
    assert capsys.readouterr().out.strip() == written.decode()  # the same words in the pod's log


def test_a_job_input_that_is_not_json_is_bad_input(termination_log, tmp_path, monkeypatch):
    job = tmp_path / "input.json"
    job.write_text("Traceback: not a job")
    monkeypatch.setenv("IMG2IMG_JOB_INPUT", str(job))
    monkeypatch.setenv("IMG2IMG_CATALOG", str(tmp_path / "catalog.yaml"))
    assert runner_main.main([]) == ExitCode.BAD_INPUT
    report = TerminationMessage.parse(termination_log.read_text())
    assert report.error.field == "input" and "is not JSON" in report.error.message
