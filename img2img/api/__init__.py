"""The job API: the one place the operator, the runner and the CLI take the job's shape from.

No torch, no kopf: pydantic and Pillow only.
"""

from img2img.api.controlnet import ControlNetUnit
from img2img.api.envelope import RunPodInput, RunPodRequest
from img2img.api.errors import Problem, problems
from img2img.api.job import Img2ImgJob, Img2ImgJobSpec, JobProblems, LoadedJob, load_job
from img2img.api.payload import Img2ImgPayload
from img2img.api.status import TERMINAL, JobState, JobStatus
from img2img.api.txt2img import Txt2ImgPayload

__all__ = [
    "ControlNetUnit", "Img2ImgJob", "Img2ImgJobSpec", "Img2ImgPayload", "JobProblems", "JobState", "JobStatus",
    "LoadedJob", "Problem", "RunPodInput", "RunPodRequest", "TERMINAL", "Txt2ImgPayload", "load_job", "problems",
]
