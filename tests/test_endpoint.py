"""Tests of rudp.core.endpoint: routing, backlog, timers, events, memory bounds.

Most tests drive the endpoint with ``FakeConnection``, a scripted stand-in for
the core, so they check the multiplexer alone; the last ones run two endpoints
with the real core against each other in memory.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from rudp.config import Config
from rudp.core.endpoint import Association, Endpoint
from rudp.core.path import PathState
from rudp.core.state import ConnectionState
from rudp.core.wire import Handshake, Packet, PacketType, encode, encode_handshake
from rudp.events import Closed, Connected, Event, Failed, FailureKind, MessageReceived

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)


class FakePath:
    """Stands in for ``rudp.core.path.PathValidator``: records starts, scripted outcome."""

    def __init__(self) -> None:
        self.state = PathState.IDLE
        self.starts: list[float] = []

    def start(self, now: float) -> bool:
        self.starts.append(now)
        self.state = PathState.VALIDATING
        return True


class FakeConnection:
    """Records what the endpoint hands it; tests script its timer, events and output."""

    def __init__(
        self, config: Config, *, is_client: bool, rng: random.Random | None, static_key: bytes
    ) -> None:
        assert rng is not None
        self.static_key = static_key
        self.remote_connection_id: int | None = None
        self.largest_packet_number = -1
        self.path = FakePath()
        self.config = config
        self.is_client = is_client
        self.local_connection_id = rng.getrandbits(64) | 1
        self.received: list[Packet] = []
        self.raw_received: list[bytes] = []
        self.sent: list[bytes] = []
        self.outbox: list[bytes] = []
        self.events: list[Event] = []
        self.timer: float | None = None
        self.timers_fired: list[float] = []
        self.is_closed = False
        self.state = ConnectionState.INITIAL if is_client else ConnectionState.LISTEN

    @property
    def is_established(self) -> bool:
        return self.state is ConnectionState.ESTABLISHED

    def connect(self, now: float) -> None:
        self.state = ConnectionState.SYN_SENT
        self.outbox.append(b"SYN")

    def send(self, message: bytes) -> int:
        self.sent.append(message)
        self.outbox.append(message)
        return len(self.sent) - 1

    def close(self, now: float, *, reading: bool = True, left_unread: bool = False) -> None:
        self.outbox.append(b"FIN")

    def abort(self, reason: str) -> None:
        self.is_closed = True
        self.state = ConnectionState.FAILED
        self.timer = None
        self.events.append(Failed(reason, (), FailureKind.ABORTED))

    def receive_packet(
        self,
        packet: Packet,
        now: float,
        handshake: Handshake | None = None,
        size: int | None = None,
    ) -> None:
        self.received.append(packet)
        self.largest_packet_number = max(self.largest_packet_number, packet.packet_number)
        if packet.type is PacketType.SYN:
            self.state = ConnectionState.SYN_RECEIVED

    def receive_datagram(self, data: bytes, now: float) -> None:  # pragma: no cover
        self.raw_received.append(data)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.timers_fired.append(now)
        self.timer = None

    def next_event(self) -> Event | None:
        return self.events.pop(0) if self.events else None

    def establish(self) -> None:
        self.state = ConnectionState.ESTABLISHED
        self.events.append(Connected())


def fake_endpoint(**kwargs: Any) -> Endpoint:
    return Endpoint(Config(), rng=random.Random(7), connection_factory=FakeConnection, **kwargs)


def syn(source_id: int) -> bytes:
    payload = encode_handshake(Handshake(source_id, 1400))
    return encode(Packet(PacketType.SYN, 0, 0, 5, 0, 0, 0, (), payload))


def ack_for(connection_id: int) -> bytes:
    return encode(Packet(PacketType.ACK, 0, connection_id, 1, 1, 64, 0, (), b""))


def fake(assoc: Association) -> FakeConnection:
    assert isinstance(assoc.connection, FakeConnection)
    return assoc.connection


def drain_events(ep: Endpoint) -> list[tuple[Association, Event]]:
    out = []
    while (item := ep.next_event()) is not None:
        out.append(item)
    return out


# --- routing -------------------------------------------------------------------


def test_packets_route_by_destination_connection_id() -> None:
    ep = fake_endpoint()
    first = ep.connect(A, 0.0)
    second = ep.connect(B, 0.0)
    assert ep.datagrams_to_send(0.0) == [(b"SYN", A), (b"SYN", B)]
    ep.receive_datagram(ack_for(fake(second).local_connection_id), B, 1.0)
    ep.receive_datagram(ack_for(fake(first).local_connection_id), A, 1.0)
    assert [p.connection_id for p in fake(first).received] == [fake(first).local_connection_id]
    assert [p.connection_id for p in fake(second).received] == [fake(second).local_connection_id]
    assert ep.stats.datagrams_received == 2
    assert len(ep) == 2


def test_unknown_id_wrong_address_and_garbage_are_dropped_and_counted() -> None:
    ep = fake_endpoint()
    assoc = ep.connect(A, 0.0)
    ep.receive_datagram(ack_for(12345), A, 1.0)  # nobody's id
    ep.receive_datagram(ack_for(fake(assoc).local_connection_id), B, 1.0)  # right id, wrong peer
    ep.receive_datagram(b"\x00" * 40, A, 1.0)  # fails the checksum
    ep.receive_datagram(b"", A, 1.0)
    assert fake(assoc).received == []
    assert ep.stats.unknown_connection == 1
    assert ep.stats.wrong_address == 1
    assert ep.stats.bad_datagrams == 2


def test_syn_is_refused_when_not_accepting() -> None:
    ep = fake_endpoint()
    ep.receive_datagram(syn(99), A, 0.0)
    assert len(ep) == 0 and ep.accept() is None
    assert ep.stats.unknown_connection == 1


def test_syn_creates_server_connection_and_duplicates_reach_the_same_one() -> None:
    ep = fake_endpoint(accepting=True)
    ep.receive_datagram(syn(99), A, 0.0)
    ep.receive_datagram(syn(99), A, 0.5)  # retransmitted SYN
    ep.receive_datagram(syn(99), B, 0.5)  # same client id from elsewhere: another client
    assert len(ep) == 2
    first = ep.accept()
    second = ep.accept()
    assert first is not None and second is not None and ep.accept() is None
    assert first.address == A and not first.initiated_locally and first.accepted
    assert [p.type for p in fake(first).received] == [PacketType.SYN, PacketType.SYN]
    assert second.address == B
    assert ep.stats.connections_created == 2


def test_accept_established_only_skips_half_open() -> None:
    ep = fake_endpoint(accepting=True)
    ep.receive_datagram(syn(1), A, 0.0)
    ep.receive_datagram(syn(2), B, 0.0)
    half_open, established = ep.associations
    fake(established).establish()
    ep.receive_datagram(ack_for(fake(established).local_connection_id), B, 0.1)
    drain_events(ep)
    assert ep.accept(established_only=True) is established
    assert ep.accept(established_only=True) is None
    assert ep.accept() is half_open


# --- backlog and SYN floods --------------------------------------------------------


def test_syn_flood_recycles_half_open_slots_and_memory_stays_bounded() -> None:
    """Version 3's eviction, kept by ``retry="never"`` (the default sends RETRYs instead:
    tests/test_spec_retry.py)."""
    ep = fake_endpoint(accepting=True, backlog=4, retry="never")
    for source_id in range(1, 1001):
        ep.receive_datagram(syn(source_id), ("10.9.9.9", source_id), 0.0)
        ep.datagrams_to_send(0.0)
        drain_events(ep)
    assert ep.pending_count == 4
    assert len(ep) == 4  # evicted connections left the routing tables
    assert ep.stats.half_open_evicted == 996
    assert ep.stats.syn_refused == 0
    # The newest SYNs hold the slots: a real client retrying its SYN gets in.
    assert [a.address[1] for a in ep.associations] == [997, 998, 999, 1000]


def test_full_backlog_of_established_connections_refuses_new_syns() -> None:
    ep = fake_endpoint(accepting=True, backlog=2, retry="never")
    for source_id in (1, 2):
        ep.receive_datagram(syn(source_id), ("10.1.1.1", source_id), 0.0)
    for assoc in ep.associations:
        fake(assoc).establish()
        ep.receive_datagram(ack_for(fake(assoc).local_connection_id), assoc.address, 0.1)
    drain_events(ep)
    ep.receive_datagram(syn(3), ("10.1.1.1", 3), 0.2)
    assert ep.stats.syn_refused == 1 and len(ep) == 2
    assert ep.accept() is not None  # accepting frees a slot
    ep.receive_datagram(syn(3), ("10.1.1.1", 3), 0.3)
    assert len(ep) == 3


# --- timers ----------------------------------------------------------------------


def test_timer_is_the_earliest_over_connections_and_fires_only_due_ones() -> None:
    ep = fake_endpoint()
    early, late, idle = ep.connect(A, 0.0), ep.connect(B, 0.0), ep.connect(("c", 3), 0.0)
    fake(early).timer, fake(late).timer = 2.0, 5.0
    assert ep.get_timer() == 2.0
    ep.handle_timer(1.0)
    assert fake(early).timers_fired == [] and ep.get_timer() == 2.0
    ep.handle_timer(2.5)
    assert fake(early).timers_fired == [2.5] and fake(late).timers_fired == []
    assert ep.get_timer() == 5.0
    fake(idle).timer = 3.0  # a change through the association becomes visible
    idle.send(b"x")
    assert ep.get_timer() == 3.0
    ep.handle_timer(10.0)
    assert fake(late).timers_fired == [10.0] and fake(idle).timers_fired == [10.0]
    assert ep.get_timer() is None


def test_timer_heap_stays_bounded_under_churn() -> None:
    ep = fake_endpoint()
    assoc = ep.connect(A, 0.0)
    for i in range(5000):
        fake(assoc).timer = 100.0 - i * 0.001  # moves on every call
        assoc.send(b"")
        ep.datagrams_to_send(0.0)
    assert ep.get_timer() == pytest.approx(100.0 - 4999 * 0.001)
    assert len(ep._heap) <= 2 * len(ep) + 65


# --- events, pause, termination ---------------------------------------------------


def test_events_are_tagged_and_paused_associations_wait() -> None:
    ep = fake_endpoint()
    a, b = ep.connect(A, 0.0), ep.connect(B, 0.0)
    fake(a).events += [MessageReceived(b"a1"), MessageReceived(b"a2")]
    fake(b).events += [MessageReceived(b"b1")]
    a.paused = True
    a.send(b"")  # touch both
    b.send(b"")
    assert [(assoc, ev) for assoc, ev in drain_events(ep)] == [(b, MessageReceived(b"b1"))]
    a.paused = False
    assert drain_events(ep) == [(a, MessageReceived(b"a1")), (a, MessageReceived(b"a2"))]


def test_paused_but_terminated_association_still_reports() -> None:
    ep = fake_endpoint()
    a = ep.connect(A, 0.0)
    a.paused = True
    a.abort("test")
    assert drain_events(ep) == [(a, Failed("test", (), FailureKind.ABORTED))]


def test_terminated_connections_leave_the_tables() -> None:
    ep = fake_endpoint(accepting=True)
    client = ep.connect(A, 0.0)
    ep.receive_datagram(syn(5), B, 0.0)
    server = ep.accept()
    assert server is not None and len(ep) == 2
    fake(client).is_closed = True
    fake(client).events.append(Closed())
    fake(server).is_closed = True
    fake(server).timer = 9.0  # TIME_WAIT: still routable until the timer is gone
    client.send(b"")
    server.send(b"")
    ep.datagrams_to_send(1.0)
    assert ep.associations == [server]
    ep.handle_timer(9.0)
    ep.datagrams_to_send(9.0)
    assert len(ep) == 0 and ep.stats.connections_removed == 2
    assert drain_events(ep) == [(client, Closed())]
    ep.receive_datagram(syn(5), B, 10.0)  # the old SYN key is gone too
    assert ep.stats.unknown_connection == 0 and len(ep) == 1


def test_connections_that_die_unaccepted_leave_the_backlog() -> None:
    """Established but silent until they failed (peer_timeout): nothing to accept, so
    new clients are not locked out; one that delivered a message stays for accept()."""
    ep = fake_endpoint(accepting=True, backlog=2, retry="never")
    for source_id in (1, 2):
        ep.receive_datagram(syn(source_id), ("10.1.1.1", source_id), 0.0)
    silent, talker = ep.associations
    for assoc in (silent, talker):
        fake(assoc).establish()
        if assoc is talker:
            fake(assoc).events.append(MessageReceived(b"hello"))
        ep.receive_datagram(ack_for(fake(assoc).local_connection_id), assoc.address, 0.1)
    drain_events(ep)
    ep.receive_datagram(syn(3), ("10.1.1.1", 3), 0.2)
    assert ep.stats.syn_refused == 1  # full of established connections
    for assoc in (silent, talker):
        assoc.abort("peer unreachable")  # as peer_timeout would end them
    drain_events(ep)
    assert ep.pending_count == 1  # the silent one left; the talker waits for accept()
    ep.receive_datagram(syn(3), ("10.1.1.1", 3), 0.3)
    assert ep.stats.syn_refused == 1 and ep.pending_count == 2
    accepted = ep.accept()
    assert accepted is talker


def test_backlog_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Endpoint(backlog=0)


# --- with the real core -----------------------------------------------------------


def exchange(
    client_ep: Endpoint, server_ep: Endpoint, client_addr: Any, server_addr: Any, now: float
) -> None:
    """Deliver every queued datagram both ways until both sides are quiet."""
    for _ in range(50):
        to_server = client_ep.datagrams_to_send(now)
        to_client = server_ep.datagrams_to_send(now)
        if not to_server and not to_client:
            return
        for data, address in to_server:
            assert address == server_addr
            server_ep.receive_datagram(data, client_addr, now)
        for data, address in to_client:
            assert address == client_addr
            client_ep.receive_datagram(data, server_addr, now)
    raise AssertionError("endpoints never went quiet")


def test_two_real_endpoints_handshake_and_exchange_messages() -> None:
    client_ep = Endpoint(Config(), rng=random.Random(1))
    server_ep = Endpoint(Config(), accepting=True, rng=random.Random(2))
    assoc = client_ep.connect(B, 0.0)
    assoc.send(b"before connected")
    exchange(client_ep, server_ep, A, B, 0.0)
    server = server_ep.accept()
    assert server is not None and server.address == A
    client_events = [ev for _, ev in drain_events(client_ep)]
    server_events = [ev for _, ev in drain_events(server_ep)]
    assert Connected() in client_events
    assert MessageReceived(b"before connected") in server_events
    for i in range(20):
        server.send(b"reply %d" % i)
    exchange(client_ep, server_ep, A, B, 0.01)
    client_ep.handle_timer(0.05)
    server_ep.handle_timer(0.05)
    exchange(client_ep, server_ep, A, B, 0.05)
    received = [ev.data for _, ev in drain_events(client_ep) if isinstance(ev, MessageReceived)]
    assert received == [b"reply %d" % i for i in range(20)]


def test_real_endpoint_close_removes_both_sides() -> None:
    config = Config(close_linger=0.5)
    client_ep = Endpoint(config, rng=random.Random(3))
    server_ep = Endpoint(config, accepting=True, rng=random.Random(4))
    assoc = client_ep.connect(B, 0.0)
    assoc.send(b"x")
    exchange(client_ep, server_ep, A, B, 0.0)
    assert server_ep.accept() is not None
    assoc.close(0.1)
    now = 0.1
    for _ in range(100):
        exchange(client_ep, server_ep, A, B, now)
        drain_events(client_ep)
        drain_events(server_ep)
        if len(client_ep) == 0 and len(server_ep) == 0:
            break
        timers = [t for t in (client_ep.get_timer(), server_ep.get_timer()) if t is not None]
        assert timers, "a side is stuck with no timer"
        now = max(now, min(timers))
        client_ep.handle_timer(now)
        server_ep.handle_timer(now)
    assert len(client_ep) == 0 and len(server_ep) == 0
