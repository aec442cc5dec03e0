"""The one-line error every command ends with when something the user can act on fails."""

from __future__ import annotations

import sys
from typing import Any


class ClientError(Exception):
    """A failure the user can act on; its message is one line, printed after ``img2img <command>:``."""


def one_line(value: Any) -> str:
    return " ".join(str(value).split())


def fail(command: str, exc: ClientError) -> int:
    print(f"img2img {command}: {exc}", file=sys.stderr)
    return 1
