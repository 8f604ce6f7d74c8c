"""Tests of ``rudp.core.recovery``'s ``RttEstimator``.

RFC 6298 RTO arithmetic (the handshake's timer), and RFC 9002's parts: min_rtt
(section 5.2), the ack-delay adjustment of the smoothed RTT (section 5.3), the
time threshold (section 6.1.2) and the probe timeout's base (section 6.2.1).
"""

from __future__ import annotations

from collections import deque

import pytest

from rudp.config import Config
from rudp.core.recovery import CLOCK_GRANULARITY, K_PACKET_THRESHOLD, TIME_THRESHOLD, RttEstimator
from rudp.core.sender import Sender
from rudp.events import Event


def test_first_sample_sets_srtt_and_half_rttvar() -> None:
    # RFC 6298 section 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, 4*RTTVAR).
    est = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=60.0)
    assert est.rto == 1.0 and est.srtt is None
    est.on_sample(0.1)
    assert est.srtt == pytest.approx(0.1)
    assert est.rttvar == pytest.approx(0.05)
    assert est.rto == pytest.approx(0.3)


def test_later_samples_use_alpha_and_beta() -> None:
    # Section 2.3, with RTTVAR updated from the *old* SRTT.
    est = RttEstimator(1.0, 0.01, 60.0)
    est.on_sample(0.1)
    est.on_sample(0.3)
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.3)
    srtt = 0.875 * 0.1 + 0.125 * 0.3
    assert est.rttvar == pytest.approx(rttvar)
    assert est.srtt == pytest.approx(srtt)
    assert est.rto == pytest.approx(srtt + 4 * rttvar)
    assert est.latest == 0.3


def test_rto_is_clamped_to_min_and_max() -> None:
    est = RttEstimator(1.0, 0.2, 2.0)
    est.on_sample(0.001)
    assert est.rto == 0.2  # section 2.4 floor (configurable)
    est.on_sample(10.0)
    assert est.rto == 2.0  # section 2.5 cap
    est.on_sample(-1.0)  # a clock going backwards is ignored
    assert est.latest == 10.0


def test_backoff_doubles_up_to_max_and_a_sample_resets_it() -> None:
    est = RttEstimator(0.1, 0.1, 2.0)
    waits = []
    for _ in range(6):
        waits.append(est.rto)
        est.back_off()
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0])
    est.on_sample(0.05)  # section 5.7: a fresh sample recomputes the RTO
    assert est.rto == pytest.approx(max(0.1, 0.05 + 4 * 0.025))


def test_loss_delay_is_nine_eighths_of_the_larger_rtt() -> None:
    """RFC 9002 section 6.1.2: kTimeThreshold * max(smoothed_rtt, latest_rtt), >= 1 ms."""
    est = RttEstimator(1.0, 0.05, 60.0)
    assert est.loss_delay() == 1.0  # no sample yet: the initial RTO stands in
    est.on_sample(0.1)
    est.on_sample(0.02)
    assert est.loss_delay() == pytest.approx(TIME_THRESHOLD * est.srtt)  # type: ignore[operator]
    est.on_sample(0.5)
    assert est.loss_delay() == pytest.approx(TIME_THRESHOLD * 0.5)
    tiny = RttEstimator(1.0, 0.05, 60.0)
    tiny.on_sample(0.0001)
    assert tiny.loss_delay() == CLOCK_GRANULARITY


def test_reset_backoff_undoes_doubling_without_a_sample() -> None:
    """Forward progress undoes backoff (RFC 9002 section 6.2.1) even under Karn's rule."""
    est = RttEstimator(1.0, 0.05, 4.0)
    est.reset_backoff()
    assert est.rto == 1.0  # nothing to recompute from before the first sample
    est.on_sample(0.1)
    computed = est.rto
    est.back_off()
    est.back_off()
    assert est.rto == pytest.approx(4 * computed)
    est.reset_backoff()
    assert est.rto == pytest.approx(computed)
    assert K_PACKET_THRESHOLD == 3


# --- RFC 9002 section 5: min_rtt and the ack delay --------------------------------------------


def test_min_rtt_is_the_smallest_sample_and_ignores_the_ack_delay() -> None:
    """RFC 9002 section 5.2: min_rtt is the raw minimum, ack delay not subtracted."""
    est = RttEstimator(1.0, 0.05, 60.0)
    assert est.min_rtt is None
    est.on_sample(0.1, ack_delay=0.02)
    assert est.min_rtt == 0.1
    est.on_sample(0.3, ack_delay=0.2)
    assert est.min_rtt == 0.1  # a larger sample never raises it, whatever its delay
    est.on_sample(0.05, ack_delay=0.01)
    assert est.min_rtt == 0.05
    est.on_sample(-0.01)  # ignored
    assert est.min_rtt == 0.05


def test_the_first_sample_ignores_the_ack_delay() -> None:
    """RFC 9002 section 5.3: smoothed_rtt = latest_rtt, rttvar = latest_rtt / 2 at first."""
    est = RttEstimator(1.0, 0.05, 60.0)
    est.on_sample(0.1, ack_delay=0.04)
    assert est.srtt == pytest.approx(0.1)
    assert est.rttvar == pytest.approx(0.05)
    assert est.latest == 0.1


