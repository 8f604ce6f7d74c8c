"""Conformance tests of bounded memory: specs/protocol.md sections 6.1, 11.1 and 13.4.

Each test drives sans-IO engines or an ``Endpoint`` in virtual time with a scripted,
hostile peer, and checks the bound on what the receiver holds (``Stats.receive_buffered``,
``Endpoint.budget``), never the process's memory (``bench/memory.py`` measures that).
"""

from __future__ import annotations

import pytest
from test_spec import (  # the name pytest imports it by: one module, one registry
    PEER_TOKEN,
    SERVER_ID,
    _decode_all,
    _drain_events,
    _engine,
    _server_under_test,
)

from rudp.config import MIN_DATAGRAM_SIZE, Config
from rudp.core import wire
from rudp.core.endpoint import Endpoint
from rudp.core.state import ConnectionState
from rudp.core.wire import Packet, PacketType
from rudp.errors import ConnectionLimitExceeded
from rudp.events import Failed, FailureKind, MessageReceived

QUIET = {"keepalive_interval": None}


def _syn(client_id: int, isn: int, mds: int = 1400) -> bytes:
    block = wire.encode_handshake(wire.Handshake(client_id, mds, PEER_TOKEN))
    return wire.encode(Packet(PacketType.SYN, 0, 0, isn, 0, 1000, 0, (), block))


class _Client:
    """A scripted client of an ``Endpoint``: its handshake, then whatever DATA it likes."""

    def __init__(self, endpoint: Endpoint, client_id: int, port: int) -> None:
        self.endpoint = endpoint
        self.address = ("192.0.2.1", port)
        self.isn = 1000 * port
        self.pn = 1
        endpoint.receive_datagram(_syn(client_id, self.isn), self.address, 0.0)
        answers = [wire.decode(d) for d, a in endpoint.datagrams_to_send(0.0) if a == self.address]
        (syn_ack,) = [p for p in answers if p.type is PacketType.SYN_ACK]
        self.server_id = wire.decode_handshake(syn_ack.payload).source_connection_id
        self.server_ack = syn_ack.seq + 1
        self.send(PacketType.ACK, self.isn + 1)

    def send(
        self, ptype: PacketType, seq: int, payload: bytes = b"", fragments_left: int = 0
    ) -> None:
        packet = Packet(
            ptype,
            0,
            self.server_id,
            wire.wire_seq(seq),
            wire.wire_seq(self.server_ack),
            1000,
            fragments_left,
            (),
            payload,
            self.pn,
            0,
            0,
        )
        self.pn += 1
        self.endpoint.receive_datagram(wire.encode(packet), self.address, 0.0)


# --- section 6.1: datagram sizes ----------------------------------------------------------


def test_s6_1_6_handshake_below_the_minimum_datagram_size_is_refused() -> None:
    """§6.1-6: a SYN or SYN_ACK announcing less than 1200 bytes is dropped and counted."""
    with pytest.raises(ValueError, match="max_datagram_size"):
        Config(max_datagram_size=MIN_DATAGRAM_SIZE - 1)
    Config(max_datagram_size=MIN_DATAGRAM_SIZE)  # the minimum itself is fine
    # A server endpoint: the SYN creates nothing.
    server = Endpoint(accepting=True)
    server.receive_datagram(_syn(7, 100, mds=MIN_DATAGRAM_SIZE - 1), ("192.0.2.1", 1), 0.0)
    assert len(server) == 0 and server.stats.bad_datagrams == 1
    assert server.datagrams_to_send(0.0) == []
    server.receive_datagram(_syn(7, 100, mds=MIN_DATAGRAM_SIZE), ("192.0.2.1", 1), 0.0)
    assert len(server) == 1
    # A client engine: a SYN_ACK announcing 33 bytes (1 byte of data per datagram).
    conn = _engine(Config(**QUIET), is_client=True)
    conn.connect(0.0)
    (syn,) = _decode_all(conn.datagrams_to_send(0.0))
    hs = wire.decode_handshake(syn.payload)
    for mds, state in ((33, ConnectionState.SYN_SENT), (1200, ConnectionState.ESTABLISHED)):
        block = wire.encode_handshake(wire.Handshake(SERVER_ID, mds, PEER_TOKEN))
        syn_ack = Packet(
            PacketType.SYN_ACK,
            0,
            hs.source_connection_id,
            5000,
            wire.wire_seq(syn.seq + 1),
            1000,
            0,
            (),
            block,
        )
        conn.receive_datagram(wire.encode(syn_ack), 0.0)
        assert conn.state is state
        if state is ConnectionState.SYN_SENT:
            assert conn.stats.datagrams_dropped == 1


