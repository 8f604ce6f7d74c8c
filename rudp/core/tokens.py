"""Stateless-reset tokens (specs/protocol.md section 6.6, after RFC 9000 section 10.3.2).

A token is a keyed hash of a connection id under the endpoint's *static key*: an
endpoint that lost every connection's state (it crashed and restarted) can still
compute the token of any id it issued, as long as it kept the key, while nobody
without the key can.  The key is the driver's to keep (``rudp.drivers`` stores one
per user on disk, so a restarted program answers with the same tokens); the core
only computes with it.
"""

from __future__ import annotations

import hashlib
import hmac

from rudp.core.wire import RESET_TOKEN_SIZE

STATIC_KEY_SIZE = 32
"""Bytes of a static key (HMAC-SHA256 takes any length; 32 is its block-safe strength)."""

_LABEL = b"rudp stateless reset v3"


def reset_token(static_key: bytes, connection_id: int) -> bytes:
    """The 16-byte token of ``connection_id`` under ``static_key`` (RFC 9000 §10.3.2)."""
    if len(static_key) < 16:
        raise ValueError("a static key needs at least 16 bytes")
    mac = hmac.new(static_key, _LABEL + connection_id.to_bytes(8, "big"), hashlib.sha256)
    return mac.digest()[:RESET_TOKEN_SIZE]


def tokens_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison: timing must not tell an attacker how much of a guess matched."""
    return hmac.compare_digest(a, b)
