"""A snapshot of one connection's counters and estimates (``SansIOConnection.stats``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotations of ``snapshot``
    from rudp.core.receiver import Receiver
    from rudp.core.sender import Sender


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters since the connection was created, and the current estimates.

    A frozen copy: reading ``conn.stats`` twice gives two independent snapshots.
    """

    # --- estimates (RFC 9002 section 5) -------------------------------------------
    srtt: float | None
    """Smoothed round-trip time, seconds; None before the first sample."""
    rttvar: float | None
    """Round-trip time variation, seconds; None before the first sample."""
    latest_rtt: float | None
    """The most recent RTT sample, seconds."""
    rto: float
    """The RFC 6298 timeout the handshake uses, seconds (data uses the probe timeout)."""
    min_rtt: float | None
    """Smallest RTT sample seen (RFC 9002 section 5.2), seconds."""
    pacing_rate: float | None
    """Packets per second the congestion controller lets pacing release (None: unpaced)."""
    # --- windows ---------------------------------------------------------------
    cwnd: int
    """Congestion window, packets."""
    ssthresh: float
    """Slow-start threshold, packets (``inf`` before the first loss)."""
    packets_in_flight: int
    """Packets sent, not acknowledged and not declared lost."""
    peer_window: int
    """The peer's last advertised receive window, packets."""
    local_window: int
    """The window we advertise now, packets."""
    # --- datagrams ---------------------------------------------------------------
    datagrams_sent: int
    """Datagrams handed out by ``datagrams_to_send``."""
    datagrams_received: int
    """Datagrams passed to ``receive_datagram``, valid or not."""
    bytes_sent: int
    """Bytes of all datagrams sent, headers included."""
    bytes_received: int
    """Bytes of all datagrams received, headers included."""
    datagrams_dropped: int
    """Received datagrams that were dropped: undecodable, wrong connection id,
    outside the window, acknowledging unsent data, wrong state, ..."""
    datagrams_oversize: int
    """Of ``datagrams_dropped``, those longer than the effective datagram size
    (specs/protocol.md section 6.1-5): the peer must not send them."""
    receive_buffered: int
    """Bytes the receiver holds now: out of order, reassembling, delivered but unread
    (at most ``Config.receive_buffer``, section 13.4)."""
    data_packets_sent: int
    """DATA and FIN packets sent, retransmissions included."""
    data_packets_received: int
    """DATA and FIN packets received, duplicates included."""
    duplicates_received: int
    """DATA/FIN packets received that we already had."""
    acks_sent: int
    """Pure ACK packets sent."""
    retransmissions: int
    """DATA/FIN packets sent again (fast retransmit, timeout, probe)."""
    fast_retransmits: int
    """Packets declared lost by acknowledgements of later ones, by count or time
    (RFC 9002 section 6.1), before any timer expired."""
    probes_sent: int
    """Probes sent when the probe timeout expired (RFC 9002 section 6.2.4)."""
    timeouts: int
    """Probe-timeout expiries (RFC 9002 section 6.2) and handshake retransmission timeouts."""
    spurious_retransmissions: int
    """Retransmissions the peer turned out not to need: it acknowledged the data before
    the retransmission could have reached it (specs/protocol.md section 10)."""
    # --- messages ----------------------------------------------------------------
    messages_sent: int
    """Messages accepted by ``send()``."""
    messages_acked: int
    """Messages reported with ``MessageAcknowledged``."""
    messages_delivered: int
    """Messages reported with ``MessageReceived``."""
    send_queue_bytes: int
    """Bytes of messages sent but not yet acknowledged."""
    # --- resets (specs/protocol.md sections 6.4 and 6.6) ---------------------------
    resets_rejected: int
    """RESETs and stateless resets dropped as implausible (wrong token, sequence number or
    ack); also counted in ``datagrams_dropped``."""
    challenge_acks_sent: int
    """Immediate ACKs sent in answer to an in-window but inexact RESET (RFC 5961 section
    3.2), at most one per ``rudp.core.closing.CHALLENGE_ACK_INTERVAL``."""
    # --- authenticated encryption (Config.psk; specs/protocol.md section 3.7) ------
    datagrams_unauthenticated: int = 0
    """Datagrams dropped because they did not authenticate: a sealed packet whose tag did
    not verify, an unsealed one where a key is in use, a handshake message that did not
    open; also counted in ``datagrams_dropped``."""
    replays_dropped: int = 0
    """Sealed datagrams dropped by the replay window (section 3.7-3); also counted in
    ``datagrams_dropped``."""


def snapshot(
    sender: Sender,
    receiver: Receiver,
    *,
    datagrams_sent: int,
    datagrams_received: int,
    bytes_sent: int,
    bytes_received: int,
    datagrams_dropped: int,
    acks_sent: int,
    resets_rejected: int,
    challenge_acks_sent: int,
    datagrams_oversize: int = 0,
    datagrams_unauthenticated: int = 0,
    replays_dropped: int = 0,
) -> Stats:
    """The ``Stats`` of a connection: its own datagram counters and its halves' state."""
    rtt = sender.rtt
    cc = sender.cc
    return Stats(
        srtt=rtt.srtt,
        rttvar=rtt.rttvar,
        latest_rtt=rtt.latest,
        rto=rtt.rto,
        min_rtt=rtt.min_rtt,
        pacing_rate=cc.pacing_rate,
        cwnd=cc.cwnd,
        ssthresh=cc.ssthresh,
        packets_in_flight=sender.in_flight,
        peer_window=sender.peer_window,
        local_window=receiver.window,
        datagrams_sent=datagrams_sent,
        datagrams_received=datagrams_received,
        bytes_sent=bytes_sent,
        bytes_received=bytes_received,
        datagrams_dropped=datagrams_dropped,
        datagrams_oversize=datagrams_oversize,
        receive_buffered=receiver.buffered,
        data_packets_sent=sender.data_packets_sent,
        data_packets_received=receiver.data_packets_received,
        duplicates_received=receiver.duplicates,
        acks_sent=acks_sent,
        retransmissions=sender.retransmissions,
        fast_retransmits=sender.fast_retransmits,
        probes_sent=sender.probes_sent,
        timeouts=sender.timeouts,
        spurious_retransmissions=sender.spurious_retransmissions,
        messages_sent=sender.messages_sent,
        messages_acked=sender.messages_acked,
        messages_delivered=receiver.messages_delivered,
        send_queue_bytes=sender.queued_bytes,
        resets_rejected=resets_rejected,
        challenge_acks_sent=challenge_acks_sent,
        datagrams_unauthenticated=datagrams_unauthenticated,
        replays_dropped=replays_dropped,
    )
