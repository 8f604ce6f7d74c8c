"""Tests of ``rudp.core.congestion``: registry, NewReno (RFC 5681/6582), CUBIC (RFC 9438), fixed."""

from __future__ import annotations

import math

import pytest

from rudp.config import Config
from rudp.core.congestion import (
    MIN_WINDOW,
    REGISTRY,
    Bbr,
    CongestionController,
    Cubic,
    Fixed,
    NewReno,
    create,
)
from rudp.core.congestion.cubic import ALPHA, BETA, C, cubic_k, w_cubic


def ack(
    cc: CongestionController,
    now: float,
    count: int,
    newest_sent_time: float,
    *,
    in_flight: int = 0,
    srtt: float | None = None,
) -> None:
    """The sender's ack hook as it calls it today: no min_rtt, no rate sample."""
    cc.on_ack(now, count, newest_sent_time, in_flight, srtt, None, None)


def lose(
    cc: CongestionController, now: float, newest_lost_sent_time: float, count: int = 1
) -> None:
    cc.on_packets_lost(now, count, newest_lost_sent_time, 0)


def test_registry_by_name() -> None:
    assert REGISTRY["newreno"] is NewReno
    assert REGISTRY["fixed"] is Fixed
    assert REGISTRY["cubic"] is Cubic
    assert REGISTRY["bbr"] is Bbr
    assert isinstance(create(Config()), Bbr)  # the default (specs/protocol.md section 12)
    assert isinstance(create(Config(congestion_control="fixed")), Fixed)
    assert isinstance(create(Config(congestion_control="cubic")), Cubic)
    assert isinstance(create(Config(congestion_control="bbr")), Bbr)
    with pytest.raises(ValueError, match="unknown congestion control"):
        create(Config(congestion_control="vegas"))
    assert all(issubclass(cls, CongestionController) for cls in REGISTRY.values())


# --- NewReno ------------------------------------------------------------------------------


def test_slow_start_grows_one_packet_per_ack() -> None:
    cc = NewReno(Config(initial_window=10))
    assert cc.cwnd == 10 and cc.ssthresh == float("inf")
    cc.on_packet_sent(0.0, 1)
    ack(cc, 1.0, 10, newest_sent_time=0.5)
    assert cc.cwnd == 20  # doubled in one round trip


def test_loss_halves_once_per_recovery_period() -> None:
    cc = NewReno(Config(initial_window=20))
    lose(cc, now=2.0, newest_lost_sent_time=1.0)
    assert cc.ssthresh == 10 and cc.cwnd == 10 and cc.in_recovery
    # More losses from the same flight (sent before recovery began): no new cut.
    lose(cc, now=2.1, newest_lost_sent_time=1.5)
    assert cc.cwnd == 10
    # Partial acks of old packets do not grow the window (RFC 6582).
    ack(cc, 2.2, 5, newest_sent_time=1.9)
    assert cc.cwnd == 10 and cc.in_recovery
    # A packet sent after the recovery began is acked: recovery ends.
    ack(cc, 2.5, 1, newest_sent_time=2.05)
    assert not cc.in_recovery
    # A loss of a packet sent after recovery started is a new congestion event.
    lose(cc, now=3.0, newest_lost_sent_time=2.6)
    assert cc.cwnd == 5


def test_congestion_avoidance_adds_one_packet_per_window() -> None:
    cc = NewReno(Config(initial_window=20))
    lose(cc, 1.0, 0.5)  # ssthresh = cwnd = 10
    ack(cc, 2.0, 1, newest_sent_time=1.5)  # ends recovery, starts counting
    for _ in range(9):
        ack(cc, 2.0, 1, newest_sent_time=1.5)
    assert cc.cwnd == 11
    for _ in range(10):
        ack(cc, 2.0, 1, newest_sent_time=1.5)
    assert cc.cwnd == 11  # needs 11 more now
    ack(cc, 2.0, 1, newest_sent_time=1.5)
    assert cc.cwnd == 12


def test_persistent_congestion_collapses_to_the_minimum_window() -> None:
    cc = NewReno(Config(initial_window=16))
    cc.on_persistent_congestion(1.0)
    # RFC 9002 section 7.6.2: kMinimumWindow; no loss event set ssthresh: RFC 5681 eq. (4).
    assert cc.cwnd == MIN_WINDOW == 2 and cc.ssthresh == 8
    # Acks of packets sent before the collapse belong to it.
    ack(cc, 1.2, 1, newest_sent_time=0.9)
    assert cc.cwnd == 2
    ack(cc, 2.0, 1, newest_sent_time=1.5)
    assert cc.cwnd == 3  # slow start again


def test_persistent_congestion_after_a_loss_event_does_not_halve_twice() -> None:
    cc = NewReno(Config(initial_window=20))
    lose(cc, 1.0, 0.5)
    assert cc.ssthresh == 10
    cc.on_persistent_congestion(1.5)
    assert cc.cwnd == 2 and cc.ssthresh == 10  # RFC 9002 appendix B.8 reduces once


def test_ssthresh_floor_is_two_packets() -> None:
    cc = NewReno(Config(initial_window=2))
    lose(cc, 1.0, 0.5)
    assert cc.ssthresh == 2 and cc.cwnd == 2


