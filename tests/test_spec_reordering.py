"""Conformance tests of specs/protocol.md section 10.2.1: adapting to reordering.

A sender past its handshake (as in tests/test_loss_detection.py) sends ten packets; the
first one is late: the other nine are acknowledged, so it is declared lost by the packet
threshold, and then it is acknowledged itself, the echo naming no newer packet, so that
loss was spurious.  The thresholds of section 10.1 follow.  Then the same over a path
that does reorder, in virtual time.
"""

from __future__ import annotations

from collections import deque

from rudp.config import Config
from rudp.core.pacing import Pacer
from rudp.core.recovery import (
    K_PACKET_THRESHOLD,
    MAX_PACKET_THRESHOLD,
    MAX_TIME_THRESHOLD,
    REORDERING_PERSIST,
    TIME_THRESHOLD,
    TIME_THRESHOLD_STEP,
)
from rudp.core.sender import Sender
from rudp.core.wire import MAX_SACK_BLOCKS
from rudp.events import Event
from rudp.testing import LinkProfile, transfer

FIRST = 1000
RTT = 0.01
WINDOW = 1000


class _Unpaced(Pacer):
    def budget(self, now: float, rate: float | None) -> int:
        return super().budget(now, None)


def _sender() -> Sender:
    sender = Sender(Config(congestion_control="newreno"), FIRST, deque[Event]())
    sender.pacer = _Unpaced(1)
    sender.rtt.on_sample(RTT)
    sender.on_ack(0.0, FIRST, WINDOW, [], -1, 0.0)
    return sender


class _Path:
    """Drives a sender ten packets at a time, the clock one RTT and a bit per round."""

    def __init__(self) -> None:
        self.sender = _sender()
        self.now = 0.0

    def late_first(self, *, blind: bool = False) -> None:
        """Ten packets; the first is declared lost, then acknowledged: spurious.
        ``blind``: the ack that declares it carries all the SACK blocks it can."""
        sender = self.sender
        una = sender.snd_una
        for index in range(10):
            sender.queue_message(bytes([index]))
        sent = sender.next_packets(self.now)
        assert [p[1] for p in sent][:10] == list(range(una, una + 10))
        self.now += RTT
        threshold = sender.recovery.packet_threshold
        largest = sent[-1][0]
        sack = [(una + 1, una + 10)]
        if blind:  # the same arrivals, as many blocks as an ack can carry
            sack = [(una + 1 + i, una + 2 + i) for i in range(9)]
            sack += [(una + 1, una + 2)] * (MAX_SACK_BLOCKS - len(sack))
        lost_before = sender.fast_retransmits
        sender.on_ack(self.now, una, WINDOW, sack, largest, 0.0)
        deadline = sender.recovery.loss_deadline
        if threshold > 9:  # past what ten packets show: the time threshold decides
            assert deadline is not None and sender.fast_retransmits == lost_before
            self.now = deadline
            sender.on_loss_timeout(self.now)
        assert sender.fast_retransmits == lost_before + 1
        self.now += RTT / 10
        spurious = sender.spurious_retransmissions
        sender.on_ack(self.now, una + 10, WINDOW, [], largest, 0.0)  # the late one arrived
        assert sender.spurious_retransmissions == spurious + 1
        sender.next_packets(self.now)  # nothing left to resend
        self.now += 1.5 * RTT

    def real_loss(self) -> None:
        """Ten packets; the first is lost and its resend acknowledged: no reordering."""
        sender = self.sender
        una = sender.snd_una
        for index in range(10):
            sender.queue_message(bytes([index]))
        sent = sender.next_packets(self.now)
        self.now += RTT
        sender.on_ack(self.now, una, WINDOW, [(una + 1, una + 10)], sent[-1][0], 0.0)
        deadline = sender.recovery.loss_deadline
        if deadline is not None:  # a raised packet threshold: the time threshold decides
            self.now = deadline
            sender.on_loss_timeout(self.now)
        resend = sender.next_packets(self.now)
        assert una in [p[1] for p in resend]
        self.now += RTT
        sender.on_ack(self.now, sender.snd_nxt, WINDOW, [], resend[-1][0], 0.0)
        self.now += 1.5 * RTT


def test_s10_2_3_reordering_raises_the_thresholds_once_per_rtt() -> None:
    """§10.2-3: spurious losses beyond a quarter of the recent ones double the packet
    threshold and add a quarter RTT to the time threshold, once per RTT, up to the caps;
    quiet loss events step them back; losses under full SACK blocks are not evidence."""
    path = _Path()
    recovery = path.sender.recovery
    assert (recovery.packet_threshold, recovery.time_threshold) == (3, TIME_THRESHOLD)
    rounds = 0
    while recovery.packet_threshold == K_PACKET_THRESHOLD:
        path.late_first()
        rounds += 1
        assert rounds <= 8, "a path that reorders every round was not recognised"
    assert rounds > 1  # one late packet is not yet a reordering path
    assert recovery.packet_threshold == 2 * K_PACKET_THRESHOLD
    assert recovery.time_threshold == TIME_THRESHOLD + TIME_THRESHOLD_STEP
    # Real losses, one loss event per round: after REORDERING_PERSIST, one step back.
    for _ in range(REORDERING_PERSIST):
        path.real_loss()
    assert (recovery.packet_threshold, recovery.time_threshold) == (3, TIME_THRESHOLD)
    # More evidence within one round trip raises once; round trips apart, up to the caps.
    now = path.now
    for _ in range(3):
        recovery.on_spurious_retransmission(now - 2 * RTT, now)
    assert recovery.packet_threshold == 2 * K_PACKET_THRESHOLD
    assert recovery.time_threshold == TIME_THRESHOLD + TIME_THRESHOLD_STEP
    for _ in range(20):
        now += 2 * RTT
        recovery.on_spurious_retransmission(now - 2 * RTT, now)
    assert recovery.packet_threshold == MAX_PACKET_THRESHOLD
    assert recovery.time_threshold == MAX_TIME_THRESHOLD
    # Spurious losses declared under full SACK blocks say nothing of reordering.
    blind = _Path()
    for _ in range(20):
        blind.late_first(blind=True)
    assert blind.sender.recovery.packet_threshold == K_PACKET_THRESHOLD
    assert blind.sender.recovery.time_threshold == TIME_THRESHOLD


def test_s10_2_3_a_reordering_path_is_not_taken_for_a_lossy_one() -> None:
    """§10.2-3, end to end in virtual time: 20% of the packets 10 ms late, 20 Mbit/s,
    40 ms.  Before the thresholds adapted: 1364 spurious retransmissions and 24 s for
    10 MB (ideal 4.2 s); now a handful, within 1.2 times the ideal."""
    profile = LinkProfile(rate_bps=20e6, queue_limit=100, delay=0.02)
    late = LinkProfile(rate_bps=20e6, queue_limit=100, delay=0.02, reorder=0.2, reorder_delay=0.01)
    messages = [bytes(64 * 1024)] * 150
    result = transfer(messages, profile_ab=late, profile_ba=profile, seed=1, max_time=120)
    assert result.complete
    stats = result.a.stats
    ideal = len(messages) * 64 * 1024 * 8 / 20e6 + 0.04
    assert result.completed_at is not None and result.completed_at <= 1.2 * ideal
    assert stats.spurious_retransmissions <= 0.01 * stats.data_packets_sent
