"""What a figure was measured on: the machine and the versions of what ran."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict:
    """Cores (usable by this process), memory, CPU model, OS and the versions of the Python packages that matter."""
    return {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(memory_gib(), 1),
        "cpu": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in load_average()],
        "python": sys.version.split()[0],
        "torch": package_version("torch"),
        "diffusers": package_version("diffusers"),
        "transformers": package_version("transformers"),
        "kopf": package_version("kopf"),
    }


def shown_path(path: object) -> str:
    """A path as a report shows it: under the checkout relative to it, under the home folder as ~/... (no machine's
    own paths in committed figures)."""
    text = str(path)
    repo = str(Path(__file__).resolve().parents[1])
    home = str(Path.home())
    for marker in ("site-packages/", ".gpu-site/"):
        if marker in text:
            return text.split(marker, 1)[1]
    if text.startswith(repo + "/"):
        return text[len(repo) + 1:]
    if text.startswith(home + "/"):
        return "~/" + text[len(home) + 1:]
    return text
