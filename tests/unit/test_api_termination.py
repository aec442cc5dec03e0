"""The termination message: written by the runner through the model, read back by the operator through it."""

from __future__ import annotations

import json

import pytest

from img2img.api.exitcodes import ExitCode
from img2img.api.termination import MAX_MESSAGE_BYTES, RunnerFailure, TerminationMessage

RESULT = "s3://img2img/jobs/ns/job/0b5f3c1e/result.json"


def test_a_success_reads_back_as_written():
    written = TerminationMessage(result=RESULT, startedAt=1732467600000, modelsLoadedAt=1732467601000,
                                 finishedAt=1732467605000, modelLoadTime=1000, inferenceTime=3500, uploadTime=500)
    text = written.dump()
    # the wire form of docs/architecture.md: camelCase keys, error null
    assert json.loads(text) == {"result": RESULT, "startedAt": 1732467600000, "modelsLoadedAt": 1732467601000,
                                "finishedAt": 1732467605000, "modelLoadTime": 1000, "inferenceTime": 3500,
                                "uploadTime": 500, "error": None}
    assert TerminationMessage.parse(text) == written


def test_a_failure_names_its_exit_code_by_name_and_its_field():
    failure = RunnerFailure(code=ExitCode.BAD_INPUT, field="input.payload.steps", message="must be at least 1")
    text = TerminationMessage(startedAt=1, finishedAt=2, error=failure).dump()
    assert json.loads(text)["error"] == {"code": "BAD_INPUT", "field": "input.payload.steps",
                                         "message": "must be at least 1"}
    read = TerminationMessage.parse(text)
    assert read.error.code is ExitCode.BAD_INPUT
    assert str(read.error) == "input.payload.steps: must be at least 1"


@pytest.mark.parametrize("filler", ["x", "é", "\"", "\n", "\x01", "画"])  # 1 to 6 bytes once written as JSON
def test_an_over_long_error_is_cut_to_the_kubelets_limit(filler):
    message = "CUDA kernel failed at step 3: " + filler * 20_000
    failure = RunnerFailure(code=ExitCode.CRASH, field="input.payload.alwayson_scripts.controlnet.args[0].module",
                            message=message)
    text = TerminationMessage(result=None, startedAt=1, finishedAt=2, error=failure).dump()
    assert MAX_MESSAGE_BYTES - 6 < len(text.encode()) <= MAX_MESSAGE_BYTES == 4096  # as much as fits is kept
    read = TerminationMessage.parse(text)
    # the head is what says what happened; the cut is marked; code, field and times survive
    assert read.error.message.startswith("CUDA kernel failed at step 3: " + filler * 100)
    assert read.error.message.endswith("…")
    assert read.error.code is ExitCode.CRASH and read.error.field == failure.field
    assert (read.startedAt, read.finishedAt) == (1, 2)


def test_a_message_that_fits_is_not_cut():
    failure = RunnerFailure(code=ExitCode.MODEL, message="m" * 3000)
    assert TerminationMessage.parse(TerminationMessage(error=failure).dump()).error.message == "m" * 3000


@pytest.mark.parametrize("text", [
    None, "", "   ",
    "Traceback (most recent call last):\n  File \"main.py\"\nRuntimeError: boom",  # a log tail (FallbackToLogsOnError)
    '"just a string"', "[1, 2]", "12", '{"result": "s3://b/k", "startedAt": 1',  # not an object, or cut short
])
def test_text_that_is_not_a_message_parses_to_none(text):
    assert TerminationMessage.parse(text) is None


def test_fields_that_do_not_fit_are_left_out_and_the_rest_kept():
    text = json.dumps({"result": RESULT, "startedAt": "soon", "finishedAt": 1732467605000, "someNewField": [1],
                       "error": {"code": "NOT_A_CODE", "message": "from a newer runner"}})
    read = TerminationMessage.parse(text)
    assert read.result == RESULT and read.finishedAt == 1732467605000
    assert read.startedAt is None and read.error is None


def test_an_exit_code_may_be_given_by_number():
    read = TerminationMessage.parse('{"error": {"code": 3, "message": "unknown model"}}')
    assert read.error.code is ExitCode.MODEL