def test_window_never_exceeds_max_send_window() -> None:
    cc = NewReno(Config(initial_window=10, max_send_window=12))
    ack(cc, 1.0, 100, 0.5)
    assert cc.cwnd == 12


def test_spurious_loss_restores_the_window_before_the_reduction() -> None:
    cc = NewReno(Config(initial_window=20))
    lose(cc, 1.0, 0.5)
    assert cc.cwnd == 10 and cc.in_recovery
    cc.on_spurious_loss(1.1)  # RFC 4015: the Eifel response
    assert cc.cwnd == 20 and cc.ssthresh == float("inf") and not cc.in_recovery
    cc.on_spurious_loss(1.2)  # only the last reduction can be undone
    assert cc.cwnd == 20
    # Undoing a collapse too.
    cc.on_persistent_congestion(2.0)
    assert cc.cwnd == 2
    cc.on_spurious_loss(2.1)
    assert cc.cwnd == 20 and cc.ssthresh == float("inf")


def test_spurious_undo_keeps_a_window_regrown_since() -> None:
    cc = NewReno(Config(initial_window=4))
    lose(cc, 1.0, 0.5)  # 4 -> 2
    ack(cc, 2.0, 1, 1.5)
    ack(cc, 2.0, 8, 1.5)  # grown past 4 in congestion avoidance? no: 2 -> 3 -> 4 -> ...
    grown = cc.cwnd
    cc.on_spurious_loss(2.1)
    assert cc.cwnd == max(grown, 4)


def test_pacing_rate_is_five_quarters_of_cwnd_per_srtt() -> None:
    cc = NewReno(Config(initial_window=10, initial_rto=1.0))
    # No RTT yet: the initial timeout stands in for it (RFC 9002 section 6.2.2).
    assert cc.pacing_rate == pytest.approx(1.25 * 10 / 1.0)
    ack(cc, 0.1, 1, 0.0, srtt=0.1)
    assert cc.pacing_rate == pytest.approx(1.25 * 11 / 0.1)  # RFC 9002 section 7.7


def test_fixed_ignores_everything() -> None:
    cc = Fixed(Config(max_send_window=64))
    cc.on_packet_sent(0.0, 1)
    lose(cc, 1.0, 0.5)
    cc.on_persistent_congestion(2.0)
    cc.on_spurious_loss(2.5)
    ack(cc, 3.0, 5, 2.5, srtt=0.1)
    assert cc.cwnd == 64 and cc.ssthresh == float("inf") and cc.pacing_rate is None


# --- CUBIC (RFC 9438) ---------------------------------------------------------------------


def test_cubic_constants_and_equations() -> None:
    assert (C, BETA) == (0.4, 0.7)
    assert math.isclose(ALPHA, 3 * 0.3 / 1.7)  # section 4.3 equation (3)
    # Equation (2): K = cbrt((W_max - cwnd_epoch) / C); equation (1) passes W_max at t = K.
    k = cubic_k(100.0, 70.0)
    assert k == pytest.approx((30 / 0.4) ** (1 / 3))
    assert w_cubic(0.0, k, 100.0) == pytest.approx(70.0)
    assert w_cubic(k, k, 100.0) == pytest.approx(100.0)
    assert w_cubic(k + 2.0, k, 100.0) == pytest.approx(100.0 + 0.4 * 8)
    assert cubic_k(50.0, 60.0) == 0.0


def _cubic_after_loss(window: int, srtt: float = 0.1) -> Cubic:
    """A CUBIC flow at ``window`` packets that just lost a packet at t = 1 s."""
    cc = Cubic(Config(initial_window=window, max_send_window=100_000))
    ack(cc, 0.5, 0, 0.4, srtt=srtt)
    lose(cc, 1.0, 0.9)
    return cc


def test_cubic_multiplicative_decrease_and_fast_convergence() -> None:
    cc = _cubic_after_loss(100)
    # Section 4.6: ssthresh = cwnd * beta; first event: W_max = cwnd.
    assert cc.cwnd == 70 and cc.ssthresh == pytest.approx(70) and cc.w_max == 100
    ack(cc, 1.2, 1, newest_sent_time=1.1)  # ends recovery: the epoch begins
    assert cc.k == pytest.approx(cubic_k(100.0, 70.0))
    ack(cc, 1.3, 20, newest_sent_time=1.2)
    before = cc.cwnd
    assert 70 <= before < 100
    lose(cc, 2.0, 1.9)
    # Section 4.7: the window is below W_max (100): W_max = cwnd * (1 + beta) / 2.
    assert cc.w_max == pytest.approx(before * 1.7 / 2, abs=1.0)
    assert cc.cwnd == int(before * 0.7) or cc.cwnd == int(before * 0.7) + 1