def test_the_ack_delay_is_subtracted_when_that_stays_above_min_rtt() -> None:
    """RFC 9002 section 5.3: adjusted_rtt = latest_rtt - ack_delay if >= min_rtt + ack_delay."""
    est = RttEstimator(1.0, 0.05, 60.0)
    est.on_sample(0.1)
    est.on_sample(0.13, ack_delay=0.02)  # 0.13 >= 0.1 + 0.02: adjusted to 0.11
    adjusted = 0.11
    assert est.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * abs(0.1 - adjusted))
    assert est.srtt == pytest.approx(0.875 * 0.1 + 0.125 * adjusted)
    assert est.latest == 0.13  # latest and min_rtt keep the raw sample
    assert est.min_rtt == 0.1


def test_the_ack_delay_is_not_subtracted_below_min_rtt() -> None:
    """A subtraction that would go below min_rtt is not made: the sample is taken as it is."""
    est = RttEstimator(1.0, 0.05, 60.0)
    est.on_sample(0.1)
    est.on_sample(0.11, ack_delay=0.02)  # 0.11 < 0.1 + 0.02: unadjusted
    assert est.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * abs(0.1 - 0.11))
    assert est.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.11)


def test_recovery_caps_the_reported_ack_delay_at_max_ack_delay() -> None:
    """RFC 9002 section 5.3: ack_delay = min(ack_delay, max_ack_delay) once the peer is known."""
    config = Config(congestion_control="newreno", max_ack_delay=0.01)
    sender = Sender(config, 1000, deque[Event]())
    sender.rtt.on_sample(0.1)  # the handshake's sample
    sender.on_ack(0.0, 1000, 100, [], -1, 0.0)
    sender.queue_message(b"x")
    (packet,) = sender.next_packets(1.0)
    # The peer claims it held the ack for 0.5 s: only max_ack_delay (10 ms) is believed.
    sender.on_ack(1.2, 1001, 100, [], packet[0], 0.5)
    assert sender.rtt.latest == pytest.approx(0.2)
    assert sender.rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * (0.2 - 0.01))


def test_a_retransmission_gives_an_rtt_sample_through_the_echo() -> None:
    """RFC 9002 section 5.1: the echoed packet number names the transmission (no Karn)."""
    sender = Sender(Config(congestion_control="newreno"), 1000, deque[Event]())
    sender.rtt.on_sample(0.1)
    sender.on_ack(0.0, 1000, 100, [], -1, 0.0)
    sender.queue_message(b"x")
    sender.next_packets(0.0)
    deadline = sender.recovery.pto_deadline
    assert deadline is not None
    sender.on_pto(deadline)
    (probe,) = sender.next_packets(deadline)  # the same data under a new packet number
    assert probe[1] == 1000 and probe[0] == 1
    sender.on_ack(deadline + 0.1, 1001, 100, [], probe[0], 0.0)
    assert sender.rtt.latest == pytest.approx(0.1)  # timed from the probe, not the original


# --- RFC 9002 section 6.2.1: the probe timeout --------------------------------------------------


def test_pto_base_before_a_sample_is_the_initial_timeout() -> None:
    est = RttEstimator(initial_rto=0.7, min_rto=0.05, max_rto=60.0)
    assert est.pto_base(max_ack_delay=0.025) == 0.7


def test_pto_base_is_srtt_plus_four_rttvar_plus_max_ack_delay() -> None:
    est = RttEstimator(1.0, 0.001, 60.0)
    est.on_sample(0.1)
    est.on_sample(0.2)
    assert est.srtt is not None and est.rttvar is not None
    expected = est.srtt + 4 * est.rttvar + 0.025
    assert est.pto_base(0.025) == pytest.approx(expected)
    assert est.pto_base(0.0) == pytest.approx(expected - 0.025)


def test_pto_base_keeps_the_granularity_when_rttvar_vanishes() -> None:
    """max(4 * rttvar, kGranularity): a steady path still gets 1 ms of variance."""
    est = RttEstimator(1.0, 0.001, 60.0)
    for _ in range(200):
        est.on_sample(0.1)
    assert est.rttvar is not None and 4 * est.rttvar < CLOCK_GRANULARITY
    assert est.pto_base(0.01) == pytest.approx(0.1 + CLOCK_GRANULARITY + 0.01)


def test_pto_base_is_clamped_to_min_and_max_rto() -> None:
    low = RttEstimator(1.0, 0.2, 2.0)
    low.on_sample(0.001)
    assert low.pto_base(0.01) == 0.2  # the floor, max_ack_delay included before clamping
    high = RttEstimator(1.0, 0.2, 2.0)
    high.on_sample(10.0)
    assert high.pto_base(0.01) == 2.0  # the cap
    # The floor applies to the sum: 30 ms + 4 * 15 ms + 25 ms = 115 ms stays above 100 ms.
    mid = RttEstimator(1.0, 0.1, 2.0)
    mid.on_sample(0.03)
    assert mid.pto_base(0.025) == pytest.approx(0.03 + 4 * 0.015 + 0.025)
