"""Tunables of a connection, documented where they are defined.

One frozen dataclass is shared by the sans-IO core and every driver; drivers
accept the same names as keyword ``**options``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

MIB = 1024 * 1024

MIN_DATAGRAM_SIZE = 1200
"""Smallest ``max_datagram_size`` we configure or accept from a peer (specs/protocol.md
section 6.1).  Every IPv6 path carries 1280-byte packets (RFC 8200 section 5), 1232 bytes
of UDP payload, and QUIC requires 1200 of every path (RFC 9000 section 14); IPv4 paths
below that are vanishingly rare and QUIC does not serve them either.  A peer announcing a
tiny size would make us cut each byte of data into a datagram of its own (the
TCP minimum-MSS problem of CVE-2019-11479): 1200 keeps a hostile peer's packet count
within 1.2x of the default 1400."""


@dataclass(frozen=True, slots=True)
class Config:
    """Configuration of one rudp connection.  All times are in seconds."""

    # --- datagrams and messages -------------------------------------------
    max_datagram_size: int = 1400
    """Largest UDP payload we send, header and checksum included.  1400 keeps
    clear of a 1500-byte Ethernet MTU with IPv6 and a tunnel header (KCP and
    ENet use about the same).  The handshake lowers it to the peer's value."""

    max_message_size: int = 1 * MIB
    """Largest message ``send()`` accepts and the receiver reassembles.  The message
    being reassembled counts against ``receive_buffer``, so it may not exceed it; and a
    driver may hold one more beside its ``recv_buffer``, so a hostile peer costs at most
    ``receive_buffer + recv_buffer + max_message_size`` (6 MiB with the defaults).  Larger
    messages need both this and ``receive_buffer`` raised."""

    # --- windows ----------------------------------------------------------
    receive_buffer: int = 4 * MIB
    """Bytes the receiver buffers: packets held out of order, the message being
    reassembled and messages delivered but not yet read (specs/protocol.md section
    11.1).  The advertised window, in packets, is derived from what is left of it and
    the effective payload size, so a peer can never make us hold more.  4 MiB is 1.7
    bandwidth-delay products of a 100 Mbit/s, 200 ms path (2.5 MB) and 3088 full
    packets; with a hostile peer it bounds one connection's receive memory well under
    8 MiB (``bench/memory.py``)."""

    receive_window: int = 4096
    """Most packets the receiver buffers beyond the cumulative ack (out of order,
    reassembling, or delivered-but-unread), whatever their size: this bounds the
    per-packet overhead of tiny packets, ``receive_buffer`` the bytes.  A hole waits at
    least two round trips for its repair (three if the repair is lost too), so the
    window must hold several bandwidth-delay products: 4096 packets keep a 20 Mbit/s,
    200 ms path busy at 20% loss (1024 measured 0.67 of the link there, 4096 0.87;
    specs/protocol.md section 16)."""

    max_send_window: int = 4096
    """Upper bound on packets in flight, whatever the congestion window says."""

    # --- endpoint-wide limits (read from the endpoint's config) ----------------
    max_connections: int = 1024
    """Most connections one endpoint (one UDP socket) holds at once, handshaking ones
    included: a SYN beyond it is refused (dropped and counted in
    ``EndpointStats.syn_refused_limit``) and a local ``connect`` raises
    ``ConnectionLimitExceeded``.  Each idle connection costs about 12 KiB."""

    max_buffered_bytes: int = 256 * MIB
    """Most bytes all receivers of one endpoint buffer together (their
    ``receive_buffer`` budgets share this): windows shrink as it fills, and a SYN
    arriving while it is full is refused like one beyond ``max_connections``."""

    # --- retransmission timer (RFC 9002 section 6.2, RFC 6298) ----------------
    initial_rto: float = 1.0
    """First timeout before any RTT sample: the handshake's RTO (RFC 6298 section 2.1)
    and the first probe timeout (RFC 9002 section 6.2.2 uses an initial RTT the same way)."""

    min_rto: float = 0.005
    """Floor of the computed timeout.  The probe timeout already includes the
    peer's ``max_ack_delay`` (RFC 9002 section 6.2.1), so it cannot fire merely
    because an ack was held back, and RFC 9002 has no floor beyond its 1 ms
    granularity; 5 ms only guards the handshake's RTO against a near-zero RTT
    variance.  (50 ms, the old floor, is 25 round trips of a 2 ms path: measured
    0.77 of the link at 10% loss there, against 1.0 now.)"""

    max_rto: float = 2.0
    """Cap of the doubling backoff (RFC 6298 section 5.5, RFC 9002 section 6.2.1).
    Kept low so the give-up budget below allows many probes; the budget, not the
    cap, decides when to stop."""

    max_retransmits: int | None = None
    """Consecutive timeouts without any acknowledgement after which the connection
    fails.  ``None``: only ``peer_timeout`` decides."""

    peer_timeout: float = 30.0
    """Fail when nothing authentic has been heard from the peer for this long
    while it owes us an answer (unacknowledged data, a ping, the handshake)."""

    keepalive_interval: float | None = 5.0
    """Send a ping after this much silence so an idle peer's death is noticed
    within ``peer_timeout``.  ``None`` disables keepalive."""

    idle_timeout: float | None = None
    """Close an established connection with nothing in flight after this long
    without traffic.  ``None`` keeps idle connections open (keepalive pings)."""

    # --- acknowledgements ---------------------------------------------------
    max_ack_delay: float = 0.01
    """Longest a receiver holds back an ack (RFC 9000 section 13.2.1); an ack is
    sent at once for every second packet and for any gap."""

    # --- congestion control ------------------------------------------------
    congestion_control: str = "bbr"
    """Name in ``rudp.core.congestion.REGISTRY``: "newreno" (RFC 5681/6582), "cubic"
    (RFC 9438), "bbr" (BBR's bandwidth and RTT model; random loss is not taken for
    congestion) or "fixed" (a constant ``max_send_window``, no congestion control)."""

    initial_window: int = 10
    """Initial congestion window in packets (RFC 6928)."""

    pacing_burst: int = 64
    """Most packets pacing releases back to back (``rudp.core.pacing``).  The bucket
    holds a millisecond at the pacing rate, at least 2 packets and at most this: two
    packets on a 20 Mbit/s path, nine at 100 Mbit/s, and on loopback 64, about the
    64 KB a kernel's segmentation offload sends at once (a wakeup per packet there cost
    more than the packet: the connection API moved 41 MB/s with a bucket of 10, 72 MB/s
    with 64)."""

    # --- close ---------------------------------------------------------------
    close_linger: float = 6.0
    """After both FINs are acknowledged, how long the last side to ack stays to
    re-acknowledge a retransmitted FIN (TCP's TIME-WAIT, shortened); and how long a
    blocking ``close()`` waits, once every message is acknowledged, for our FIN's
    acknowledgement.  The side that received the peer's last message acknowledges it
    only while it stays, so this is the peer's chance to learn that the message arrived:
    three of the peer's retransmissions at the ``max_rto`` cap (RFC 9000 section 10.2
    keeps a closing connection three PTOs).  Measured with seed 000's "Hello!!" programs
    at 30% loss each way (``bench/handshake_loss.py``, 10 000 seeds): with 2 s, one
    retransmission, the sender got no acknowledgement in 0.36% of runs (it reports the
    message undelivered although it arrived), with 6 s in 0.01%.  It costs nothing when
    the FIN's acknowledgement comes, within a round trip on a working path; on a lossy
    one a close may wait that long for an acknowledgement that never comes (the sender's
    p99 close there went from 9.1 to 11.2 s)."""

    # --- authenticated encryption -------------------------------------------
    psk: bytes | None = field(default=None, repr=False)
    """A 32-byte pre-shared key, the same on both sides, or None.  With it the handshake
    is Noise NNpsk0 (a fresh X25519 exchange per connection, authenticated by the key)
    and every later datagram is sealed with ChaCha20-Poly1305 (specs/protocol.md sections
    3.7 and 6.8): a peer without the key cannot connect, read, inject, reset or close.
    Both sides must agree: a keyed side and an unkeyed one never complete a handshake.
    Kept out of ``repr`` so that logging a config does not print the key."""

    @classmethod
    def textbook(cls, **overrides: Any) -> Config:
        """The policy of *Foundations of Python Network Programming*'s UDP client.

        First timeout 0.1 s, doubling, give up once the delay would exceed 2.0 s:
        waits of 0.1, 0.2, 0.4, 0.8 and 1.6 s, that is four retransmissions.
        """
        base = cls(initial_rto=0.1, min_rto=0.1, max_rto=2.0, max_retransmits=4)
        return replace(base, **overrides)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Config:
        """Build a config from driver ``**options``, rejecting unknown names."""
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown rudp option(s): {', '.join(sorted(unknown))}")
        return cls(**options)

    def __post_init__(self) -> None:
        if not MIN_DATAGRAM_SIZE <= self.max_datagram_size <= 65507:
            raise ValueError(f"max_datagram_size must be within {MIN_DATAGRAM_SIZE}..65507")
        if self.receive_buffer < self.max_datagram_size:
            raise ValueError("receive_buffer must hold at least one datagram")
        if self.max_message_size > self.receive_buffer:
            raise ValueError(
                f"max_message_size ({self.max_message_size}) must not exceed receive_buffer "
                f"({self.receive_buffer}): the message being reassembled counts against it"
            )
        if self.max_connections < 1 or self.max_buffered_bytes < self.receive_buffer:
            raise ValueError("need max_connections >= 1 and max_buffered_bytes >= receive_buffer")
        if self.receive_window < 2 or self.receive_window > 65535:
            raise ValueError("receive_window must be within 2..65535 packets")
        if self.max_send_window < 1:
            raise ValueError("max_send_window must be positive")
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= initial_rto <= max_rto")
        if self.max_retransmits is not None and self.max_retransmits < 0:
            raise ValueError("max_retransmits must be >= 0 or None")
        if self.peer_timeout <= 0:
            raise ValueError("peer_timeout must be positive")
        if self.max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        # A zero interval would make get_timer() return "now" forever: a driver would spin.
        for name in ("keepalive_interval", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        if self.max_ack_delay < 0 or self.close_linger < 0:
            raise ValueError("max_ack_delay and close_linger must be >= 0")
        if self.initial_window < 1:
            raise ValueError("initial_window must be at least 1 packet")
        if self.pacing_burst < 1:
            raise ValueError("pacing_burst must be at least 1 packet")
        if self.psk is not None and (not isinstance(self.psk, bytes) or len(self.psk) != 32):
            raise ValueError("psk must be 32 bytes (or None)")