def test_cubic_follows_w_cubic_in_the_concave_region() -> None:
    """Acked once per 1/100 RTT for 3 s: the window tracks W_cubic(t + RTT) (section 4.2)."""
    srtt = 0.1
    cc = _cubic_after_loss(1000, srtt=srtt)
    start = 1.1
    ack(cc, start, 1, newest_sent_time=1.05, srtt=srtt)  # the epoch begins at 1.1 s
    k = cc.k
    assert k == pytest.approx(cubic_k(1000.0, 700.0))  # about 4.2 s
    now = start
    while now < start + 3.0:
        now += srtt / 100
        ack(cc, now, max(1, cc.cwnd // 100), newest_sent_time=now - srtt, srtt=srtt)
    expected = w_cubic(now - start + srtt, k, 1000.0)
    # The per-ack step aims at one RTT ahead, so the window is close to, not past, the curve.
    assert expected * 0.95 <= cc.cwnd <= expected * 1.01
    assert cc.cwnd < 1000  # concave: still below the plateau


def test_cubic_reno_friendly_region_on_a_short_rtt() -> None:
    """Small window, short RTT: W_est (section 4.3) outgrows W_cubic and sets the window."""
    srtt = 0.002
    cc = _cubic_after_loss(20, srtt=srtt)
    ack(cc, 1.01, 1, newest_sent_time=1.005, srtt=srtt)
    now = 1.01
    rounds = 50  # 0.1 s: W_cubic has barely moved from 14 towards 20
    for _ in range(rounds):
        now += srtt
        ack(cc, now, cc.cwnd, newest_sent_time=now - srtt, srtt=srtt)
    cubic_only = w_cubic(now - 1.01, cc.k, 20.0)
    assert cubic_only < 15
    # Reno's estimate: alpha_cubic packets per RTT from 14 up to cwnd_prior (20), then 1 per RTT.
    rounds_to_prior = (20 - 14) / ALPHA
    reno = 20 + (rounds - rounds_to_prior)
    assert reno - 2 <= cc.cwnd <= reno + 1


def test_cubic_convex_region_after_the_plateau() -> None:
    # A long RTT, so Reno's estimate (section 4.3) stays below the cubic.
    srtt = 0.2
    cc = _cubic_after_loss(200, srtt=srtt)
    ack(cc, 1.1, 1, newest_sent_time=1.05, srtt=srtt)
    now = 1.1
    end = 1.1 + cc.k + 2.0
    while now < end:
        now += srtt / 10
        ack(cc, now, max(1, cc.cwnd // 10), newest_sent_time=now - srtt, srtt=srtt)
    assert cc.cwnd > 200  # past W_max: convex growth
    assert cc.cwnd == pytest.approx(w_cubic(now - 1.1 + srtt, cc.k, 200.0), rel=0.05)


def test_cubic_grows_at_most_half_a_window_per_rtt() -> None:
    """Section 4.2: target <= 1.5 * cwnd, so one RTT of acks adds at most 50%."""
    srtt = 0.1
    cc = _cubic_after_loss(100, srtt=srtt)
    ack(cc, 1.1, 1, newest_sent_time=1.05, srtt=srtt)
    start = cc.cwnd
    # Ten seconds later (far into the convex region) one window of acks arrives at once.
    ack(cc, 11.1, start, newest_sent_time=11.0, srtt=srtt)
    assert cc.cwnd <= math.ceil(1.5 * start)


def test_cubic_one_reduction_per_recovery_period_and_persistent_congestion() -> None:
    cc = _cubic_after_loss(100)
    lose(cc, 1.05, 0.95)  # same flight
    assert cc.cwnd == 70
    cc.on_persistent_congestion(1.5)
    assert cc.cwnd == MIN_WINDOW
    # Section 4.8: slow start to ssthresh, then an epoch with K = 0 at the window it starts at.
    now = 2.0
    while cc.cwnd < cc.ssthresh:
        ack(cc, now, cc.cwnd, newest_sent_time=now - 0.1, srtt=0.1)
        now += 0.1
    ack(cc, now, 1, newest_sent_time=now - 0.1, srtt=0.1)
    assert cc.k == 0.0 and cc.w_max == pytest.approx(cc.cwnd, abs=1.5)


def test_cubic_spurious_loss_restores_the_epoch() -> None:
    srtt = 0.1
    cc = _cubic_after_loss(100, srtt=srtt)
    ack(cc, 1.1, 1, newest_sent_time=1.05, srtt=srtt)
    for i in range(20):
        ack(cc, 1.2 + i * 0.01, 5, newest_sent_time=1.15 + i * 0.01, srtt=srtt)
    window, w_max, k, ssthresh = cc.cwnd, cc.w_max, cc.k, cc.ssthresh
    lose(cc, 1.5, 1.45)
    assert cc.cwnd < window and cc.w_max != w_max
    cc.on_spurious_loss(1.55)  # section 4.9
    assert (cc.cwnd, cc.w_max, cc.k, cc.ssthresh) == (window, w_max, k, ssthresh)
    assert not cc.in_recovery


def test_cubic_pacing_like_newreno() -> None:
    cc = Cubic(Config(initial_window=10, initial_rto=1.0))
    assert cc.pacing_rate == pytest.approx(1.25 * 10 / 1.0)
    ack(cc, 0.05, 0, 0.0, srtt=0.05)
    assert cc.pacing_rate == pytest.approx(1.25 * 10 / 0.05)
