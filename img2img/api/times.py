"""Instants as the API writes and reads them: the one formatter and the parsers for the operator, runner and CLI.

The status writes RFC 3339 with milliseconds, UTC (``2026-01-01T00:00:05.123Z``); Kubernetes writes whole seconds
(``2026-01-01T00:00:05Z``); a client may write an offset (``+01:00``) or a number of ms since the epoch.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def format_time_ms(ms: int) -> str:
    """ms since the epoch → RFC 3339 with milliseconds, UTC (``2026-01-01T00:00:00.123Z``)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_rfc3339(value: str | None) -> datetime | None:
    """An RFC 3339 instant (``Z``, ``z`` or an offset; any fraction) → a timezone-aware datetime; None for None or "".

    ValueError when the text is not an instant. Without an offset the instant is taken as UTC.
    """
    if not value:
        return None
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def parse_time_ms(value: Any) -> int | None:
    """An RFC 3339 instant or a number of ms (text or number) → ms since the epoch; None when absent or unreadable.

    For values read from objects others wrote (annotations, pod status): an unreadable one is treated as missing.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if not isinstance(value, str):
        return None
    if value.strip().isdigit():
        return int(value)
    try:
        moment = parse_rfc3339(value)
    except ValueError:
        return None
    return None if moment is None else round(moment.timestamp() * 1000)
