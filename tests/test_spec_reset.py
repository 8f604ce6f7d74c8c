"""Conformance tests of the full close, resets and stateless resets (spec sections 6.3-6.6).

Like tests/test_spec.py (whose scripted peers these tests share), each test holds the
engine to one tagged MUST; the engine is driven with crafted datagrams and a virtual
clock, no sockets and no sleeps.
"""

from __future__ import annotations

import random

from test_spec import (  # the name pytest imports it by: one module, one registry
    PEER_TOKEN,
    SERVER_ID,
    _client_under_test,
    _decode_all,
    _drain_events,
    _Peer,
    _server_under_test,
    _state,
)

from rudp.config import Config
from rudp.core import wire
from rudp.core.closing import CHALLENGE_ACK_INTERVAL
from rudp.core.connection import SansIOConnection
from rudp.core.state import ConnectionState
from rudp.core.wire import Packet, PacketType
from rudp.events import (
    Closed,
    Failed,
    FailureKind,
    MessageAcknowledged,
    MessageReceived,
    PeerClosed,
)

_QUIET = Config(keepalive_interval=None)
"""No keepalive PINGs in the output the tests inspect."""


def _types(packets: list[Packet]) -> list[PacketType]:
    return [p.type for p in packets]


def _acknowledge_all(peer: _Peer, packets: list[Packet]) -> None:
    """The scripted peer acknowledges every DATA/FIN in ``packets``."""
    for packet in packets:
        if packet.type in (PacketType.DATA, PacketType.FIN):
            peer.expected = max(peer.expected, peer.full(packet.seq) + 1)
    peer.feed(peer.craft(PacketType.ACK))


def _client_announcing(token: bytes) -> _Peer:
    """An ESTABLISHED client engine whose scripted server announced ``token``."""
    conn = SansIOConnection(_QUIET, is_client=True, rng=random.Random(7))
    conn.connect(0.0)
    (syn,) = _decode_all(conn.datagrams_to_send(0.0))
    block = wire.encode_handshake(wire.Handshake(SERVER_ID, 1400, token))
    syn_ack = wire.encode(
        Packet(
            PacketType.SYN_ACK,
            0,
            wire.decode_handshake(syn.payload).source_connection_id,
            5000,
            wire.wire_seq(syn.seq + 1),
            1000,
            0,
            (),
            block,
        )
    )
    conn.receive_datagram(syn_ack, 0.0)
    assert conn.state is ConnectionState.ESTABLISHED
    peer = _Peer(conn, SERVER_ID, 5001, syn.seq + 1)
    peer.reset_token = token
    _drain_events(conn)
    peer.output()
    return peer


# --- §6.3 the full close -----------------------------------------------------------------


def test_s6_3_full_close_refuses_later_data() -> None:
    """§6.3-6: after a full close, new DATA is neither delivered nor acknowledged."""
    peer = _server_under_test(_QUIET)
    conn = peer.conn
    first = peer.next_seq
    peer.feed(peer.craft(PacketType.DATA, payload=b"read"))
    assert _drain_events(conn) == [MessageReceived(b"read")]
    conn.close(peer.now, reading=False)
    (fin,) = peer.output()
    assert fin.type is PacketType.FIN and peer.full(fin.ack, first) == first + 1
    # A duplicate is re-acknowledged as always, and changes nothing.
    peer.feed(peer.craft(PacketType.DATA, seq=first, payload=b"read"))
    (ack,) = peer.output()
    assert ack.type is PacketType.ACK and peer.full(ack.ack, first) == first + 1
    # New data: not delivered, and nothing we send acknowledges it (the RESET follows).
    peer.feed(peer.craft(PacketType.DATA, payload=b"unread"))
    later = peer.output()
    assert _types(later) == [PacketType.RESET]
    assert all(peer.full(p.ack, first) == first + 1 for p in later)
    assert not any(isinstance(e, MessageReceived) for e in _drain_events(conn))
    # The half-close (the default) still delivers what the peer sends after it.
    half = _server_under_test(_QUIET)
    half.conn.close(half.now)
    half.output()
    half.feed(half.craft(PacketType.DATA, payload=b"still read"))
    assert MessageReceived(b"still read") in _drain_events(half.conn)
    # And the peer's FIN after a full close is taken: it loses nothing, no RESET.
    fin_peer = _server_under_test(_QUIET)
    fin_peer.conn.close(fin_peer.now, reading=False)
    fin_peer.output()
    fin_peer.feed(fin_peer.craft(PacketType.FIN))
    assert PeerClosed() in _drain_events(fin_peer.conn)
    assert PacketType.RESET not in _types(fin_peer.output())


