"""The signature on what forwarders POST: HMAC-SHA256 over the timestamp and the body, as
docs/integration.md tells receivers to check it."""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Pantau-Timestamp"
SIGNATURE_HEADER = "X-Pantau-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """`sha256=HEX`: HMAC-SHA256(key, f"{timestamp}." + body)."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(
    key: bytes, body: bytes, timestamp: int, idempotency_key: str, content_type: str
) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(key, timestamp, body),
        IDEMPOTENCY_HEADER: idempotency_key,
    }
