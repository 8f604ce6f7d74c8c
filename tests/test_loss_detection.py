"""Loss detection on packet numbers, the loss timer and the probe timeout (rudp.core.recovery).

These are the mechanisms that keep a lossy transfer from stalling on a timer:
RFC 9002 section 6.1 thresholds applied to packet numbers (so a retransmission
lost again is found like any packet, without a timer) and the section 6.2 probe
timeout, which sends probes beyond the congestion window and changes no window.

The sender is driven by hand here: ``next_packets`` hands out
``(pn, seq, payload, fragments_left, is_fin, ack_now)`` and every ack names the
largest packet number the peer received (``largest_pn``).  NewReno keeps the
numbers simple: it does not pace before its first RTT sample reaches it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import pytest

from rudp.config import Config
from rudp.core.pacing import Pacer
from rudp.core.recovery import K_PACKET_THRESHOLD, PING, TIME_THRESHOLD
from rudp.core.sender import GIVE_UP, RETRY, OutPacket, Sender
from rudp.events import Event

FIRST = 1000
RTT = 0.01
WINDOW = 100


def config(**changes: object) -> Config:
    return Config(congestion_control="newreno", **changes)  # type: ignore[arg-type]


class Unpaced(Pacer):
    """A pacer that never holds anything back."""

    def budget(self, now: float, rate: float | None) -> int:
        return super().budget(now, None)


def open_sender(messages: int, cfg: Config | None = None) -> Sender:
    """A sender past the handshake: RTT known, the peer's window open, pacing off.

    These tests are about which packets go; how fast they go is tests/test_pacing.py's.
    """
    sender = Sender(cfg or config(), FIRST, deque[Event]())
    sender.pacer = Unpaced(1)
    sender.rtt.on_sample(RTT)
    sender.on_ack(0.0, FIRST, WINDOW, [], -1, 0.0)
    for index in range(messages):
        sender.queue_message(bytes([index]))
    return sender


def seqs(packets: Sequence[OutPacket]) -> list[int]:
    return [packet[1] for packet in packets]


def pns(packets: Sequence[OutPacket]) -> list[int]:
    return [packet[0] for packet in packets]


def test_a_retransmission_lost_again_is_found_without_a_timer() -> None:
    sender = open_sender(10)
    first = sender.next_packets(0.0)
    assert seqs(first) == list(range(FIRST, FIRST + 10))
    assert pns(first) == list(range(10))
    # Everything but the first arrives: nine later packet numbers acked, so it is lost.
    sender.on_ack(RTT, FIRST, WINDOW, [(FIRST + 1, FIRST + 10)], 9, 0.0)
    assert sender.fast_retransmits == 1
    for index in range(10, 15):
        sender.queue_message(bytes([index]))
    repair = sender.next_packets(RTT)
    assert repair[0][1] == FIRST and repair[0][5] is True  # resent first, with ACK_NOW
    assert repair[0][0] == 10  # a new packet number for the same sequence number
    assert seqs(repair[1:]) == list(range(FIRST + 10, FIRST + 15))
    assert len(repair) - 1 >= K_PACKET_THRESHOLD
    # The repair is lost too, but the packets sent after it are acknowledged: packet
    # numbers say it is older than them, so it is lost by count again.
    largest = repair[-1][0]
    sender.on_ack(2 * RTT, FIRST, WINDOW, [(FIRST + 1, FIRST + 15)], largest, 0.0)
    second = sender.next_packets(2 * RTT)
    assert seqs(second) == [FIRST] and second[0][5] is True
    assert second[0][0] == largest + 1
    assert sender.timeouts == 0
    assert sender.fast_retransmits == 2
    assert sender.recovery.pto_count == 0


def test_time_threshold_declares_a_tail_loss_without_three_successors() -> None:
    sender = open_sender(3)
    assert seqs(sender.next_packets(0.0)) == [FIRST, FIRST + 1, FIRST + 2]
    sender.on_ack(RTT, FIRST, WINDOW, [(FIRST + 2, FIRST + 3)], 2, 0.0)  # only the last arrived
    assert sender.fast_retransmits == 0  # one or two successors: not lost by count
    recovery = sender.recovery
    deadline = recovery.loss_deadline
    assert deadline is not None
    assert deadline == pytest.approx(sender.rtt.loss_delay())  # sent at 0.0
    assert sender.rtt.loss_delay() >= TIME_THRESHOLD * RTT
    assert recovery.pto_deadline is not None and deadline < recovery.pto_deadline
    sender.on_loss_timeout(deadline)
    assert sender.fast_retransmits == 2
    assert recovery.loss_deadline is None
    assert seqs(sender.next_packets(deadline)) == [FIRST, FIRST + 1]


def test_the_loss_timer_firing_exactly_at_its_deadline_makes_progress() -> None:
    """A deadline compared in another form than it was computed could fire forever."""
    sender = open_sender(2)
    sender.next_packets(0.1)
    sender.on_ack(0.1 + RTT, FIRST, WINDOW, [(FIRST + 1, FIRST + 2)], 1, 0.0)
    recovery = sender.recovery
    deadline = recovery.loss_deadline
    assert deadline is not None
    recovery.detect_losses(deadline)
    assert recovery.loss_deadline is None
    assert sender.fast_retransmits == 1


def test_no_loss_is_declared_before_the_largest_acknowledged() -> None:
    """Only packets sent before an acknowledged one can be lost (RFC 9002 section 6.1)."""
    sender = open_sender(4)
    sender.next_packets(0.0)
    sender.on_ack(RTT, FIRST + 1, WINDOW, [], 0, 0.0)  # the first arrived, nothing after it
    recovery = sender.recovery
    assert recovery.loss_deadline is None
    recovery.detect_losses(10.0)  # however late: the others are the PTO's business
    assert sender.fast_retransmits == 0
    assert sender.in_flight == 3


def test_the_probe_timeout_repeats_the_oldest_unacknowledged_beyond_the_window() -> None:
    cfg = config(initial_window=3)
    sender = open_sender(3, cfg)
    assert len(sender.next_packets(0.0)) == 3
    assert sender.next_packets(0.0) == []  # congestion window full
    recovery = sender.recovery
    probe_at = recovery.pto_deadline
    assert probe_at is not None
    # RFC 9002 section 6.2.1: srtt + max(4 rttvar, 1 ms) + max_ack_delay, within the clamp.
    base = RTT + 4 * (RTT / 2) + cfg.max_ack_delay
    assert probe_at == pytest.approx(max(cfg.min_rto, base))
    cwnd = sender.cc.cwnd
    assert sender.on_pto(probe_at) == RETRY
    probe = sender.next_packets(probe_at)
    # No new data: the two oldest unacknowledged packets go again, each asking for an ack.
    assert seqs(probe) == [FIRST, FIRST + 1]
    assert pns(probe) == [3, 4]
    assert all(packet[5] is True for packet in probe)
    assert sender.in_flight == 5 > cwnd  # beyond the congestion window
    assert sender.cc.cwnd == cwnd  # a PTO changes no window
    assert sender.probes_sent == 2
    assert sender.timeouts == 1
    assert sender.fast_retransmits == 0  # and declares nothing lost
    assert sender.next_packets(probe_at) == []  # two probes per expiry, no more


def test_the_probe_timeout_prefers_new_data() -> None:
    sender = open_sender(5, config(initial_window=3))
    assert len(sender.next_packets(0.0)) == 3
    probe_at = sender.recovery.pto_deadline
    assert probe_at is not None
    sender.on_pto(probe_at)
    probe = sender.next_packets(probe_at)
    assert seqs(probe) == [FIRST + 3, FIRST + 4]
    assert all(packet[5] is True for packet in probe)
    assert sender.retransmissions == 0


def test_the_probe_timeout_prefers_new_data_then_repeats_the_oldest() -> None:
    sender = open_sender(4, config(initial_window=3))
    assert len(sender.next_packets(0.0)) == 3
    probe_at = sender.recovery.pto_deadline
    assert probe_at is not None
    sender.on_pto(probe_at)
    probe = sender.next_packets(probe_at)
    assert seqs(probe) == [FIRST + 3, FIRST]
    assert all(packet[5] is True for packet in probe)
    assert sender.retransmissions == 1


def test_a_probe_with_nothing_to_carry_it_is_a_ping() -> None:
    """Nothing queued, nothing in flight but a PING: the probe is a PING (no data to send)."""
    sender = open_sender(0)
    sender.recovery.on_packet_sent(sender.recovery.allocate_pn(), PING, 0.0)  # a keepalive
    probe_at = sender.recovery.pto_deadline
    assert probe_at is not None
    assert sender.on_pto(probe_at) == RETRY
    assert sender.next_packets(probe_at) == []
    assert sender.probe_ping is True


def test_the_probe_timeout_backs_off_and_progress_undoes_it() -> None:
    cfg = config(initial_window=4)
    sender = open_sender(4, cfg)
    sender.next_packets(0.0)
    recovery = sender.recovery
    base = recovery.pto_duration()
    assert base == pytest.approx(sender.rtt.pto_base(cfg.max_ack_delay))
    deadline = recovery.pto_deadline
    assert deadline == pytest.approx(base)
    expiries = []
    for expected in (2, 4):
        assert deadline is not None
        sender.on_pto(deadline)
        sender.next_packets(deadline)  # the probes restart the timer at the doubled duration
        expiries.append(deadline)
        assert recovery.pto_count == expected // 2
        assert recovery.pto_duration() == pytest.approx(min(expected * base, cfg.max_rto))
        assert recovery.pto_deadline == pytest.approx(deadline + expected * base)
        deadline = recovery.pto_deadline
    # The peer acknowledges the first packet (through the latest probe's packet number).
    now = expiries[-1] + RTT
    sender.on_ack(now, FIRST + 1, WINDOW, [], recovery.next_pn - 1, 0.0)
    assert recovery.pto_count == 0
    assert recovery.pto_duration() == pytest.approx(sender.rtt.pto_base(cfg.max_ack_delay))
    assert recovery.pto_deadline == pytest.approx(expiries[-1] + recovery.pto_duration())


def test_the_backoff_is_capped_at_max_rto() -> None:
    cfg = config(initial_rto=0.2, max_rto=0.2)
    sender = open_sender(1, cfg)
    sender.next_packets(0.0)
    recovery = sender.recovery
    for _ in range(6):
        deadline = recovery.pto_deadline
        assert deadline is not None
        sender.on_pto(deadline)
        sender.next_packets(deadline)
    assert recovery.pto_duration() == pytest.approx(cfg.max_rto)


def test_give_up_after_max_retransmits_unanswered_probe_timeouts() -> None:
    sender = open_sender(1, config(max_retransmits=2))
    sender.next_packets(0.0)
    recovery = sender.recovery
    results = []
    for _ in range(3):
        deadline = recovery.pto_deadline
        assert deadline is not None
        results.append(sender.on_pto(deadline))
        sender.next_packets(deadline)
    assert results == [RETRY, RETRY, GIVE_UP]
    assert recovery.pto_deadline is None
    assert sender.consecutive_timeouts == 3
