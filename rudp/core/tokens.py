"""Stateless-reset tokens (specs/protocol.md section 6.6, after RFC 9000 section 10.3.2)
and the MACs of retry tokens (section 6.2.1, after RFC 9000 section 8.1).

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

from rudp.core.wire import RESET_TOKEN_SIZE, RETRY_MAC_SIZE

STATIC_KEY_SIZE = 32
"""Bytes of a static key (HMAC-SHA256 takes any length; 32 is its block-safe strength)."""

_LABEL = b"rudp stateless reset v3"
_RETRY_KEY_LABEL = b"rudp retry key v4"
_RETRY_MAC_LABEL = b"rudp retry token v4"


def reset_token(static_key: bytes, connection_id: int) -> bytes:
    """The 16-byte token of ``connection_id`` under ``static_key`` (RFC 9000 §10.3.2)."""
    if len(static_key) < 16:
        raise ValueError("a static key needs at least 16 bytes")
    mac = hmac.new(static_key, _LABEL + connection_id.to_bytes(8, "big"), hashlib.sha256)
    return mac.digest()[:RESET_TOKEN_SIZE]


def tokens_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison: timing must not tell an attacker how much of a guess matched."""
    return hmac.compare_digest(a, b)


def retry_key(static_key: bytes, bucket: int) -> bytes:
    """The rotating key of time bucket ``bucket`` (u32): HMAC-SHA256 of the bucket under
    the static key, so every bucket has its own key and no key is ever stored."""
    if len(static_key) < 16:
        raise ValueError("a static key needs at least 16 bytes")
    message = _RETRY_KEY_LABEL + bucket.to_bytes(4, "big")
    return hmac.new(static_key, message, hashlib.sha256).digest()


def retry_mac(key: bytes, address: bytes, client_id: int) -> bytes:
    """The 16-byte MAC of a retry token: HMAC-SHA256 of (client id, serialised client
    address) under a bucket's ``retry_key``, truncated."""
    message = _RETRY_MAC_LABEL + client_id.to_bytes(8, "big") + address
    return hmac.new(key, message, hashlib.sha256).digest()[:RETRY_MAC_SIZE]
