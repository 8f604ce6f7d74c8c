"""Tests of ``rudp.core.congestion``: registry, NewReno (RFC 5681/6582), fixed."""

from __future__ import annotations

import pytest

from rudp.config import Config
from rudp.core.congestion import (
    MIN_WINDOW,
    REGISTRY,
    CongestionController,
    Fixed,
    NewReno,
    create,
)


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
    assert isinstance(create(Config()), NewReno)
    assert isinstance(create(Config(congestion_control="fixed")), Fixed)
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
    cc = NewReno(Config(initial_window=10))
    assert cc.pacing_rate is None  # no RTT yet: no pacing
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
