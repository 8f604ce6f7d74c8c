"""Pacing (rudp.core.pacing, specs/protocol.md section 12): the token bucket and its use.

RFC 9002 section 7.7: a sender should spread a window over the round trip
rather than send it back to back.  ``Pacer`` holds at most ``Config.pacing_burst``
packets and refills at the controller's ``pacing_rate``; the connection sends no
more than the bucket allows and asks to be woken (``get_timer``) when the next
packet may leave.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp.config import Config
from rudp.core import wire
from rudp.core.connection import SansIOConnection
from rudp.core.pacing import MIN_BURST, Pacer
from rudp.testing import LinkProfile, Simulator, make_pair

# --- the bucket ---------------------------------------------------------------------------


def test_a_full_bucket_releases_the_burst_and_no_more() -> None:
    pacer = Pacer(5)
    assert pacer.burst == 5
    assert pacer.budget(0.0, 100.0) == 5
    pacer.on_sent(5)
    assert pacer.budget(0.0, 100.0) == 0


def test_idle_time_fills_the_bucket_to_a_millisecond_within_min_and_burst() -> None:
    pacer = Pacer(5)
    pacer.budget(0.0, 100.0)
    pacer.on_sent(5)
    assert pacer.budget(1000.0, 100.0) == MIN_BURST  # 100 000 packets' worth of idle: 2
    pacer.on_sent(2)
    assert pacer.budget(2000.0, 3000.0) == 3  # a millisecond at 3000 packets/s
    pacer.on_sent(3)
    assert pacer.budget(3000.0, 1e6) == 5  # a millisecond is 1000 packets: the burst caps it


def test_the_bucket_refills_at_the_rate() -> None:
    pacer = Pacer(10)
    pacer.budget(1.0, 1e4)  # a millisecond holds 10 packets at this rate
    pacer.on_sent(10)
    assert pacer.budget(1.00005, 1e4) == 0  # half a packet
    assert pacer.budget(1.0001, 1e4) == 1
    pacer.on_sent(1)
    assert pacer.budget(1.0004, 1e4) == 3
    pacer.on_sent(3)
    assert pacer.budget(1.0004, 1e4) == 0  # the same instant refills nothing


def test_next_release_is_when_a_quantum_is_back() -> None:
    """The wakeup waits for what the bucket holds at the rate (two packets at least)."""
    pacer = Pacer(4)
    assert pacer.next_release(0.0, 100.0) is None  # a packet may go now
    pacer.budget(2.0, 100.0)
    pacer.on_sent(4)
    release = pacer.next_release(2.0, 100.0)
    assert release is not None and release == pytest.approx(2.02)  # MIN_BURST at 100/s
    assert pacer.budget(release, 100.0) == 2
    pacer.on_sent(2)
    release = pacer.next_release(release, 3000.0)
    assert release is not None and release == pytest.approx(2.021)  # a millisecond: 3
    assert pacer.budget(release, 3000.0) == 3


@pytest.mark.parametrize("now", [0.0, 1.0, 1e6, 1e9])
@pytest.mark.parametrize("rate", [1e9, 1e15, 1e300, math.inf])
def test_next_release_is_strictly_after_now_even_at_huge_rates(now: float, rate: float) -> None:
    """A deadline equal to ``now`` would refill nothing when it fires: the driver would spin."""
    pacer = Pacer(2)
    pacer.budget(now, rate)
    pacer.on_sent(2)
    release = pacer.next_release(now, rate)
    assert release is not None and release > now
    assert pacer.budget(release, rate) >= 1


def test_the_bucket_holds_a_packet_at_next_release_on_a_large_clock() -> None:
    """A monotonic clock 11 days after boot (1e6 s) and 1.1 Gbit/s of 1400-byte datagrams."""
    now, rate = 1e6, 1e5
    pacer = Pacer(10)
    pacer.budget(now, rate)
    pacer.on_sent(10)
    release = pacer.next_release(now, rate)
    assert release is not None and release > now
    assert pacer.budget(release, rate) >= 1


@given(
    now=st.floats(0.0, 1e7),
    rate=st.floats(1e-3, 1e12),
    burst=st.integers(1, 64),
    sent=st.integers(1, 64),
)
def test_the_bucket_holds_a_packet_whenever_next_release_says(
    now: float, rate: float, burst: int, sent: int
) -> None:
    """``next_release`` and ``budget`` agree however the floats round: every wakeup sends."""
    pacer = Pacer(burst)
    pacer.budget(now, rate)
    pacer.on_sent(min(sent, burst))
    release = pacer.next_release(now, rate)
    if release is None:
        assert pacer.budget(now, rate) >= 1
        return
    assert release > now
    assert pacer.budget(release, rate) >= 1


def test_no_pacing_without_a_rate() -> None:
    pacer = Pacer(3)
    assert pacer.budget(0.0, None) >= 1 << 20  # no limit from pacing
    pacer.on_sent(3)
    assert pacer.next_release(0.0, None) is None
    assert pacer.budget(0.0, None) >= 1 << 20
    # A rate appearing later starts from a full bucket, not an empty one.
    assert pacer.budget(0.0, 10.0) == 3


def test_a_bucket_needs_room_for_one_packet() -> None:
    with pytest.raises(ValueError):
        Pacer(0)
    with pytest.raises(ValueError):
        Config(pacing_burst=0)


# --- the connection -----------------------------------------------------------------------


def is_data(datagram: bytes) -> bool:
    return wire.decode(datagram).type in (wire.PacketType.DATA, wire.PacketType.FIN)


def paced_connection(burst: int) -> tuple[SansIOConnection, Simulator]:
    """A NewReno client with a wide window and an RTT sample, on a 10 ms path, idle.

    Its pacing rate (1.25 * 64 / 0.01 = 8000 packets/s) puts more than ``burst``
    packets in a millisecond, so the bucket holds the whole burst.
    """
    config = Config(congestion_control="newreno", pacing_burst=burst, initial_window=64)
    client, server = make_pair(config, seed=3)
    sim = Simulator(
        client, server, profile_ab=LinkProfile(delay=0.005), profile_ba=LinkProfile(delay=0.005)
    )
    client.connect(sim.now)
    client.send(b"first")
    assert sim.run_until(lambda: client.stats.messages_acked == 1, max_time=10)
    sim.run_for(0.5)  # idle: the bucket is full again
    return client, sim


def test_a_connection_sends_no_more_than_the_burst_at_once() -> None:
    burst = 4
    client, sim = paced_connection(burst)
    stats = client.stats
    assert stats.cwnd - stats.packets_in_flight > burst  # the window alone would allow more
    rate = stats.pacing_rate
    assert rate is not None and rate * 0.001 > burst  # 1.25 * cwnd / srtt, srtt near 10 ms
    for i in range(50):
        client.send(bytes([i]) * 100)
    now = sim.now
    first = client.datagrams_to_send(now)
    assert sum(map(is_data, first)) == burst
    assert [d for d in client.datagrams_to_send(now) if is_data(d)] == []  # same instant: none
    # The connection asks to be woken when the next quantum (here the burst) may go.
    timer = client.get_timer()
    assert timer is not None and now < timer <= now + burst / rate * (1 + 1e-9)
    assert timer == pytest.approx(now + burst / rate)
    client.handle_timer(timer)
    assert sum(map(is_data, client.datagrams_to_send(timer))) == burst


def test_pacing_spreads_a_window_at_the_pacing_rate() -> None:
    burst = 2
    client, sim = paced_connection(burst)
    for i in range(30):
        client.send(bytes([i]) * 100)
    now = sim.now
    rate = client.stats.pacing_rate
    assert rate is not None
    sends: list[tuple[float, int]] = []
    t = now
    for _ in range(12):
        count = sum(map(is_data, client.datagrams_to_send(t)))
        sends.append((t, count))
        timer = client.get_timer()
        assert timer is not None and timer > t
        t = timer
        client.handle_timer(t)
    assert sends[0][1] == burst
    assert all(count == burst for _, count in sends[1:])  # then a burst per burst / rate
    gaps = [b[0] - a[0] for a, b in pairwise(sends)]
    assert gaps == pytest.approx([burst / rate] * len(gaps))