def test_s6_3_full_close_resets_once_our_messages_are_acknowledged() -> None:
    """§6.3-7: a full close losing peer data sends a RESET once ours are acked; ends Closed."""
    peer = _client_under_test(_QUIET)
    conn = peer.conn
    conn.send(b"m0")
    conn.send(b"m1")
    (d0, d1) = peer.output()
    peer.feed(peer.craft(PacketType.DATA, payload=b"never read"))  # queued in the core
    conn.close(peer.now, reading=False)
    assert PacketType.RESET not in _types(peer.output())  # our messages come first
    _acknowledge_all(peer, [d0])
    assert PacketType.RESET not in _types(peer.output())
    assert _state(conn) is not ConnectionState.CLOSED
    _acknowledge_all(peer, [d1])
    (reset,) = peer.output()
    assert reset.type is PacketType.RESET and reset.payload == conn._opening.reset_token
    events = _drain_events(conn)
    assert events[-1] == Closed() and not any(isinstance(e, Failed) for e in events)
    assert [e for e in events if isinstance(e, MessageAcknowledged)] == [
        MessageAcknowledged(0),
        MessageAcknowledged(1),
    ]
    assert _state(conn) is ConnectionState.CLOSED and conn.get_timer() is None
    assert peer.output() == []
    # Nothing of ours outstanding and messages the driver holds unread: the RESET goes at once.
    idle = _server_under_test(_QUIET)
    idle.feed(idle.craft(PacketType.DATA, payload=b"in the driver's inbox"))
    _drain_events(idle.conn)
    idle.conn.close(idle.now, reading=False, left_unread=True)
    assert _types(idle.output()) == [PacketType.RESET]
    assert _drain_events(idle.conn) == [Closed()]
    # Nothing lost: a full close is an ordinary graceful close.
    clean = _server_under_test(_QUIET)
    clean.conn.close(clean.now, reading=False)
    assert _types(clean.output()) == [PacketType.FIN]


# --- §6.4 reset ----------------------------------------------------------------------------


def test_s6_4_reset_without_token_needs_exact_seq() -> None:
    """§6.4-2: without the peer's token a RESET needs the exact seq; a zero token never matches."""
    wrong = bytes(16)
    # The peer announced a token: a RESET with another one and an out-of-window seq is dropped.
    peer = _client_under_test(_QUIET)
    conn = peer.conn
    before = conn.stats
    peer.feed(peer.craft(PacketType.RESET, payload=wrong, seq=peer.next_seq + 100_000))
    assert conn.state is ConnectionState.ESTABLISHED and _drain_events(conn) == []
    assert conn.stats.resets_rejected == before.resets_rejected + 1
    assert conn.stats.datagrams_dropped == before.datagrams_dropped + 1
    # Exactly the next expected sequence number is plausible without the token.
    peer.feed(peer.craft(PacketType.RESET, payload=wrong, seq=peer.next_seq))
    assert _drain_events(conn) == [Failed("reset by peer", (), FailureKind.RESET_BY_PEER)]
    # A peer that announced the all-zero token ("none"): a zero-token RESET is not plausible.
    tokenless = _client_announcing(wire.NO_RESET_TOKEN)
    tokenless.feed(tokenless.craft(PacketType.RESET, seq=tokenless.next_seq + 100_000))
    assert tokenless.conn.state is ConnectionState.ESTABLISHED
    tokenless.feed(tokenless.craft(PacketType.RESET, seq=tokenless.next_seq))
    assert _state(tokenless.conn) is ConnectionState.FAILED


def test_s6_4_reset_in_syn_sent_must_ack_our_syn() -> None:
    """§6.4-3: in SYN_SENT a RESET is accepted only if its ack is exactly our ISN + 1."""
    conn = SansIOConnection(_QUIET, is_client=True, rng=random.Random(3))
    conn.connect(0.0)
    (syn,) = _decode_all(conn.datagrams_to_send(0.0))
    cid = conn.local_connection_id

    def reset(ack: int) -> bytes:
        fields = Packet(PacketType.RESET, 0, cid, 77, wire.wire_seq(ack), 0, 0, (), PEER_TOKEN)
        return wire.encode(fields)

    for ack in (syn.seq, syn.seq + 2, syn.seq + 1000):
        conn.receive_datagram(reset(ack), 0.1)
        assert conn.state is ConnectionState.SYN_SENT
    assert conn.stats.resets_rejected == 3
    conn.receive_datagram(reset(syn.seq + 1), 0.2)
    (failed,) = _drain_events(conn)
    assert isinstance(failed, Failed) and failed.kind is FailureKind.RESET_BY_PEER
    assert failed.reason.startswith("connection refused by peer") and failed.undelivered == ()


