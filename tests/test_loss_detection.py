"""Send-order loss detection, the loss timer and the tail-loss probe (rudp.core.sender).

These are the mechanisms that keep a lossy transfer from stalling on the
retransmission timer: RFC 9002 section 6.1 thresholds applied in send order (so a
retransmission lost again is found like any packet) and RFC 8985 section 7's probe.
"""

from __future__ import annotations

from collections import deque

import pytest

from rudp.config import Config
from rudp.core.recovery import TIME_THRESHOLD
from rudp.core.sender import Sender
from rudp.events import Event

FIRST = 1000
RTT = 0.01


def open_sender(messages: int, config: Config | None = None) -> Sender:
    """A sender past the handshake: RTT known, the peer's window open."""
    sender = Sender(config or Config(), FIRST, deque[Event]())
    sender.rtt.on_sample(RTT)
    sender.on_ack(0.0, FIRST, 100, [])
    for index in range(messages):
        sender.queue_message(bytes([index]))
    return sender


def sent_seqs(packets: list[tuple[int, object, int, bool, bool]]) -> list[int]:
    return [packet[0] for packet in packets]


def test_a_retransmission_lost_again_is_found_without_the_timer() -> None:
    sender = open_sender(10)
    assert sent_seqs(sender.next_packets(0.0)) == list(range(FIRST, FIRST + 10))
    # Everything but the first arrives: three later packets acked, so it is lost.
    sender.on_ack(RTT, FIRST, 100, [(FIRST + 1, FIRST + 10)])
    for index in range(10, 15):
        sender.queue_message(bytes([index]))
    first_repair = sender.next_packets(RTT)
    assert first_repair[0][0] == FIRST and first_repair[0][4] is True  # resent, ACK_NOW
    assert sent_seqs(first_repair[1:]) == list(
        range(FIRST + 10, FIRST + 10 + len(first_repair) - 1)
    )
    # The repair is lost too, but the packets sent after it are acknowledged.
    sender.on_ack(2 * RTT, FIRST, 100, [(FIRST + 1, FIRST + 10 + len(first_repair) - 1)])
    second_repair = sender.next_packets(2 * RTT)
    assert second_repair and second_repair[0][0] == FIRST
    assert sender.timeouts == 0
    assert sender.fast_retransmits == 2


def test_time_threshold_declares_a_tail_loss_without_three_successors() -> None:
    sender = open_sender(3)
    assert sent_seqs(sender.next_packets(0.0)) == [FIRST, FIRST + 1, FIRST + 2]
    sender.on_ack(RTT, FIRST, 100, [(FIRST + 2, FIRST + 3)])  # only the last arrived
    assert sender.fast_retransmits == 0  # one successor: not lost by count
    deadline = sender.loss_deadline
    assert deadline is not None
    assert deadline == pytest.approx(sender.rtt.loss_delay())  # sent at 0.0
    assert sender.rtt.loss_delay() >= TIME_THRESHOLD * RTT
    assert sender.rto_deadline is not None and deadline < sender.rto_deadline
    sender.detect_losses(deadline)
    assert sender.fast_retransmits == 2
    assert sent_seqs(sender.next_packets(deadline)) == [FIRST, FIRST + 1]


def test_the_loss_timer_firing_exactly_at_its_deadline_makes_progress() -> None:
    """A deadline compared in another form than it was computed could fire forever."""
    sender = open_sender(2)
    sender.next_packets(0.1)
    sender.on_ack(0.1 + RTT, FIRST, 100, [(FIRST + 1, FIRST + 2)])
    deadline = sender.loss_deadline
    assert deadline is not None
    sender.detect_losses(deadline)
    assert sender.loss_deadline is None
    assert sender.fast_retransmits == 1


def test_tail_loss_probe_resends_the_newest_packet_beyond_the_window() -> None:
    sender = open_sender(3, Config(initial_window=3))
    assert len(sender.next_packets(0.0)) == 3
    assert sender.next_packets(0.0) == []  # congestion window full
    probe_at = sender.probe_deadline
    assert probe_at is not None
    assert probe_at == pytest.approx(2 * RTT)  # RFC 8985 section 7.2: PTO = 2 * SRTT
    assert sender.rto_deadline is not None and probe_at < sender.rto_deadline
    sender.on_probe_timeout(probe_at)
    probe = sender.next_packets(probe_at)
    assert sent_seqs(probe) == [FIRST + 2]
    assert probe[0][4] is True  # asks for an immediate ack
    assert sender.tail_probes == 1
    assert sender.probe_deadline is None  # one probe until an ack re-arms it
    assert sender.timeouts == 0


def test_tail_loss_probe_prefers_new_data() -> None:
    sender = open_sender(5, Config(initial_window=3))
    assert len(sender.next_packets(0.0)) == 3
    probe_at = sender.probe_deadline
    assert probe_at is not None
    sender.on_probe_timeout(probe_at)
    probe = sender.next_packets(probe_at)
    assert sent_seqs(probe) == [FIRST + 3]
    assert probe[0][4] is True


def test_progress_undoes_the_timer_backoff() -> None:
    sender = open_sender(4, Config(initial_window=4))
    sender.next_packets(0.0)
    rto = sender.rtt.rto
    deadline = sender.rto_deadline
    assert deadline is not None
    sender.on_timeout(deadline)
    assert sender.rtt.rto == pytest.approx(2 * rto)
    sender.next_packets(deadline)  # two probes go out
    sender.on_ack(deadline + RTT, FIRST + 1, 100, [])
    assert sender.rtt.rto == pytest.approx(rto)
