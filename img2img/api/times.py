"""RFC 3339 instants as the API server writes them (placeholder: the API package's own module replaces it)."""

from __future__ import annotations

from datetime import datetime


def parse_rfc3339(value: str | None) -> datetime | None:
    """"2026-01-01T00:00:05Z" (or with a fraction or an offset) -> a timezone-aware datetime; None for None or ""."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