def test_s6_4_implausible_in_window_reset_draws_rate_limited_challenge_ack() -> None:
    """§6.4-4: an in-window implausible RESET draws one challenge ACK per 0.5 s; none outside."""
    peer = _client_under_test(_QUIET)
    conn = peer.conn
    wrong = bytes(range(16))
    in_window = peer.next_seq + 5
    for _ in range(5):  # a spray of forgeries at one instant
        peer.feed(peer.craft(PacketType.RESET, payload=wrong, seq=in_window))
    (challenge,) = peer.output()
    assert challenge.type is PacketType.ACK
    assert peer.full(challenge.ack) == peer.next_seq  # our current cumulative ack
    assert conn.state is ConnectionState.ESTABLISHED and _drain_events(conn) == []
    assert (conn.stats.challenge_acks_sent, conn.stats.resets_rejected) == (1, 5)
    peer.now += CHALLENGE_ACK_INTERVAL / 2
    peer.feed(peer.craft(PacketType.RESET, payload=wrong, seq=in_window))
    assert peer.output() == []  # rate-limited
    peer.now += CHALLENGE_ACK_INTERVAL / 2
    peer.feed(peer.craft(PacketType.RESET, payload=wrong, seq=in_window))
    assert _types(peer.output()) == [PacketType.ACK]
    # Outside the window: dropped without an answer.
    peer.now += 10 * CHALLENGE_ACK_INTERVAL
    peer.feed(peer.craft(PacketType.RESET, payload=wrong, seq=peer.next_seq + 50_000))
    assert peer.output() == []
    assert (conn.stats.challenge_acks_sent, conn.stats.resets_rejected) == (2, 8)
    # The connection lives on: data still flows.
    peer.feed(peer.craft(PacketType.DATA, payload=b"alive"))
    assert _drain_events(conn) == [MessageReceived(b"alive")]


def test_s6_4_reset_ack_taken_before_failing() -> None:
    """§6.4-5: a plausible RESET's valid ack is taken first: undelivered is what it did not ack."""
    peer = _client_under_test(_QUIET)
    conn = peer.conn
    for message in (b"a", b"b", b"c"):
        conn.send(message)
    (first, _, _) = peer.output()
    peer.feed(peer.craft(PacketType.RESET, ack=peer.full(first.seq) + 1))
    assert _drain_events(conn) == [
        MessageAcknowledged(0),
        Failed("reset by peer", (1, 2), FailureKind.RESET_BY_PEER),
    ]
    # An ack of data never sent is a forgery (section 8.5): ignored, the RESET still counts.
    forged = _client_under_test(_QUIET)
    forged.conn.send(b"a")
    forged.output()
    forged.feed(forged.craft(PacketType.RESET, ack=forged.expected + 50))
    assert _drain_events(forged.conn) == [Failed("reset by peer", (0,), FailureKind.RESET_BY_PEER)]


def _peer_closed_with_everything_acknowledged() -> _Peer:
    """A server engine in PEER_CLOSED: the peer's FIN delivered, all acked but our FIN."""
    peer = _server_under_test(_QUIET)
    conn = peer.conn
    conn.send(b"ours")
    _acknowledge_all(peer, peer.output())
    peer.feed(peer.craft(PacketType.FIN))
    assert PacketType.FIN in _types(peer.output())  # our FIN, whose ack never comes
    assert conn.state is ConnectionState.PEER_CLOSED
    _drain_events(conn)
    return peer


def test_s6_4_reset_after_a_clean_close_is_closed() -> None:
    """§6.4-6: a plausible reset when only our FIN is unacknowledged ends as Closed."""
    peer = _peer_closed_with_everything_acknowledged()
    peer.feed(peer.craft(PacketType.RESET))
    assert _drain_events(peer.conn) == [Closed()]
    assert _state(peer.conn) is ConnectionState.CLOSED
    stateless = _peer_closed_with_everything_acknowledged()
    conn = stateless.conn
    assert conn.remote_connection_id is not None
    conn.receive_datagram(wire.encode_stateless_reset(conn.remote_connection_id, PEER_TOKEN), 0.0)
    assert _drain_events(conn) == [Closed()]
    # With a message unacknowledged it is a failure, as ever.
    lost = _server_under_test(_QUIET)
    lost.conn.send(b"unacked")
    lost.output()
    lost.feed(lost.craft(PacketType.FIN))
    lost.feed(lost.craft(PacketType.RESET))
    events = _drain_events(lost.conn)
    assert events[-1] == Failed("reset by peer", (0,), FailureKind.RESET_BY_PEER)


