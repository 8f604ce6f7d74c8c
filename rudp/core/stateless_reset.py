"""Stateless resets, the endpoint's part (specs/protocol.md section 6.6; RFC 9000 section 10.3).

An endpoint that receives a datagram for a connection id it has no state for (it
restarted, or the connection ended long ago) answers with a 32-byte STATELESS_RESET
carrying the token of that id under its static key, ``rudp.core.tokens.reset_token``.
Only the endpoint that issued the id (or a restart of it that kept the key) can
compute the token the peer learned in the handshake, so the peer's core believes it
and fails at once instead of after ``peer_timeout`` of silence.

``StatelessResets`` decides whether to answer (never a STATELESS_RESET or a RESET,
never a SYN, and within a token bucket in virtual time), and routes a received
STATELESS_RESET to the association whose peer id it names: the packet carries the
id *we* addressed the restarted peer by, our ``remote_connection_id``, not our own id.

Memory is bounded: the remote-id table holds at most one entry per live association
(entries leave with them), and the bucket is two numbers.
"""

from __future__ import annotations

from typing import Any, Final

from rudp.core.endpoint_stats import EndpointStats
from rudp.core.tokens import reset_token
from rudp.core.wire import (
    NO_RESET_TOKEN,
    AckFields,
    Handshake,
    Packet,
    PacketType,
    encode_fields,
    encode_stateless_reset,
)

__all__ = [
    "DEFAULT_RESET_BURST",
    "DEFAULT_RESET_RATE",
    "ResetRateLimiter",
    "StatelessResets",
]

DEFAULT_RESET_RATE: Final = 100.0
"""Stateless resets per second an endpoint sends at most (sustained).

A reset is smaller than its trigger (32 bytes against at least 42), so it never
amplifies; the limit bounds the HMAC work and the packets an attacker can reflect
off us toward a spoofed address: 100/s is 3.2 kB/s.  It is high enough that a
restarted server with many peers answers each within a few of their retransmissions:
every peer needs only one reset, and its first packets after the restart draw it
from the burst."""

DEFAULT_RESET_BURST: Final = 100
"""Stateless resets sent back to back before the rate applies: a restarted server is
hit by every peer's in-flight window at once, and the first packet of each peer
should be answered."""

_NEVER_ANSWERED: Final = frozenset(
    {PacketType.STATELESS_RESET, PacketType.RESET, PacketType.SYN, PacketType.RETRY}
)
"""Section 6.6.2: a reset is never answered by a reset (no loops, RFC 9000 section
10.3.3), a SYN carries no id of ours (0), and a RETRY comes from a stateless server."""


class ResetRateLimiter:
    """A token bucket in virtual time: ``rate`` tokens per second, at most ``burst``."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        if rate < 0 or burst < 0:
            raise ValueError("the stateless-reset rate and burst must be >= 0")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token if there is one (refilled for the time since the last call)."""
        last = self._last
        if last is not None and now > last:
            self._tokens = min(float(self.burst), self._tokens + (now - last) * self.rate)
        if last is None or now > last:
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class StatelessResets:
    """Answering unknown connection ids and routing received resets (module docs)."""

    __slots__ = ("_by_remote_id", "_key", "_limiter", "_stats")

    def __init__(
        self,
        static_key: bytes,
        stats: EndpointStats,
        rate: float = DEFAULT_RESET_RATE,
        burst: int = DEFAULT_RESET_BURST,
    ) -> None:
        reset_token(static_key, 0)  # refuses a key too short, here rather than per reply
        self._key = static_key
        self._limiter = ResetRateLimiter(rate, burst)
        self._by_remote_id: dict[int, Any] = {}
        self._stats = stats  # the endpoint's: stateless_resets_sent / _suppressed

    # --- sending (section 6.6.2) ------------------------------------------------------

    def answer(self, packet: Packet, now: float) -> bytes | None:
        """The stateless reset owed for a packet to an unknown id, or None.

        ``packet`` decoded and names no live connection.  The reset is 32 bytes,
        smaller than any datagram that can trigger one.
        """
        if packet.type in _NEVER_ANSWERED or packet.connection_id == 0:
            return None
        if not self._limiter.take(now):
            self._stats.stateless_resets_suppressed += 1
            return None
        self._stats.stateless_resets_sent += 1
        cid = packet.connection_id
        return encode_stateless_reset(cid, reset_token(self._key, cid))

    def refuse(
        self, syn: Packet, handshake: Handshake, now: float, token: bytes = NO_RESET_TOKEN
    ) -> bytes | None:
        """A RESET refusing a SYN an endpoint limit turned away (section 13.4), or None.

        No state is kept: it names the client's id and acknowledges exactly its SYN,
        which is what a client in SYN_SENT requires of a RESET (section 6.4); ``token`` is
        a keyed endpoint's answer tag (section 6.8.1).  58 bytes against the SYN's 68, and
        rate-limited with the stateless resets, so a spoofed SYN flood cannot use it as an
        amplifier.
        """
        if not self._limiter.take(now):
            self._stats.stateless_resets_suppressed += 1
            return None
        acks = AckFields(syn.seq + 1, 0, syn.packet_number, 0)
        cid = handshake.source_connection_id
        return encode_fields(PacketType.RESET, 0, cid, 0, 0, acks, token, ())

    # --- routing received resets (section 6.6.1) --------------------------------------

    def learn(self, remote_id: int, assoc: Any) -> None:
        """``assoc``'s core learned its peer's id.  The first holder of an id keeps it:
        a later peer announcing the same id (a 2^-64 accident, or a peer choosing it)
        cannot divert the resets meant for an existing connection."""
        self._by_remote_id.setdefault(remote_id, assoc)

    def forget(self, remote_id: int, assoc: Any) -> None:
        """``assoc`` left the routing tables."""
        if self._by_remote_id.get(remote_id) is assoc:
            del self._by_remote_id[remote_id]

    def route(self, remote_id: int) -> Any:
        """The association whose peer the reset's id names, or None."""
        return self._by_remote_id.get(remote_id)

    def __len__(self) -> int:
        return len(self._by_remote_id)
