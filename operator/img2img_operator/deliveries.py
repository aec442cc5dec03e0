"""A job's webhook: whether a delivery is owed, what one attempt's answer means, and the record of it. Pure.

| the attempt | then |
|---|---|
| answered 2xx | delivered |
| answered 408 or 429, or 5xx; no answer (timeout, connection refused or reset) | retried after ``retryBackoff.delay(n)``, until ``maxAttempts`` |
| answered anything else (3xx: redirects are not followed; 4xx) | given up |
| refused before sending (the URL, or an address its name resolves to, is not allowed) | given up, nothing sent |

The record is ``status.webhook`` (``img2img.api.status.WebhookDelivery``), written after every attempt: an operator
that restarts resumes a delivery still owed at its ``nextAttemptAt`` and never sends one recorded ``delivered``
again. A crash between a 2xx and the write of its record sends that delivery once more: receivers deduplicate by
``webhook-id`` (the job's uid, the same on every attempt), as the Standard Webhooks specification asks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from img2img.api.answer import answer
from img2img.api.status import TERMINAL
from img2img.api.times import format_time_ms, parse_time_ms

from .config import WebhooksConfig

DELIVERED, RETRY, GIVE_UP = "delivered", "retry", "give_up"
RETRIED_STATUSES = frozenset({408, 429})  # 4xx answers that ask to come back later
MAX_ERROR = 1024


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: the receiver's HTTP status, or why there was none."""

    at: int  # ms
    status: int | None = None
    error: str | None = None  # no answer (timeout, connection), or refused before sending
    refused: bool = False  # not sent: the URL or its address is not allowed


def owed(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """The job ended, has a webhook, and its delivery is neither done nor given up."""
    record = status.get("webhook") or {}
    return (bool(spec.get("webhook")) and status.get("status") in TERMINAL
            and not record.get("delivered") and not record.get("gaveUp"))


def due_at(record: Mapping[str, Any] | None) -> int | None:
    """When the next attempt may go (ms); None: now."""
    return parse_time_ms((record or {}).get("nextAttemptAt"))


def outcome(attempt: Attempt) -> str:
    if attempt.refused:
        return GIVE_UP
    if attempt.status is None:
        return RETRY
    if 200 <= attempt.status < 300:
        return DELIVERED
    if attempt.status >= 500 or attempt.status in RETRIED_STATUSES:
        return RETRY
    return GIVE_UP


def after(record: Mapping[str, Any] | None, attempt: Attempt, config: WebhooksConfig) -> dict[str, Any]:
    """The record once ``attempt`` is made: ``status.webhook`` as it is written."""
    attempts = int((record or {}).get("attempts") or 0) + (0 if attempt.refused else 1)
    result = outcome(attempt)
    out: dict[str, Any] = {"delivered": result == DELIVERED, "attempts": attempts}
    if attempt.status is not None:
        out["lastStatusCode"] = attempt.status
    if attempt.refused:
        out["lastError"] = attempt.error or "refused"
    elif result != DELIVERED:
        out["lastError"] = (attempt.error or f"the receiver answered {attempt.status}")[:MAX_ERROR]
    if not attempt.refused:
        out["lastAttemptAt"] = format_time_ms(attempt.at)
    if result == DELIVERED:
        out["deliveredAt"] = format_time_ms(attempt.at)
    elif result == RETRY and attempts < config.max_attempts:
        out["nextAttemptAt"] = format_time_ms(attempt.at + int(config.retry_backoff.delay(attempts) * 1000))
    else:
        out["gaveUp"] = True
        if result == RETRY:
            out["lastError"] = f"{out['lastError']} (gave up after {attempts} attempts)"[:MAX_ERROR]
    return out


def result_of(record: Mapping[str, Any]) -> str:
    """What the delivery came to after its latest attempt: delivered, retry (later), or give_up."""
    if record.get("delivered"):
        return DELIVERED
    return GIVE_UP if record.get("gaveUp") else RETRY


def webhook_id(uid: str) -> str:
    """The delivery's ``webhook-id``: the job's uid (a job ends once; a gateway /retry is another job)."""
    return uid


def body(job: Mapping[str, Any], images: list[str] | None) -> bytes:
    """What is POSTed: the job's RunPod status, as ``/status`` answers it (``img2img.api.answer``), compact JSON."""
    return json.dumps(answer(dict(job), images), separators=(",", ":")).encode()
