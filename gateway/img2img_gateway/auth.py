"""Who may call which endpoint, and how often: API keys (kept as SHA-256 digests) and a token bucket per key.

RunPod clients send ``Authorization: Bearer KEY`` (the SDKs, RunPod's curl examples) or ``Authorization: KEY`` (the
other curl examples); both are accepted. The presented key is hashed once and compared with every known digest in
constant time, so neither the comparison nor the order of the keys tells anything about a key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from img2img_gateway.config import ALL_ENDPOINTS, RateLimit


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def presented_key(header: str | None) -> str | None:
    """The key of an ``Authorization`` header: ``Bearer KEY`` or a bare ``KEY``; None when there is none."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    key = rest.strip() if scheme.lower() == "bearer" else header.strip()
    return key or None


@dataclass(frozen=True)
class Grant:
    """One key: whose it is (its Secret's name, for logs and the rate limit), its digest, where it is valid."""

    name: str
    digest: bytes = field(repr=False)
    endpoints: frozenset[str]
    rate_limit: RateLimit | None = None

    def allows(self, endpoint_id: str) -> bool:
        return ALL_ENDPOINTS in self.endpoints or endpoint_id in self.endpoints


def find_grant(grants: list[Grant], key: str) -> Grant | None:
    """The grant whose digest is the key's; every digest is compared (constant time, no early exit)."""
    presented = digest(key)
    found = None
    for grant in grants:
        if hmac.compare_digest(grant.digest, presented) and found is None:
            found = grant
    return found


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def authorize(grants: list[Grant], header: str | None, endpoint_id: str, endpoints: set[str]) -> Grant | Refusal:
    """The caller's grant for this endpoint, or why not: 401 for a missing or unknown key, 404 for an endpoint that
    does not exist or that this key may not use (the same answer: a key learns nothing of others' endpoints)."""
    key = presented_key(header)
    if key is None:
        return Refusal(401, "no API key: send 'Authorization: Bearer <key>'")
    grant = find_grant(grants, key)
    if grant is None:
        return Refusal(401, "the API key is not valid")
    if endpoint_id not in endpoints or not grant.allows(endpoint_id):
        return Refusal(404, f"no endpoint {endpoint_id!r} for this API key")
    return grant


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: int
    tokens: float
    updated: float  # the clock's time of the last refill

    @classmethod
    def full(cls, limit: RateLimit, now: float) -> TokenBucket:
        return cls(limit.requestsPerSecond, limit.burst, float(limit.burst), now)

    def take(self, now: float) -> float:
        """Take one token: 0 when there was one, else the seconds until there is one (nothing taken)."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class RateLimiter:
    """A bucket per key (by its Secret's name); a key without a limit is never throttled."""

    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def wait_needed(self, grant: Grant, now: float) -> float:
        if grant.rate_limit is None:
            return 0.0
        bucket = self.buckets.get(grant.name)
        if bucket is None or (bucket.rate, bucket.burst) != (grant.rate_limit.requestsPerSecond,
                                                             grant.rate_limit.burst):
            bucket = self.buckets[grant.name] = TokenBucket.full(grant.rate_limit, now)
        return bucket.take(now)
