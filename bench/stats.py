"""Summaries of measured samples: percentiles and their one-line rendering; what every stack benchmark shares."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable, Iterable


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary(values: Iterable[float]) -> dict[str, float]:
    """n, min, p50, p95, p99, max and mean of the samples (NaN when there are none)."""
    v = sorted(values)
    return {
        "n": len(v),
        "min": v[0] if v else math.nan,
        "p50": percentile(v, 50),
        "p95": percentile(v, 95),
        "p99": percentile(v, 99),
        "max": v[-1] if v else math.nan,
        "mean": sum(v) / len(v) if v else math.nan,
    }


def fmt(s: dict[str, float], unit: str = "ms", digits: int = 0) -> str:
    if not s.get("n"):
        return "no samples"
    f = lambda x: f"{x:.{digits}f}"  # noqa: E731
    return (f"p50 {f(s['p50'])} / p95 {f(s['p95'])} / p99 {f(s['p99'])} {unit} "
            f"(min {f(s['min'])}, max {f(s['max'])}, n={s['n']})")


def publish(results: dict, print_report: Callable[[dict], None], json_path: str | None) -> int:
    """A benchmark's last step: its report on the terminal, and every figure as JSON when asked (for run_all)."""
    print_report(results)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2, default=str))
    return 0


def stack_run_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every benchmark on the embedded stack shares: where its state goes, and its figures' file."""
    p.add_argument("--state-dir", help="stack state folder (default: a temporary one, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the temporary state folder (logs) at the end")
    p.add_argument("--json", help="also write every figure to this file")
    return p
