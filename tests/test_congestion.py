"""Tests of ``rudp.core.congestion``: registry, NewReno (RFC 5681 / 6582) and the fixed window."""

from __future__ import annotations

import pytest

from rudp.config import Config
from rudp.core.congestion import REGISTRY, CongestionController, Fixed, NewReno, create


def test_registry_by_name() -> None:
    assert REGISTRY["newreno"] is NewReno
    assert REGISTRY["fixed"] is Fixed
    assert isinstance(create(Config()), NewReno)
    assert isinstance(create(Config(congestion_control="fixed")), Fixed)
    with pytest.raises(ValueError, match="unknown congestion control"):
        create(Config(congestion_control="cubic"))
    assert all(issubclass(cls, CongestionController) for cls in REGISTRY.values())


def test_slow_start_grows_one_packet_per_ack() -> None:
    cc = NewReno(Config(initial_window=10))
    assert cc.cwnd == 10 and cc.ssthresh == float("inf")
    cc.on_packet_sent(0.0)
    cc.on_packets_acked(1.0, 10, newest_sent_time=0.5)
    assert cc.cwnd == 20  # doubled in one round trip


def test_loss_halves_once_per_recovery_period() -> None:
    cc = NewReno(Config(initial_window=20))
    cc.on_packets_lost(now=2.0, newest_lost_sent_time=1.0)
    assert cc.ssthresh == 10 and cc.cwnd == 10 and cc.in_recovery
    # More losses from the same flight (sent before recovery began): no new cut.
    cc.on_packets_lost(now=2.1, newest_lost_sent_time=1.5)
    assert cc.cwnd == 10
    # Partial acks of old packets do not grow the window (RFC 6582).
    cc.on_packets_acked(2.2, 5, newest_sent_time=1.9)
    assert cc.cwnd == 10 and cc.in_recovery
    # A packet sent after the recovery began is acked: recovery ends.
    cc.on_packets_acked(2.5, 1, newest_sent_time=2.05)
    assert not cc.in_recovery
    # A loss of a packet sent after recovery started is a new congestion event.
    cc.on_packets_lost(now=3.0, newest_lost_sent_time=2.6)
    assert cc.cwnd == 5


def test_congestion_avoidance_adds_one_packet_per_window() -> None:
    cc = NewReno(Config(initial_window=20))
    cc.on_packets_lost(1.0, 0.5)  # ssthresh = cwnd = 10
    cc.on_packets_acked(2.0, 1, newest_sent_time=1.5)  # ends recovery, starts counting
    for _ in range(9):
        cc.on_packets_acked(2.0, 1, newest_sent_time=1.5)
    assert cc.cwnd == 11
    for _ in range(10):
        cc.on_packets_acked(2.0, 1, newest_sent_time=1.5)
    assert cc.cwnd == 11  # needs 11 more now
    cc.on_packets_acked(2.0, 1, newest_sent_time=1.5)
    assert cc.cwnd == 12


def test_timeout_collapses_to_one_packet() -> None:
    cc = NewReno(Config(initial_window=16))
    cc.on_rto(1.0)
    assert cc.cwnd == 1 and cc.ssthresh == 8
    cc.on_packets_acked(2.0, 1, newest_sent_time=1.5)
    assert cc.cwnd == 2  # slow start again


def test_ssthresh_floor_is_two_packets() -> None:
    cc = NewReno(Config(initial_window=2))
    cc.on_packets_lost(1.0, 0.5)
    assert cc.ssthresh == 2 and cc.cwnd == 2


def test_window_never_exceeds_max_send_window() -> None:
    cc = NewReno(Config(initial_window=10, max_send_window=12))
    cc.on_packets_acked(1.0, 100, 0.5)
    assert cc.cwnd == 12


def test_fixed_ignores_everything() -> None:
    cc = Fixed(Config(max_send_window=64))
    cc.on_packet_sent(0.0)
    cc.on_packets_lost(1.0, 0.5)
    cc.on_rto(2.0)
    cc.on_packets_acked(3.0, 5, 2.5)
    assert cc.cwnd == 64 and cc.ssthresh == float("inf")