def test_s6_1_7_datagram_longer_than_the_effective_size_is_dropped() -> None:
    """§6.1-7: a datagram longer than the effective datagram size is dropped and counted."""
    peer = _server_under_test(Config(max_datagram_size=1300, **QUIET))
    conn = peer.conn
    largest = 1300 - wire.OVERHEAD
    # 65,000 bytes after both announced (at most) 1,300: dropped, not delivered.
    peer.feed(peer.craft(PacketType.DATA, seq=peer.next_seq, payload=b"h" * 65_000))
    peer.feed(peer.craft(PacketType.DATA, seq=peer.next_seq, payload=b"h" * (largest + 1)))
    stats = conn.stats
    assert stats.datagrams_oversize == 2 and stats.datagrams_dropped == 2
    assert stats.data_packets_received == 0 and _drain_events(conn) == []
    peer.feed(peer.craft(PacketType.DATA, payload=b"k" * largest))  # exactly the size: fine
    assert _drain_events(conn) == [MessageReceived(b"k" * largest)]
    assert conn.stats.datagrams_oversize == 2


# --- section 11.1: the window derived from a byte budget ------------------------------------


def test_s11_1_1_window_is_derived_from_the_byte_budget() -> None:
    """§11.1-1: window = min(receive_window - packets, (receive_buffer - bytes) // payload)."""
    config = Config(receive_buffer=100_000, max_message_size=50_000, **QUIET)
    peer = _server_under_test(config)
    conn = peer.conn
    payload = config.max_datagram_size - wire.OVERHEAD
    assert conn.stats.local_window == 100_000 // payload
    edge = peer.next_seq + conn.stats.local_window
    # A 10-fragment message: each in-order fragment takes its bytes, the right edge stays.
    for left in range(9, 4, -1):
        peer.feed(peer.craft(PacketType.DATA, payload=b"m" * payload, fragments_left=left))
        used = (9 - left + 1) * payload
        assert conn.stats.receive_buffered == used
        assert conn.stats.local_window == (100_000 - used) // payload
        assert peer.next_seq + conn.stats.local_window == edge
    for left in range(4, -1, -1):
        peer.feed(peer.craft(PacketType.DATA, payload=b"m" * payload, fragments_left=left))
    # Delivered but unread: still counted, in bytes.
    assert conn.stats.receive_buffered == 10 * payload
    assert peer.next_seq + conn.stats.local_window == edge
    assert _drain_events(conn) == [MessageReceived(b"m" * 10 * payload)]
    assert conn.stats.receive_buffered == 0
    assert conn.stats.local_window == 100_000 // payload
    # The packet limit still bounds tiny packets.
    small = _server_under_test(Config(receive_window=16, **QUIET))
    for _ in range(5):
        small.feed(small.craft(PacketType.DATA, payload=b"."))
    assert small.conn.stats.local_window == 11


# --- section 13.4: memory bounds -------------------------------------------------------------


def test_s13_4_1_out_of_order_and_unread_data_stay_within_the_budget() -> None:
    """§13.4-1: held, reassembling and unread bytes never exceed receive_buffer."""
    config = Config(receive_buffer=200_000, max_message_size=100_000, **QUIET)
    payload = config.max_datagram_size - wire.OVERHEAD
    # Maximal out-of-order fragments of a message that never starts, far past the window.
    peer = _server_under_test(config)
    base = peer.next_seq
    for offset in range(1, 1000):
        peer.feed(
            peer.craft(PacketType.DATA, seq=base + offset, payload=b"o" * payload, fragments_left=5)
        )
        assert peer.conn.stats.receive_buffered <= config.receive_buffer
    assert peer.conn.stats.receive_buffered >= config.receive_buffer - 2 * payload
    # Many whole messages, never read: the window closes at the budget.
    lazy = _server_under_test(config)
    for _ in range(1000):
        lazy.feed(lazy.craft(PacketType.DATA, payload=b"u" * payload))
        assert lazy.conn.stats.receive_buffered <= config.receive_buffer
    assert lazy.conn.stats.local_window == 0
    delivered = sum(isinstance(e, MessageReceived) for e in _drain_events(lazy.conn))
    assert delivered == config.receive_buffer // payload


