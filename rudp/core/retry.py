"""Stateless address validation, the endpoint's part (specs/protocol.md section 6.2.1).

After TCP SYN cookies (RFC 4987 section 3.6) and QUIC's Retry (RFC 9000 section 8.1): a
server that must not spend state on a SYN whose source address may be spoofed answers it
with a RETRY carrying a *retry token*, and keeps nothing.  The client resends its SYN
with the token after its handshake block; only a SYN whose token is valid for its source
address and client connection id creates a connection, and that address is then
validated (the client received the RETRY there), so the anti-amplification limit no
longer applies to it.

A token is ``bucket (u32) + HMAC-SHA256(retry_key(static key, bucket), client id +
address)[:16]`` (``rudp.core.tokens``): ``bucket`` is ``floor(now / BUCKET_SECONDS)``,
so the key rotates every ``BUCKET_SECONDS`` without being stored, and a token is
accepted in the bucket it was issued in and the next one (``BUCKETS_ACCEPTED``), 10 to
20 seconds.  Addresses are opaque values in the sans-IO endpoint; ``repr`` of the
address the driver normalised is their deterministic serialisation.

``RetryGate`` decides, per SYN from a new (address, client id), whether it may create a
connection (``Endpoint(retry=...)``):

* ``"always"``: only with a valid token; every other SYN draws a RETRY.  One extra round
  trip per connection; no state and no unvalidated traffic at all.
* ``"under_load"`` (the default): without a token while fewer than ``threshold`` server
  connections are unvalidated half-open ones and the backlog has room (the ordinary
  one-round-trip handshake, its traffic to the still unvalidated address held to three
  times what came from it, ``AddressBudget``); otherwise as ``"always"``.
* ``"never"``: version 3's behaviour (no RETRY; a full backlog evicts half-open
  connections), for tests and comparison.

Memory: two cached bucket keys; nothing per SYN.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from rudp.core.answer_tags import AnswerTags
from rudp.core.endpoint_stats import EndpointStats
from rudp.core.migration import AddressBudget as AddressBudget  # re-exported
from rudp.core.tokens import retry_key, retry_mac, tokens_equal
from rudp.core.wire import RETRY_TOKEN_STRUCT, Packet, encode_retry, noise_message, syn_token

__all__ = [
    "BUCKETS_ACCEPTED",
    "BUCKET_SECONDS",
    "DEFAULT_RETRY_THRESHOLD",
    "REFUSED",
    "RETRY_MODES",
    "UNVALIDATED",
    "VALIDATED",
    "AddressBudget",
    "RetryGate",
    "RetryMode",
    "address_bytes",
]

RetryMode = Literal["always", "under_load", "never"]
RETRY_MODES: Final = ("always", "under_load", "never")

BUCKET_SECONDS: Final = 10.0
"""Length of a retry-token time bucket: the key rotates this often."""
BUCKETS_ACCEPTED: Final = 2
"""A token is valid in the bucket it was issued in and the next one (10 to 20 s)."""
DEFAULT_RETRY_THRESHOLD: Final = 16
"""``"under_load"``: unvalidated half-open server connections beyond which SYNs without a
token draw a RETRY.  Sixteen 1-RTT handshakes at once are plenty for an ordinary server
(a burst beyond them costs one round trip more, nothing else); they bound what a flood
of spoofed SYNs can hold to 16 connection objects (~155 KB)."""
_U32: Final = 1 << 32

REFUSED: Final = 0
"""``RetryGate.admit``: the SYN creates nothing (perhaps it drew a RETRY)."""
VALIDATED: Final = 1
"""``RetryGate.admit``: the SYN carries a valid token; its address is validated."""
UNVALIDATED: Final = 2
"""``RetryGate.admit``: the SYN may create a connection whose address is unvalidated."""


def address_bytes(address: Any) -> bytes:
    """A deterministic serialisation of an opaque, driver-normalised address."""
    return repr(address).encode("utf-8", "backslashreplace")


def bucket_of(now: float) -> int:
    """The retry-token time bucket of ``now`` (u32, wrapping)."""
    return int(now // BUCKET_SECONDS) % _U32


class RetryGate:
    """Issuing and checking retry tokens; the policy of ``Endpoint(retry=...)``."""

    __slots__ = ("_keys", "_static_key", "_tags", "mode", "output", "threshold")

    def __init__(
        self, static_key: bytes, mode: str, threshold: int, tags: AnswerTags | None = None
    ) -> None:
        if mode not in RETRY_MODES:
            raise ValueError(f"retry must be one of {', '.join(RETRY_MODES)}")
        if threshold < 0:
            raise ValueError("retry_threshold must be >= 0")
        retry_key(static_key, 0)  # refuses a key too short, here rather than per SYN
        self._static_key = static_key
        self._tags = tags  # a keyed endpoint's: its RETRYs carry answer tags (6.8.1)
        self.mode = mode
        """``"always"``, ``"under_load"`` or ``"never"`` (module docs)."""
        self.threshold = threshold
        """``"under_load"``: unvalidated half-open connections that make the load."""
        self._keys: dict[int, bytes] = {}  # bucket -> key, the newest two
        self.output: list[tuple[bytes, Any]] = []
        """RETRYs owed, (datagram, address): the endpoint sends them with its output."""

    def _key(self, bucket: int) -> bytes:
        key = self._keys.get(bucket)
        if key is None:
            key = retry_key(self._static_key, bucket)
            self._keys[bucket] = key
            while len(self._keys) > BUCKETS_ACCEPTED:
                del self._keys[next(iter(self._keys))]
        return key

    def requires_token(self, unvalidated: int, backlog_full: bool) -> bool:
        """Whether a SYN without a valid token must be refused (and, tokenless, retried)."""
        if self.mode == "always":
            return True
        if self.mode == "never":
            return False
        return backlog_full or unvalidated >= self.threshold

    def admit(
        self,
        syn: Packet,
        client_id: int,
        address: Any,
        now: float,
        unvalidated: int,
        backlog_full: bool,
        stats: EndpointStats,
    ) -> int:
        """``REFUSED``, ``VALIDATED`` or ``UNVALIDATED`` for a SYN from a new (address,
        client id); a refused tokenless SYN leaves its RETRY in ``output``.

        A SYN with an invalid token is refused whatever the policy (section 6.2.1-3), and
        never answered with a second RETRY: its sender follows only one.
        """
        token = syn_token(syn.payload)
        if token is not None:
            if self.check(token, address, client_id, now):
                return VALIDATED
            stats.retry_tokens_invalid += 1
            return REFUSED
        if not self.requires_token(unvalidated, backlog_full):
            return UNVALIDATED
        self.output.append((self.retry(syn, client_id, address, now), address))
        stats.retries_sent += 1
        return REFUSED

    def issue(self, address: Any, client_id: int, now: float) -> bytes:
        """The retry token for ``(address, client_id)`` at ``now``."""
        bucket = bucket_of(now)
        mac = retry_mac(self._key(bucket), address_bytes(address), client_id)
        return RETRY_TOKEN_STRUCT.pack(bucket, mac)

    def check(self, token: bytes, address: Any, client_id: int, now: float) -> bool:
        """``token`` was issued by us for ``(address, client_id)`` within the window."""
        bucket, mac = RETRY_TOKEN_STRUCT.unpack(token)
        if (bucket_of(now) - bucket) % _U32 >= BUCKETS_ACCEPTED:
            return False  # expired, or from the future: no HMAC computed for it
        expected = retry_mac(self._key(bucket), address_bytes(address), client_id)
        return tokens_equal(mac, expected)

    def retry(self, syn: Packet, client_id: int, address: Any, now: float) -> bytes:
        """The RETRY datagram answering ``syn`` (62 bytes, smaller than any SYN; with a
        key and a keyed SYN, 78 bytes against its 146, with the answer tag)."""
        token = self.issue(address, client_id, now)
        # Section 6.8.1-3: a keyed SYN is answered with the token and its retry tag.
        message = noise_message(syn.payload) if self._tags is not None else None
        if self._tags is None or message is None:
            return encode_retry(client_id, syn, token)
        return encode_retry(client_id, syn, token, self._tags.retry(message, token))