def test_s6_4_no_reply_to_a_reset() -> None:
    """§6.4-7: no RESET is sent in reply to a RESET or a stateless reset, taken or not."""
    for taken in (True, False):
        peer = _client_under_test(_QUIET)
        conn = peer.conn
        assert conn.remote_connection_id is not None
        token = PEER_TOKEN if taken else bytes(16)
        seq = peer.next_seq + (0 if taken else 100_000)
        peer.feed(peer.craft(PacketType.RESET, payload=token, seq=seq))
        conn.receive_datagram(wire.encode_stateless_reset(conn.remote_connection_id, token), 0.0)
        assert PacketType.RESET not in _types(peer.output())
        assert (_state(conn) is ConnectionState.FAILED) is taken


def test_s6_4_give_up_sends_a_reset() -> None:
    """§6.4-8: giving up after the handshake sends one RESET carrying our token."""
    peer = _client_under_test(Config(keepalive_interval=None, max_retransmits=2))
    conn = peer.conn
    conn.send(b"to nobody")
    sent = peer.output()
    for _ in range(10):
        if conn.is_closed:
            break
        sent += peer.fire()
    events = _drain_events(conn)
    assert isinstance(events[-1], Failed) and events[-1].kind is FailureKind.UNREACHABLE
    assert _types(sent)[-1] == PacketType.RESET and _types(sent).count(PacketType.RESET) == 1
    assert sent[-1].payload == conn._opening.reset_token
    assert peer.output() == []
    # Silence for peer_timeout gives up the same way, and tells the peer too.
    silent = _client_under_test(Config(keepalive_interval=None, peer_timeout=5.0))
    silent.conn.send(b"x")
    out = silent.output()
    while not silent.conn.is_closed:
        out += silent.fire()
    assert out[-1].type is PacketType.RESET
    assert "nothing heard" in str(_drain_events(silent.conn)[-1])


# --- §6.6.1 receiving a stateless reset ------------------------------------------------------


def test_s6_6_1_stateless_reset_needs_peer_id_and_token() -> None:
    """§6.6.1-1: a stateless reset needs the peer's id and its non-zero token; then it fails us."""
    peer = _client_under_test(_QUIET)
    conn = peer.conn
    remote = conn.remote_connection_id
    assert remote is not None
    conn.send(b"lost")
    peer.output()
    for cid, token in (
        (remote, bytes(16)),
        (remote, PEER_TOKEN[::-1]),
        (remote ^ 1, PEER_TOKEN),
        (conn.local_connection_id, PEER_TOKEN),  # our own id is not what the peer issued
    ):
        conn.receive_datagram(wire.encode_stateless_reset(cid, token), 0.0)
    assert conn.state is ConnectionState.ESTABLISHED
    assert conn.stats.resets_rejected == 4
    conn.receive_datagram(wire.encode_stateless_reset(remote, PEER_TOKEN), 0.0)
    (failed,) = _drain_events(conn)
    assert isinstance(failed, Failed) and failed.kind is FailureKind.RESET_BY_PEER
    assert failed.undelivered == (0,) and "lost the connection's state" in failed.reason
    # A peer that announced no token can never be reset statelessly.
    tokenless = _client_announcing(wire.NO_RESET_TOKEN)
    remote = tokenless.conn.remote_connection_id
    assert remote is not None
    tokenless.conn.receive_datagram(wire.encode_stateless_reset(remote, bytes(16)), 0.0)
    assert tokenless.conn.state is ConnectionState.ESTABLISHED


def test_s6_6_1_stateless_reset_never_answered() -> None:
    """§6.6.1-2: nothing is sent in answer to a stateless reset, plausible or not."""
    peer = _client_under_test(_QUIET)
    conn = peer.conn
    remote = conn.remote_connection_id
    assert remote is not None
    conn.receive_datagram(wire.encode_stateless_reset(remote, bytes(range(16))), 0.0)
    assert peer.output() == []
    conn.receive_datagram(wire.encode_stateless_reset(remote, PEER_TOKEN), 0.0)
    assert peer.output() == [] and _state(conn) is ConnectionState.FAILED
