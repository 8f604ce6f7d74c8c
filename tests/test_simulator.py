"""Tests of the virtual-time simulator, driven by small fake endpoints.

The fakes are independent of rudp's core on purpose: they test the simulator's
clock, delivery and bookkeeping, not the protocol.  The last tests cover
``ConnectionPair``, which has no network to fake and steps real connections.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp.events import Event, MessageAcknowledged, MessageReceived
from rudp.testing import LinkProfile, Simulator, derive_rng

_FRAME = struct.Struct(">BI")
_DATA, _ACK = 1, 2


class StopAndWait:
    """A minimal stop-and-wait ARQ endpoint: just enough protocol to exercise the simulator."""

    def __init__(self, messages: list[bytes], rto: float = 0.1) -> None:
        self.queue = list(messages)
        self.rto = rto
        self.next_id = 0  # id of the message in flight (or next to send)
        self.expected = 0  # next id we accept from the peer
        self.in_flight = False
        self.timer: float | None = None
        self.out: list[bytes] = []
        self.pending: deque[Event] = deque()
        self.received_at: list[float] = []
        self.timer_calls = 0

    @staticmethod
    def frame(kind: int, number: int, payload: bytes = b"") -> bytes:
        body = _FRAME.pack(kind, number) + payload
        return body + zlib.crc32(body).to_bytes(4, "big")

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if not self.in_flight and self.next_id < len(self.queue):
            self.out.append(self.frame(_DATA, self.next_id, self.queue[self.next_id]))
            self.in_flight = True
            self.timer = now + self.rto
        out, self.out = self.out, []
        return out

    def receive_datagram(self, data: bytes, now: float) -> None:
        if len(data) < _FRAME.size + 4 or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:]):
            return  # corrupted or truncated: drop, as a real endpoint must
        kind, number = _FRAME.unpack_from(data)
        if kind == _DATA:
            if number == self.expected:
                self.expected += 1
                self.received_at.append(now)
                self.pending.append(MessageReceived(data[_FRAME.size : -4]))
            self.out.append(self.frame(_ACK, number))
        elif kind == _ACK and self.in_flight and number == self.next_id:
            self.pending.append(MessageAcknowledged(number))
            self.next_id += 1
            self.in_flight = False
            self.timer = None

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.timer_calls += 1
        self.out.append(self.frame(_DATA, self.next_id, self.queue[self.next_id]))
        self.timer = now + self.rto

    def next_event(self) -> Event | None:
        return self.pending.popleft() if self.pending else None


class Alarm:
    """An endpoint that only has timers: fires at the given times, records when."""

    def __init__(self, times: list[float]) -> None:
        self.times = sorted(times)
        self.fired: list[float] = []

    def datagrams_to_send(self, now: float) -> list[bytes]:
        return []

    def receive_datagram(self, data: bytes, now: float) -> None:
        raise AssertionError("nothing should be sent to an alarm")

    def get_timer(self) -> float | None:
        return self.times[0] if self.times else None

    def handle_timer(self, now: float) -> None:
        while self.times and self.times[0] <= now:
            self.times.pop(0)
            self.fired.append(now)

    def next_event(self) -> Event | None:
        return None


class Stuck(Alarm):
    """A broken endpoint whose timer is always due and never makes progress."""

    def get_timer(self) -> float | None:
        return 0.0

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)


def _messages(n: int, tag: bytes) -> list[bytes]:
    return [tag + i.to_bytes(2, "big") * (i % 7) for i in range(n)]


def _received(sim: Simulator, side: str) -> list[bytes]:
    return [e.data for e in sim.events[side] if isinstance(e, MessageReceived)]


def _acked(sim: Simulator, side: str) -> list[int]:
    return [e.message_id for e in sim.events[side] if isinstance(e, MessageAcknowledged)]


def _run_arq(profile: LinkProfile, seed: int, n: int = 40) -> tuple[Simulator, bool]:
    a, b = StopAndWait(_messages(n, b"a")), StopAndWait(_messages(n, b"b"))
    sim = Simulator(a, b, profile_ab=profile, profile_ba=profile, seed=seed)
    done = sim.run_until(
        lambda: len(_acked(sim, "a")) == n and len(_acked(sim, "b")) == n,
        max_time=10_000,
        max_steps=200_000,
    )
    return sim, done


@pytest.mark.parametrize(
    "profile",
    [
        LinkProfile.perfect(),
        LinkProfile.lossy(0.3),
        LinkProfile.bursty(0.3, mean_burst=3.0),
        LinkProfile.terrible(),
    ],
    ids=["perfect", "lossy", "bursty", "terrible"],
)
def test_arq_over_the_simulator_delivers_everything_both_ways(profile: LinkProfile) -> None:
    sim, done = _run_arq(profile, seed=1)
    assert done
    assert _received(sim, "b") == _messages(40, b"a")
    assert _received(sim, "a") == _messages(40, b"b")
    assert _acked(sim, "a") == _acked(sim, "b") == list(range(40))


@given(st.integers(0, 2**64))
def test_a_seed_replays_the_run_exactly(seed: int) -> None:
    sim1, done1 = _run_arq(LinkProfile.terrible(), seed, n=10)
    sim2, done2 = _run_arq(LinkProfile.terrible(), seed, n=10)
    assert done1 and done2
    assert (sim1.now, sim1.steps) == (sim2.now, sim2.steps)
    assert sim1.events == sim2.events
    assert sim1.link_ab.stats == sim2.link_ab.stats
    assert sim1.link_ba.stats == sim2.link_ba.stats


def test_different_seeds_give_different_runs() -> None:
    outcomes = {
        (sim.now, sim.steps) for sim, _ in (_run_arq(LinkProfile.terrible(), s) for s in range(5))
    }
    assert len(outcomes) > 1


def test_derived_generators_are_independent_and_stable() -> None:
    assert derive_rng(1, "x").random() == derive_rng(1, "x").random()
    assert derive_rng(1, "x").random() != derive_rng(1, "y").random()
    assert derive_rng(1, "x").random() != derive_rng(2, "x").random()


def test_the_clock_jumps_straight_to_the_next_deadline() -> None:
    a, b = Alarm([1000.0, 5000.0]), Alarm([2500.5])
    sim = Simulator(a, b)
    assert sim.run_until(lambda: not a.times and not b.times, max_time=10_000)
    assert a.fired == [1000.0, 5000.0]
    assert b.fired == [2500.5]
    assert sim.now == 5000.0
    assert sim.steps == 3


def test_arrival_times_include_the_link_delay() -> None:
    a, b = StopAndWait([b"x", b"y"]), StopAndWait([])
    sim = Simulator(a, b, profile_ab=LinkProfile.perfect(delay=0.25), start_time=10.0)
    assert sim.run_until(lambda: len(_acked(sim, "a")) == 2, max_time=5)
    # Data takes 0.25 s, the ack returns instantly, the next message leaves at once.
    assert b.received_at == [10.25, 10.5]
    assert sim.now == 10.5


def test_run_until_stops_at_max_time() -> None:
    a = Alarm([5.0, 50.0])
    sim = Simulator(a, Alarm([]))
    assert not sim.run_until(lambda: False, max_time=10.0)
    assert a.fired == [5.0]
    assert sim.now == 5.0


def test_run_until_stops_when_nothing_is_scheduled() -> None:
    sim = Simulator(Alarm([1.0]), Alarm([]))
    assert not sim.run_until(lambda: False)
    assert sim.now == 1.0
    assert sim.idle()
    assert not sim.step()


def test_run_until_bounds_a_livelocked_endpoint() -> None:
    stuck = Stuck([])
    sim = Simulator(stuck, Alarm([]), start_time=3.0)
    assert not sim.run_until(lambda: False, max_steps=100)
    assert sim.steps == 100
    # A deadline in the past runs at the current time: the clock never goes back.
    assert stuck.fired == [3.0] * 100


def test_run_for_processes_the_window_and_sets_the_clock() -> None:
    a = Alarm([1.0, 2.0, 7.0])
    sim = Simulator(a, Alarm([]))
    sim.run_for(5.0)
    assert a.fired == [1.0, 2.0]
    assert sim.now == 5.0
    with pytest.raises(RuntimeError):
        Simulator(Stuck([]), Alarm([])).run_for(1.0, max_steps=10)


def test_events_are_collected_per_side_and_passed_to_the_hook() -> None:
    seen: list[tuple[str, Event]] = []
    a, b = StopAndWait([b"hello"]), StopAndWait([b"world", b"!"])
    sim = Simulator(a, b, on_event=lambda side, event: seen.append((side, event)))
    assert sim.run_until(lambda: len(_acked(sim, "b")) == 2 and len(_acked(sim, "a")) == 1)
    assert _received(sim, "a") == [b"world", b"!"]
    assert _received(sim, "b") == [b"hello"]
    assert [e for side, e in seen if side == "a"] == sim.events["a"]
    assert [e for side, e in seen if side == "b"] == sim.events["b"]
    assert "Simulator seed=0" in repr(sim)


def test_connection_pair_steps_a_real_connection_by_hand() -> None:
    from rudp.events import Connected
    from rudp.testing import ConnectionPair

    dropped: list[bytes] = []

    def drop_first_data(sender: str, datagram: bytes) -> list[bytes]:
        # Lose the client's first DATA packet once (type byte 3 at offset 1).
        if sender == "client" and datagram[1] == 3 and not dropped:
            dropped.append(datagram)
            return []
        return [datagram]

    pair = ConnectionPair(seed=3, intercept=drop_first_data)
    pair.handshake()
    assert Connected() in pair.events["client"]
    assert Connected() in pair.events["server"]
    seen = {side: len(events) for side, events in pair.events.items()}
    pair.client.send(b"hello")
    pair.pump()
    assert dropped and pair.events["server"][seen["server"] :] == []
    pair.advance(5.0)  # the retransmission timer fires and the message gets through
    assert MessageReceived(b"hello") in pair.events["server"][seen["server"] :]
    assert MessageAcknowledged(0) in pair.events["client"][seen["client"] :]
    assert pair.other(pair.client) is pair.server


def test_connection_pair_run_stops_at_the_condition_or_the_deadline() -> None:
    from rudp.config import Config
    from rudp.testing import ConnectionPair

    pair = ConnectionPair(Config(keepalive_interval=1.0, peer_timeout=30.0))
    pair.handshake()
    assert pair.lifecycle("client") == pair.lifecycle("server") == ["Connected"]
    # Idle but for keepalives: the deadline ends the run, the clock stays at the last timer.
    assert pair.run(until=5.5) is False
    assert 4.0 < pair.now <= 5.5
    assert any(sender == "client" for sender, _ in pair.sent)
    pair.client.send(b"ping")
    assert pair.run(stop=lambda: pair.acknowledged("client") == [0]) is True
    assert pair.received("server") == [b"ping"]
    start = pair.now
    pair.advance(0.25)  # advance, unlike run, ends exactly at now + seconds
    assert pair.now == start + 0.25


def test_connection_pair_deliver_moves_one_direction_once() -> None:
    from rudp.testing import ConnectionPair

    pair = ConnectionPair()
    pair.client.connect(pair.now)
    assert pair.deliver("client") == 1  # the SYN
    assert [sender for sender, _ in pair.sent] == ["client"]
    assert len(pair.server.datagrams_to_send(pair.now)) == 1  # the SYN_ACK was left queued
    with pytest.raises(ValueError):
        pair.deliver("nobody")


def test_connection_pair_handshake_fails_loudly_through_a_black_hole() -> None:
    from rudp.config import Config
    from rudp.testing import ConnectionPair

    pair = ConnectionPair(Config(peer_timeout=2.0), drop=lambda sender, datagram: True)
    with pytest.raises(RuntimeError, match="handshake"):
        pair.handshake()
    assert pair.lifecycle("client") == ["Failed"]