def test_s13_4_2_message_beyond_the_budget_fails_the_connection() -> None:
    """§13.4-2: a message in progress may not outgrow max_message_size <= receive_buffer."""
    with pytest.raises(ValueError, match="receive_buffer"):
        Config(max_message_size=2_000_000, receive_buffer=1_000_000)
    config = Config(receive_buffer=50_000, max_message_size=50_000, **QUIET)
    payload = config.max_datagram_size - wire.OVERHEAD
    peer = _server_under_test(config)
    for i in range(100):  # announces 10,000 fragments: 13 MB
        if peer.conn.state is not ConnectionState.ESTABLISHED:
            break
        peer.feed(peer.craft(PacketType.DATA, payload=b"M" * payload, fragments_left=10_000 - i))
        assert peer.conn.stats.receive_buffered <= config.max_message_size + payload
    events = _drain_events(peer.conn)
    assert isinstance(events[-1], Failed)
    assert events[-1].kind is FailureKind.PROTOCOL_ERROR
    assert "message too large" in events[-1].reason
    assert i == config.max_message_size // payload + 1  # refused at the first byte too many


def test_s13_4_3_endpoint_refuses_a_syn_beyond_max_connections() -> None:
    """§13.4-3: at max_connections a SYN is refused, counted and answered by a RESET."""
    server = Endpoint(Config(max_connections=2), accepting=True, backlog=10)
    for port in (1, 2):
        _Client(server, client_id=port, port=port)
    assert len(server) == 2
    syn = _syn(99, 4000)
    server.receive_datagram(syn, ("192.0.2.9", 9), 0.0)
    assert len(server) == 2 and server.stats.syn_refused_limit == 1
    ((reset, address),) = server.datagrams_to_send(0.0)
    assert address == ("192.0.2.9", 9) and len(reset) < len(syn)  # no amplification
    packet = wire.decode(reset)
    assert packet.type is PacketType.RESET and packet.connection_id == 99
    assert packet.ack == 4001
    # A real client fails at once with "reset by peer" rather than timing out.
    client = Endpoint()
    assoc = client.connect(("192.0.2.2", 1), 0.0)
    for data, _ in client.datagrams_to_send(0.0):
        server.receive_datagram(data, ("192.0.2.3", 3), 0.0)
    for data, _ in server.datagrams_to_send(0.0):
        client.receive_datagram(data, ("192.0.2.2", 1), 0.0)
    assert assoc.connection.state is ConnectionState.FAILED
    # Locally opened connections: a clear exception naming the cap.
    capped = Endpoint(Config(max_connections=1))
    capped.connect(("192.0.2.2", 1), 0.0)
    with pytest.raises(ConnectionLimitExceeded, match="max_connections=1"):
        capped.connect(("192.0.2.2", 2), 0.0)


def test_s13_4_4_receivers_of_an_endpoint_share_max_buffered_bytes() -> None:
    """§13.4-4: all receivers of an endpoint buffer at most max_buffered_bytes together."""
    config = Config(receive_buffer=100_000, max_message_size=50_000, max_buffered_bytes=250_000)
    payload = config.max_datagram_size - wire.OVERHEAD
    server = Endpoint(config, accepting=True, backlog=10)
    clients = [_Client(server, client_id=port, port=port) for port in range(1, 4)]
    for client in clients:  # whole messages in order, never read
        for offset in range(1, 200):
            client.send(PacketType.DATA, client.isn + offset, b"y" * payload)
            assert server.budget.used <= config.max_buffered_bytes
    assert server.budget.used > config.max_buffered_bytes - payload
    # Full: a new SYN is refused like one beyond max_connections.
    server.receive_datagram(_syn(77, 9000), ("192.0.2.7", 7), 0.0)
    assert server.stats.syn_refused_limit == 1 and len(server) == 3
    # A connection that ends gives its bytes back.
    clients[0].send(PacketType.RESET, clients[0].isn + 1, PEER_TOKEN)
    server.datagrams_to_send(0.0)
    while server.next_event() is not None:
        pass
    assert len(server) == 2
    assert server.budget.used == sum(
        a.connection.stats.receive_buffered for a in server.associations
    )
