"""Unit tests of the sans-IO core (``rudp.core.connection.SansIOConnection``).

Most tests step a client and a server by hand with ``rudp.testing.ConnectionPair``
(an instant wire and a virtual clock); a ``drop`` hook decides per datagram what
is lost.  The full network simulator lives in ``rudp.testing`` and has its own tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import pairwise

import pytest

from rudp.config import Config
from rudp.core import wire
from rudp.core.connection import SansIOConnection
from rudp.core.state import PACKET_INPUTS, TRANSITIONS, ConnectionState, Input, to_mermaid
from rudp.errors import LocalProtocolError, MessageTooLarge
from rudp.events import (
    Closed,
    Event,
    Failed,
    FailureKind,
    MessageAcknowledged,
    MessageReceived,
)
from rudp.testing import ConnectionPair


def packet_type(datagram: bytes) -> wire.PacketType:
    """The type of the packet in ``datagram`` (for drop rules that pick one kind)."""
    return wire.decode(datagram).type


def feed(conn: SansIOConnection, datagrams: Iterable[bytes], now: float) -> None:
    """Hand a batch to ``conn`` one datagram at a time, as a driver does."""
    for datagram in datagrams:
        conn.receive_datagram(datagram, now)


def messages(count: int, size: int = 100) -> list[bytes]:
    return [bytes([i % 251]) * (size + i % 7) + i.to_bytes(4, "big") for i in range(count)]


# --- handshake --------------------------------------------------------------------------


def test_handshake_connects_both_sides_with_distinct_random_ids() -> None:
    pair = ConnectionPair(seed=7)
    pair.client.connect(pair.now)
    pair.run(until=0.0)
    assert pair.lifecycle("client") == ["Connected"]
    assert pair.lifecycle("server") == ["Connected"]
    c, s = pair.client, pair.server
    assert c.state is s.state is ConnectionState.ESTABLISHED
    assert c.remote_connection_id == s.local_connection_id
    assert s.remote_connection_id == c.local_connection_id
    assert c.local_connection_id != s.local_connection_id
    syn = pair.packets()[0][1]
    assert syn.type is wire.PacketType.SYN and syn.connection_id == 0
    synack = pair.packets()[1][1]
    assert synack.type is wire.PacketType.SYN_ACK
    assert synack.connection_id == c.local_connection_id
    assert synack.ack == (syn.seq + 1) % 2**32
    assert c.is_established and s.is_established


def test_seeded_rng_makes_ids_and_isns_reproducible() -> None:
    a = SansIOConnection(is_client=True, rng=random.Random(3))
    b = SansIOConnection(is_client=True, rng=random.Random(3))
    assert a.local_connection_id == b.local_connection_id
    a.connect(0.0)
    b.connect(0.0)
    assert a.datagrams_to_send(0.0) == b.datagrams_to_send(0.0)


def test_lost_syn_and_syn_ack_are_retransmitted() -> None:
    dropped: list[str] = []

    def drop(sender: str, datagram: bytes) -> bool:
        kind = packet_type(datagram).name
        if kind in ("SYN", "SYN_ACK") and kind not in dropped:
            dropped.append(kind)
            return True
        return False

    pair = ConnectionPair(drop=drop)
    pair.client.send(b"hello")
    pair.client.connect(pair.now)
    pair.run(until=10)
    assert dropped == ["SYN", "SYN_ACK"]
    assert pair.received("server") == [b"hello"]
    assert pair.acknowledged("client") == [0]


def test_lost_ack_of_syn_ack_is_repaired_by_retransmitted_syn_ack() -> None:
    drops = {"n": 0}

    def drop(sender: str, datagram: bytes) -> bool:
        if sender == "client" and packet_type(datagram) is wire.PacketType.ACK and drops["n"] == 0:
            drops["n"] += 1
            return True
        return False

    pair = ConnectionPair(drop=drop)
    pair.client.connect(pair.now)
    pair.run(until=5)
    assert pair.lifecycle("server") == ["Connected"]
    assert pair.server.state is ConnectionState.ESTABLISHED


# --- data --------------------------------------------------------------------------------


def test_messages_delivered_in_order_and_acknowledged_in_send_order() -> None:
    pair = ConnectionPair()
    msgs = messages(300, 900)
    ids = [pair.client.send(m) for m in msgs]
    assert ids == list(range(300))
    pair.client.connect(pair.now)
    pair.run(until=5)
    assert pair.received("server") == msgs
    assert pair.acknowledged("client") == ids
    assert pair.client.send_queue_bytes == 0
    stats = pair.client.stats
    assert stats.messages_acked == 300 and stats.retransmissions == 0
    assert pair.server.stats.messages_delivered == 300


def test_both_directions_at_once() -> None:
    pair = ConnectionPair()
    up, down = messages(50, 2000), messages(60, 10)
    pair.client.connect(pair.now)
    for m in up:
        pair.client.send(m)
    for m in down:
        pair.server.send(m)
    pair.run(until=5)
    assert pair.received("server") == up
    assert pair.received("client") == down
    assert pair.acknowledged("server") == list(range(60))


def test_empty_and_multi_fragment_messages() -> None:
    pair = ConnectionPair(Config(max_datagram_size=1200))
    full = 1200 - wire.OVERHEAD  # exactly one fragment's payload
    msgs = [b"", b"x" * full, b"y" * (full + 1), b"", bytes(range(256)) * 240, b""]
    for m in msgs:
        pair.client.send(m)
    pair.client.connect(pair.now)
    pair.run(until=5)
    assert pair.received("server") == msgs
    data = [p for d, p in pair.packets() if d == "client" and p.type is wire.PacketType.DATA]
    assert all(len(p.payload) <= 1200 - wire.OVERHEAD for p in data)
    assert data[0].payload == b"" and data[0].fragments_left == 0
    assert [p.fragments_left for p in data[1:4]] == [0, 1, 0]


def test_effective_datagram_size_is_the_smaller_of_both() -> None:
    pair = ConnectionPair(
        Config(max_datagram_size=1400), server_config=Config(max_datagram_size=1250)
    )
    pair.client.connect(pair.now)
    pair.client.send(b"z" * 20000)
    pair.server.send(b"w" * 20000)
    pair.run(until=5)
    assert pair.received("server") == [b"z" * 20000]
    assert pair.received("client") == [b"w" * 20000]
    assert max(len(datagram) for _, datagram in pair.sent) <= 1250


def test_random_loss_still_delivers_everything_exactly_once() -> None:
    rng = random.Random(42)
    pair = ConnectionPair(drop=lambda sender, datagram: rng.random() < 0.2)
    msgs = messages(200, 1500)
    pair.client.connect(pair.now)
    for m in msgs:
        pair.client.send(m)
    pair.client.close(pair.now)
    pair.run(until=300)
    assert pair.received("server") == msgs
    assert pair.acknowledged("client") == list(range(200))
    assert pair.lifecycle("client") == ["Connected", "PeerClosed", "Closed"]
    assert pair.lifecycle("server") == ["Connected", "PeerClosed", "Closed"]
    assert pair.client.stats.retransmissions > 0


def test_single_loss_is_repaired_by_fast_retransmit_not_timeout() -> None:
    seen = {"n": 0}

    def drop(sender: str, datagram: bytes) -> bool:
        if sender == "client" and packet_type(datagram) is wire.PacketType.DATA:
            seen["n"] += 1
            return seen["n"] == 5
        return False

    pair = ConnectionPair(drop=drop)
    pair.client.connect(pair.now)
    pair.run(until=1)
    for m in messages(20):
        pair.client.send(m)
    pair.run(until=pair.now + 0.001)
    stats = pair.client.stats
    assert stats.fast_retransmits == 1
    assert stats.retransmissions == 1
    assert stats.timeouts == 0
    assert pair.received("server") == messages(20)


def test_duplicated_datagrams_are_delivered_once() -> None:
    pair = ConnectionPair()
    pair.client.connect(pair.now)
    pair.run(until=1)
    pair.client.send(b"once")
    for datagram in pair.client.datagrams_to_send(pair.now):
        for _ in range(3):
            pair.server.receive_datagram(datagram, pair.now)
    pair.run(until=2)
    assert pair.received("server") == [b"once"]
    assert pair.server.stats.duplicates_received == 2


def test_reordering_is_undone() -> None:
    pair = ConnectionPair()
    pair.client.connect(pair.now)
    pair.run(until=1)
    msgs = messages(30)
    for m in msgs:
        pair.client.send(m)
    batch = pair.client.datagrams_to_send(pair.now)
    assert len(batch) == 10  # the initial congestion window
    feed(pair.server, reversed(batch), pair.now)
    pair.run(until=3)
    assert pair.received("server") == msgs


# --- acknowledgement policy ------------------------------------------------------------------


def test_delayed_ack_waits_at_most_max_ack_delay() -> None:
    config = Config(max_ack_delay=0.025)
    pair = ConnectionPair(config)
    pair.client.connect(pair.now)
    pair.run(until=1)
    start = pair.now
    pair.client.send(b"one")
    pair.pump()
    assert pair.server.datagrams_to_send(pair.now) == []  # one packet: ack is delayed
    assert pair.server.get_timer() == pytest.approx(start + 0.025)
    pair.now = start + 0.025
    pair.server.handle_timer(pair.now)
    acks = [wire.decode(d) for d in pair.server.datagrams_to_send(pair.now)]
    assert [p.type for p in acks] == [wire.PacketType.ACK]


def test_every_second_packet_is_acked_at_once() -> None:
    pair = ConnectionPair()
    pair.client.connect(pair.now)
    pair.run(until=1)
    pair.client.send(b"a")
    pair.client.send(b"b")
    for datagram in pair.client.datagrams_to_send(pair.now):
        pair.server.receive_datagram(datagram, pair.now)
    acks = [wire.decode(d) for d in pair.server.datagrams_to_send(pair.now)]
    assert [p.type for p in acks] == [wire.PacketType.ACK]


def test_gap_is_acked_at_once_with_sack_blocks_newest_first() -> None:
    """Section 8.2: the block of the most recent arrival first, then from the highest down."""
    pair = ConnectionPair()
    pair.client.connect(pair.now)
    pair.run(until=1)
    for m in messages(8):
        pair.client.send(m)
    batch = pair.client.datagrams_to_send(pair.now)
    seqs = [wire.decode(d).seq for d in batch]
    for i in (1, 2, 6, 7, 4):  # the last arrival, 4, lies below the highest block
        pair.server.receive_datagram(batch[i], pair.now)
    (ack,) = [wire.decode(d) for d in pair.server.datagrams_to_send(pair.now)]
    assert ack.type is wire.PacketType.ACK
    assert ack.ack == seqs[0]
    assert ack.sack == ((seqs[4], seqs[5]), (seqs[6], seqs[7] + 1), (seqs[1], seqs[3]))
    # Each block lies inside (ack, next) and the blocks are disjoint.
    blocks = sorted(ack.sack)
    assert all(ack.ack < start < end <= seqs[7] + 1 for start, end in blocks)
    assert all(a_end < b_start for (_, a_end), (b_start, _) in pairwise(blocks))


# --- close ---------------------------------------------------------------------------------


def test_graceful_close_after_all_data() -> None:
    pair = ConnectionPair()
    pair.client.connect(pair.now)
    msgs = messages(40, 3000)
    for m in msgs:
        pair.client.send(m)
    pair.client.close(pair.now)
    with pytest.raises(LocalProtocolError):
        pair.client.send(b"late")
    pair.run(until=30)
    assert pair.received("server") == msgs
    assert pair.lifecycle("client") == ["Connected", "PeerClosed", "Closed"]
    assert pair.lifecycle("server") == ["Connected", "PeerClosed", "Closed"]
    # The side that acked the last FIN (the client) lingered, then ended.
    assert pair.client.is_closed and pair.server.is_closed
    assert pair.client.get_timer() is None and pair.client.datagrams_to_send(pair.now) == []
    fins = [d for d, p in pair.packets() if p.type is wire.PacketType.FIN]
    assert fins == ["client", "server"]
    # PeerClosed comes after the last message on the server
    assert isinstance(pair.events["server"][-3], MessageReceived)


def test_time_wait_reacknowledges_a_retransmitted_fin() -> None:
    state = {"dropped": False}

    def drop(sender: str, datagram: bytes) -> bool:
        # Lose the client's ack of the server's FIN once.
        if (
            sender == "client"
            and packet_type(datagram) is wire.PacketType.ACK
            and pair.client.state is ConnectionState.TIME_WAIT
            and not state["dropped"]
        ):
            state["dropped"] = True
            return True
        return False

    pair = ConnectionPair(drop=drop)
    pair.client.connect(pair.now)
    pair.client.send(b"x")
    pair.client.close(pair.now)
    pair.run(until=30)
    assert state["dropped"]
    assert pair.lifecycle("server") == ["Connected", "PeerClosed", "Closed"]
    assert pair.lifecycle("client") == ["Connected", "PeerClosed", "Closed"]
    assert pair.server.state is ConnectionState.CLOSED


def test_simultaneous_close() -> None:
    pair = ConnectionPair()
    pair.client.connect(pair.now)
    pair.run(until=1)
    pair.client.send(b"c")
    pair.server.send(b"s")
    pair.client.close(pair.now)
    pair.server.close(pair.now)
    pair.run(until=30)
    assert pair.received("server") == [b"c"] and pair.received("client") == [b"s"]
    assert pair.lifecycle("client") == ["Connected", "PeerClosed", "Closed"]
    assert pair.lifecycle("server") == ["Connected", "PeerClosed", "Closed"]
    assert pair.client.is_closed and pair.server.is_closed


def test_close_during_handshake_is_deferred() -> None:
    pair = ConnectionPair()
    pair.client.send(b"early")
    pair.client.connect(pair.now)
    pair.client.close(pair.now)
    assert pair.client.state is ConnectionState.SYN_SENT
    pair.run(until=30)
    assert pair.received("server") == [b"early"]
    assert pair.lifecycle("client") == ["Connected", "PeerClosed", "Closed"]


def test_close_before_connect() -> None:
    conn = SansIOConnection(is_client=True, rng=random.Random(1))
    conn.close()
    assert conn.next_event() == Closed()
    assert conn.is_closed
    queued = SansIOConnection(is_client=True, rng=random.Random(1))
    queued.send(b"a")
    queued.close(0.0)
    assert queued.next_event() == Failed(
        "closed before connecting", (0,), FailureKind.CLOSED_BY_APPLICATION
    )


# --- give-up ------------------------------------------------------------------------------


def test_textbook_policy_against_a_black_hole_fails_at_3_1_seconds() -> None:
    pair = ConnectionPair(Config.textbook(), drop=lambda sender, datagram: True)
    pair.client.connect(pair.now)
    for m in (b"a", b"b", b"c"):
        pair.client.send(m)
    pair.run(until=60, stop=lambda: pair.client.is_closed)
    (failed,) = [e for e in pair.events["client"] if isinstance(e, Failed)]
    assert failed.undelivered == (0, 1, 2)
    assert failed.reason.startswith("peer unreachable")
    assert pair.now == pytest.approx(0.1 + 0.2 + 0.4 + 0.8 + 1.6)
    syns = [p for d, p in pair.packets() if p.type is wire.PacketType.SYN]
    assert len(syns) == 5  # the original and four retransmissions
    assert pair.client.get_timer() is None


def test_textbook_policy_when_the_peer_dies_mid_transfer() -> None:
    dead = {"on": False}
    pair = ConnectionPair(Config.textbook(), drop=lambda sender, datagram: dead["on"])
    pair.client.connect(pair.now)
    pair.run(until=1)
    pair.client.send(b"delivered")
    pair.run(until=2)
    assert pair.acknowledged("client") == [0]
    dead["on"] = True
    start = pair.now
    for m in (b"lost1", b"lost2"):
        pair.client.send(m)
    pair.run(until=60, stop=lambda: pair.client.is_closed)
    (failed,) = [e for e in pair.events["client"] if isinstance(e, Failed)]
    assert failed.undelivered == (1, 2)
    # The RTO is at its 0.1 s floor here, so the same 3.1 s schedule applies.
    assert pair.now - start == pytest.approx(3.1)


def test_peer_timeout_fails_a_silent_connection() -> None:
    dead = {"on": False}
    config = Config(peer_timeout=3.0, keepalive_interval=1.0)
    pair = ConnectionPair(config, drop=lambda sender, datagram: dead["on"])
    pair.client.connect(pair.now)
    pair.run(until=1)
    dead["on"] = True
    start = pair.now
    pair.run(until=60, stop=lambda: pair.client.is_closed)
    (failed,) = [e for e in pair.events["client"] if isinstance(e, Failed)]
    assert failed.undelivered == ()
    assert pair.now - start == pytest.approx(3.0)


def test_keepalive_keeps_an_idle_connection_open() -> None:
    config = Config(peer_timeout=3.0, keepalive_interval=1.0)
    pair = ConnectionPair(config)
    pair.client.connect(pair.now)
    pair.run(until=20)
    assert pair.client.state is ConnectionState.ESTABLISHED
    assert pair.server.state is ConnectionState.ESTABLISHED
    pings = [p for _, p in pair.packets() if p.type is wire.PacketType.PING]
    assert len(pings) >= 10


def test_reset_fails_the_peer_with_its_undelivered_messages() -> None:
    pair = ConnectionPair()
    pair.client.connect(pair.now)
    pair.run(until=1)
    pair.server.send(b"never acked")
    pair.client.abort("bye")
    pair.run(until=2)
    assert pair.events["client"][-1] == Failed("bye", (), FailureKind.ABORTED)
    assert pair.events["server"][-1] == Failed("reset by peer", (0,), FailureKind.RESET_BY_PEER)
    assert pair.client.datagrams_to_send(pair.now) == []


# --- local errors ---------------------------------------------------------------------------


def test_send_rejects_oversized_messages() -> None:
    conn = SansIOConnection(Config(max_message_size=10), is_client=True, rng=random.Random(0))
    with pytest.raises(MessageTooLarge):
        conn.send(b"x" * 11)
    assert conn.send(b"x" * 10) == 0


def test_connect_on_a_server_is_an_error() -> None:
    conn = SansIOConnection(is_client=False, rng=random.Random(0))
    with pytest.raises(LocalProtocolError):
        conn.connect(0.0)


# --- state table ------------------------------------------------------------------------------


def test_state_table_has_no_transitions_out_of_terminal_states() -> None:
    for (state, _inp), target in TRANSITIONS.items():
        if state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            assert target is state


def test_mermaid_lists_every_state_change() -> None:
    text = to_mermaid()
    assert text.startswith("stateDiagram-v2\n")
    for (state, inp), target in TRANSITIONS.items():
        if state is not target:
            line = next(x for x in text.splitlines() if x.strip().startswith(f"{state.name} -->"))
            assert line
            assert inp.name in text
    assert to_mermaid() == text
    assert (ConnectionState.ESTABLISHED, Input.CLOSE) in TRANSITIONS


# --- large messages ----------------------------------------------------------------------------


def test_64_mib_message_end_to_end() -> None:
    # The biggest message max_message_size allows, with the largest UDP datagrams
    # (1,025 fragments); the next test covers many small fragments.
    size = 64 * 1024 * 1024
    message = random.Random(5).randbytes(size)
    big = Config(max_datagram_size=65507, max_message_size=size, receive_buffer=size)
    pair = ConnectionPair(big)
    pair.client.connect(pair.now)
    pair.client.send(message)
    pair.run(until=10, stop=lambda: bool(pair.acknowledged("client")))
    (received,) = pair.received("server")
    assert received == message
    assert pair.acknowledged("client") == [0]


def test_multi_mib_message_with_default_datagrams_and_loss() -> None:
    rng = random.Random(9)
    message = rng.randbytes(3 * 1024 * 1024 + 17)  # about 2,300 fragments
    config = Config(max_message_size=4 * 1024 * 1024)  # above the 1 MiB default
    pair = ConnectionPair(config, drop=lambda sender, datagram: rng.random() < 0.05)
    pair.client.connect(pair.now)
    pair.client.send(message)
    pair.client.send(b"after")
    pair.run(until=120, stop=lambda: len(pair.acknowledged("client")) == 2)
    assert pair.received("server") == [message, b"after"]


def test_message_larger_than_receiver_allows_fails_the_connection() -> None:
    pair = ConnectionPair(
        Config(max_datagram_size=1200), server_config=Config(max_message_size=5000)
    )
    pair.client.connect(pair.now)
    pair.client.send(b"q" * 30000)
    pair.run(until=5)
    assert isinstance(pair.events["server"][-1], Failed)
    assert "message too large" in pair.events["server"][-1].reason
    assert pair.events["client"][-1] == Failed("reset by peer", (0,), FailureKind.RESET_BY_PEER)


# --- sequence wraparound ------------------------------------------------------------------------


def test_sequence_numbers_wrap_around_2_to_the_32() -> None:
    rng = random.Random(11)
    isn = 2**32 - 5
    pair = ConnectionPair(
        client_initial_sequence=isn,
        server_initial_sequence=isn,
        drop=lambda sender, datagram: rng.random() < 0.1,
    )
    msgs = messages(400, 50)
    pair.client.connect(pair.now)
    for m in msgs:
        pair.client.send(m)
        pair.server.send(m[::-1])
    pair.client.close(pair.now)
    pair.run(until=300)
    assert pair.received("server") == msgs
    assert pair.received("client") == [m[::-1] for m in msgs]
    assert pair.lifecycle("client") == ["Connected", "PeerClosed", "Closed"]
    seqs = [p.seq for d, p in pair.packets() if d == "client" and p.type is wire.PacketType.DATA]
    assert max(seqs) == 2**32 - 1 and min(seqs) == 0  # it really crossed the boundary
    assert pair.client.stats.datagrams_dropped == 0 and pair.server.stats.datagrams_dropped == 0


# --- flow control -----------------------------------------------------------------------------


def test_unread_messages_close_the_window_and_reading_reopens_it() -> None:
    config = Config(receive_window=8)
    client = SansIOConnection(config, is_client=True, rng=random.Random(1))
    server = SansIOConnection(config, is_client=False, rng=random.Random(2))
    now = 0.0
    client.connect(now)
    for m in messages(50):
        client.send(m)

    def exchange() -> None:
        for _ in range(50):
            a = client.datagrams_to_send(now)
            feed(server, a, now)
            b = server.datagrams_to_send(now)
            feed(client, b, now)
            if not a and not b:
                return

    exchange()
    # The server application reads nothing: at most receive_window messages are held.
    assert server.stats.messages_delivered == 8
    assert server.stats.local_window == 0
    assert client.stats.peer_window == 0
    delivered: list[bytes] = []
    for _ in range(30):
        event = server.next_event()
        while event is not None:
            if isinstance(event, MessageReceived):
                delivered.append(event.data)
            event = server.next_event()
        exchange()  # reading sent a window update; more data flowed
        now += 0.02
        for conn in (client, server):
            if (t := conn.get_timer()) is not None and t <= now:
                conn.handle_timer(now)
    assert delivered == messages(50)
    assert client.stats.retransmissions == 0


def test_lost_window_update_is_recovered_by_a_zero_window_probe() -> None:
    pair = ConnectionPair(Config(receive_window=4))
    pair.client.connect(pair.now)
    pair.run(until=0.5)
    for m in messages(12):
        pair.client.send(m)
    # Exchange without letting the server application read.
    for _ in range(5):
        for datagram in pair.client.datagrams_to_send(pair.now):
            pair.server.receive_datagram(datagram, pair.now)
        for datagram in pair.server.datagrams_to_send(pair.now):
            pair.client.receive_datagram(datagram, pair.now)
    assert pair.client.stats.peer_window == 0
    # The application reads everything; the window update that follows is lost.
    read = [e.data for e in drain(pair.server) if isinstance(e, MessageReceived)]
    assert len(read) == 4
    (update,) = [wire.decode(d) for d in pair.server.datagrams_to_send(pair.now)]
    assert update.type is wire.PacketType.ACK and update.window == 4
    n = len(pair.sent)
    pair.run(until=30, stop=lambda: len(pair.received("server")) == 8)
    assert read + pair.received("server") == messages(12)
    pings = [p for d, p in pair.packets(n) if d == "client" and p.type is wire.PacketType.PING]
    assert pings  # the probe that rediscovered the window


# --- hostile input ------------------------------------------------------------------------------


def established(config: Config | None = None) -> ConnectionPair:
    pair = ConnectionPair(config)
    pair.client.connect(pair.now)
    pair.run(until=0.1)
    return pair


def forge(conn: SansIOConnection, peer: SansIOConnection, **fields: object) -> bytes:
    """A datagram from ``peer`` to ``conn`` with valid ids and sequence numbers, then ``fields``."""
    base = {
        "type": wire.PacketType.ACK,
        "flags": 0,
        "connection_id": conn.local_connection_id,
        "seq": peer._sender.snd_nxt & 0xFFFFFFFF,
        "ack": conn._sender.snd_una & 0xFFFFFFFF,
        "window": 100,
        "fragments_left": 0,
        "sack": (),
        "payload": b"",
    }
    base.update(fields)
    return wire.encode(wire.Packet(**base))  # type: ignore[arg-type]


def test_hostile_datagrams_are_dropped_and_counted() -> None:
    pair = established()
    c, s = pair.client, pair.server
    pair.client.send(b"in flight")
    c.datagrams_to_send(pair.now)  # sent, never delivered: snd_nxt > snd_una
    una = c._sender.snd_una & 0xFFFFFFFF
    nxt = c._sender.snd_nxt & 0xFFFFFFFF
    bad = [
        b"",
        b"\x00" * 10,
        b"garbage" * 20,
        forge(c, s, connection_id=12345),  # not our id
        forge(c, s, ack=(nxt + 5) & 0xFFFFFFFF),  # acks what was never sent
        forge(c, s, ack=una, sack=((una + 1, una + 3),)),  # SACK beyond next_seq
        forge(c, s, ack=una, sack=((una, una),)),  # empty SACK block
        forge(c, s, type=wire.PacketType.SYN_ACK, payload=b"\x00" * 10),  # SYN_ACK w/o SYN
        forge(
            c,
            s,
            type=wire.PacketType.SYN,
            connection_id=0,
            payload=b"\x00\x00\x00\x00\x00\x00\x00\x01\x05\x00",
        ),
        forge(
            c,
            s,
            type=wire.PacketType.DATA,
            seq=(s._sender.snd_nxt + 5000) & 0xFFFFFFFF,
            payload=b"x",
        ),
    ]
    before = c.stats
    for i, datagram in enumerate(bad):
        dropped = c.stats.datagrams_dropped
        c.receive_datagram(datagram, pair.now)
        assert c.stats.datagrams_dropped == dropped + 1, i
    after = c.stats
    assert after.datagrams_dropped - before.datagrams_dropped == len(bad)
    assert c.next_event() is None
    assert c.state is ConnectionState.ESTABLISHED
    assert after.messages_acked == before.messages_acked == 0
    assert after.packets_in_flight == before.packets_in_flight == 1
    # The connection still works.
    pair.run(until=5)
    assert pair.received("server") == [b"in flight"]


def test_random_corruption_never_raises_and_memory_stays_bounded() -> None:
    config = Config(receive_window=16)
    rng = random.Random(1234)
    pair = established(config)
    c, s = pair.client, pair.server
    for m in messages(40):
        c.send(m)
    template = c.datagrams_to_send(pair.now)
    feed(s, template[:3], pair.now)
    for _ in range(3000):
        packet = wire.decode(rng.choice(template))
        mutated = packet._replace(
            type=rng.choice(list(wire.PacketType)),
            seq=rng.choice([packet.seq, rng.getrandbits(32), packet.seq + rng.randint(-20, 20)])
            & 0xFFFFFFFF,
            ack=rng.choice([packet.ack, rng.getrandbits(32)]),
            fragments_left=rng.choice([0, 1, 2, rng.getrandbits(32)]),
            window=rng.getrandbits(16),
            sack=tuple(
                (x & 0xFFFFFFFF, (x + rng.randint(0, 5)) & 0xFFFFFFFF)
                for x in (packet.seq + rng.randint(-10, 10) for _ in range(rng.randint(0, 3)))
            ),
            payload=packet.payload if rng.random() < 0.8 else b"\x00" * wire.HANDSHAKE_SIZE,
        )
        try:
            datagram = wire.encode(mutated)
        except ValueError:
            continue
        s.receive_datagram(datagram, pair.now)
        assert s._receiver.held_count <= config.receive_window
        if s.is_closed:
            break
    # Whatever happened, the server is in a legal state and its buffers are bounded.
    assert s.state in ConnectionState
    assert s._receiver.held_count <= config.receive_window


def test_inconsistent_fragments_fail_with_a_protocol_error() -> None:
    pair = established()
    c, s = pair.client, pair.server
    seq = c._sender.snd_nxt
    first = forge(
        s, c, type=wire.PacketType.DATA, seq=seq & 0xFFFFFFFF, fragments_left=3, payload=b"a"
    )
    wrong = forge(
        s, c, type=wire.PacketType.DATA, seq=(seq + 1) & 0xFFFFFFFF, fragments_left=0, payload=b"b"
    )
    s.receive_datagram(first, pair.now)
    s.receive_datagram(wrong, pair.now)
    events = drain(s)
    assert isinstance(events[-1], Failed) and "protocol error" in events[-1].reason
    (reset,) = [wire.decode(d) for d in s.datagrams_to_send(pair.now)]
    assert reset.type is wire.PacketType.RESET
    assert s.datagrams_to_send(pair.now) == []


def drain(conn: SansIOConnection) -> list[Event]:
    """Every pending event of ``conn``."""
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def test_idle_timeout_closes_an_idle_connection_gracefully() -> None:
    pair = ConnectionPair(Config(idle_timeout=3.0, keepalive_interval=1.0))
    pair.client.connect(pair.now)
    pair.client.send(b"last words")
    pair.run(until=60)
    assert pair.received("server") == [b"last words"]
    assert pair.lifecycle("client") == ["Connected", "PeerClosed", "Closed"]
    assert pair.lifecycle("server") == ["Connected", "PeerClosed", "Closed"]
    fin = next(p for d, p in pair.packets() if p.type is wire.PacketType.FIN)
    assert fin is not None
    assert pair.client.is_closed and pair.server.is_closed


def test_server_closed_before_its_syn_closes_right_after_the_handshake() -> None:
    pair = ConnectionPair()
    pair.server.send(b"greeting")
    pair.server.close(pair.now)
    assert pair.server.state is ConnectionState.LISTEN
    pair.client.connect(pair.now)
    pair.run(until=30)
    assert pair.received("client") == [b"greeting"]
    assert pair.lifecycle("server") == ["Connected", "PeerClosed", "Closed"]
    assert pair.client.is_closed and pair.server.is_closed


def test_spoofed_syn_costs_at_most_three_syn_acks() -> None:
    server = SansIOConnection(Config(peer_timeout=60), is_client=False, rng=random.Random(0))
    client = SansIOConnection(is_client=True, rng=random.Random(1))
    client.connect(0.0)
    (syn,) = client.datagrams_to_send(0.0)
    server.receive_datagram(syn, 0.0)
    now = 0.0
    syn_acks = len(server.datagrams_to_send(now))
    while (timer := server.get_timer()) is not None and not server.is_closed:
        now = timer
        server.handle_timer(now)
        syn_acks += len(server.datagrams_to_send(now))
    assert syn_acks == 3
    assert now == pytest.approx(60.0)
    assert isinstance(server.next_event(), Failed)


def test_sack_alone_never_acknowledges_a_message() -> None:
    pair = established()
    c, s = pair.client, pair.server
    for m in messages(5):
        c.send(m)
    batch = c.datagrams_to_send(pair.now)
    feed(s, batch[1:], pair.now)  # the first one is lost
    feed(c, s.datagrams_to_send(pair.now), pair.now)
    assert [e for e in drain(c) if isinstance(e, MessageAcknowledged)] == []
    assert c.send_queue_bytes == sum(map(len, messages(5)))
    s.receive_datagram(batch[0], pair.now)
    feed(c, s.datagrams_to_send(pair.now), pair.now)
    acked = [e.message_id for e in drain(c) if isinstance(e, MessageAcknowledged)]
    assert acked == [0, 1, 2, 3, 4]
    assert c.send_queue_bytes == 0


def test_sack_blocks_are_limited_to_what_fits_and_newest_first() -> None:
    # "fixed": no congestion window or pacing to hold the 60 packets back.
    pair = established(
        Config(max_datagram_size=1200, receive_window=200, congestion_control="fixed")
    )
    c, s = pair.client, pair.server
    limit = min(32, (1200 - wire.OVERHEAD) // wire.SACK_SIZE)  # section 16: at most 32
    assert limit < 40
    for i in range(80):
        c.send(bytes([i]))
    batch = c.datagrams_to_send(pair.now)
    assert len(batch) == 80
    feed(s, batch[1::2], pair.now)  # every other packet: 40 holes
    acks = [wire.decode(d) for d in s.datagrams_to_send(pair.now)]
    assert len(acks) == 1 and len(acks[0].sack) == limit
    seqs = [wire.decode(d).seq for d in batch]
    ack = acks[0]
    # The most recent arrival is also the highest block; then downwards, one per hole.
    expected = [(seqs[i], seqs[i] + 1) for i in range(79, 0, -2)][:limit]
    assert list(ack.sack) == expected
    assert all(ack.ack < start < end <= seqs[-1] + 1 for start, end in ack.sack)
    blocks = sorted(ack.sack)
    assert all(a_end < b_start for (_, a_end), (b_start, _) in pairwise(blocks))
    assert all(len(d) <= 1200 for d in s.datagrams_to_send(pair.now))


# --- every packet type in every state -----------------------------------------------------------


def _in_state(target: ConnectionState) -> tuple[SansIOConnection, SansIOConnection]:
    """A (connection in ``target``, its peer) pair, reached by honest steps."""
    pair = ConnectionPair()
    c, s = pair.client, pair.server
    if target is ConnectionState.LISTEN:
        return s, c
    c.connect(pair.now)
    if target is ConnectionState.SYN_SENT:
        return c, s
    feed(s, c.datagrams_to_send(pair.now), pair.now)
    if target is ConnectionState.SYN_RECEIVED:
        return s, c
    pair.run(until=0.1)
    if target is ConnectionState.ESTABLISHED:
        return c, s
    if target is ConnectionState.FAILED:
        c.abort()
        return c, s
    if target is ConnectionState.FIN_WAIT:
        # The server still has messages the client does not read (window 2): its FIN waits.
        c._receiver._window_size = 2
        for m in messages(10):
            s.send(m)
        c.close(pair.now)
        for _ in range(5):
            feed(s, c.datagrams_to_send(pair.now), pair.now)
            feed(c, s.datagrams_to_send(pair.now), pair.now)
        return c, s
    c.close(pair.now)
    if target is ConnectionState.CLOSING:
        c.datagrams_to_send(pair.now)  # the FIN is sent, not delivered
        return c, s
    pair.run(until=1.0, stop=lambda: c.state is target or s.state is target)
    return (c, s) if c.state is target else (s, c)


@pytest.mark.parametrize(
    "state",
    [
        ConnectionState.LISTEN,
        ConnectionState.SYN_SENT,
        ConnectionState.SYN_RECEIVED,
        ConnectionState.ESTABLISHED,
        ConnectionState.CLOSING,
        ConnectionState.FIN_WAIT,
        ConnectionState.TIME_WAIT,
        ConnectionState.FAILED,
    ],
)
@pytest.mark.parametrize("ptype", list(wire.PacketType))
def test_packets_not_in_the_table_are_dropped(
    state: ConnectionState, ptype: wire.PacketType
) -> None:
    conn, peer = _in_state(state)
    assert conn.state is state
    payload = {
        wire.PacketType.RESET: bytes(wire.RESET_TOKEN_SIZE),  # no valid token
        wire.PacketType.STATELESS_RESET: bytes(wire.RESET_TOKEN_SIZE),
        wire.PacketType.PATH_CHALLENGE: bytes(wire.PATH_DATA_SIZE),
        wire.PacketType.PATH_RESPONSE: bytes(wire.PATH_DATA_SIZE),
    }.get(ptype, b"")
    if ptype in (wire.PacketType.SYN, wire.PacketType.SYN_ACK):
        payload = wire.encode_handshake(wire.Handshake(peer.local_connection_id, 1400))
    datagram = forge(
        conn,
        peer,
        type=ptype,
        connection_id=0 if ptype is wire.PacketType.SYN else conn.local_connection_id,
        seq=(peer._isn if ptype in (wire.PacketType.SYN, wire.PacketType.SYN_ACK) else 0)
        & 0xFFFFFFFF,
        ack=conn._sender.snd_una & 0xFFFFFFFF,
        payload=payload,
    )
    dropped = conn.stats.datagrams_dropped
    conn.receive_datagram(datagram, 0.05)
    allowed = (state, PACKET_INPUTS[ptype]) in TRANSITIONS
    if not allowed and state is not ConnectionState.SYN_RECEIVED:
        assert conn.stats.datagrams_dropped == dropped + 1
        assert conn.state is state
