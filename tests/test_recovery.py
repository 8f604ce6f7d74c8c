"""Tests of ``rudp.core.recovery``: RFC 6298 RTO arithmetic and the RFC 9002 time threshold."""

from __future__ import annotations

import pytest

from rudp.core.recovery import CLOCK_GRANULARITY, K_PACKET_THRESHOLD, TIME_THRESHOLD, RttEstimator


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
