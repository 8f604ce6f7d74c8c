"""Conformance tests: one test per MUST of specs/protocol.md.

Every absolute requirement in the spec carries a tag ``[§N.M-k]``; the test
that holds the implementation to it starts its docstring with the same tag.
``test_every_must_is_tagged_and_tested`` checks the bookkeeping itself, so the
spec cannot grow an untested MUST.

The tests drive ``rudp.core.connection.SansIOConnection`` directly with crafted
datagrams and a virtual clock (plain floats passed as ``now``): no sockets, no
sleeps, no wall-clock time.  Where a test needs a live peer it uses a second
engine joined by a lossless in-memory wire (``rudp.testing.ConnectionPair``)
that the test steps by hand, dropping datagrams where the requirement calls for it.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp.config import Config
from rudp.core import wire
from rudp.core.connection import SansIOConnection
from rudp.core.state import ConnectionState
from rudp.core.wire import Flags, Packet, PacketType
from rudp.errors import BadPacket, LocalProtocolError, MessageTooLarge
from rudp.events import (
    Closed,
    Connected,
    Event,
    Failed,
    FailureKind,
    MessageAcknowledged,
    MessageReceived,
    PeerClosed,
)
from rudp.testing import ConnectionPair

SPEC = Path(__file__).resolve().parent.parent / "specs" / "protocol.md"
TAG = re.compile(r"\[§(\d+(?:\.\d+)*-\d+)\]")
Conn = SansIOConnection
MUST = re.compile(r"\b(?:MUST(?: NOT)?|SHALL(?: NOT)?|REQUIRED)\b")


# --- the bookkeeping: every MUST tagged, every tag tested ---------------------


def _normative_text() -> str:
    """The spec from section 2 on (section 1 quotes the BCP 14 key words)."""
    text = SPEC.read_text(encoding="utf-8")
    start = text.index("\n## 2. ")
    return text[start:]


def _spec_tags() -> list[str]:
    return TAG.findall(_normative_text())


def test_every_must_is_tagged_and_tested() -> None:
    """§1.3: each MUST is followed by its own tag, tags are unique, each tag has a test here."""
    text = _normative_text()
    tokens = sorted(
        [(m.start(), "MUST") for m in MUST.finditer(text)]
        + [(m.start(), m.group(1)) for m in TAG.finditer(text)]
    )
    kinds = [kind for _, kind in tokens]
    # Strict alternation MUST, tag, MUST, tag, ...: one tag per requirement.
    assert kinds[0::2] == ["MUST"] * len(kinds[0::2]), "a MUST lacks its tag (or has two)"
    tags = kinds[1::2]
    assert "MUST" not in tags and len(kinds) % 2 == 0, "a MUST lacks its tag (or has two)"
    assert len(tags) == len(set(tags)), "a requirement tag is used twice"
    source = Path(__file__).read_text(encoding="utf-8")
    tested = set(re.findall(r'"""§(\d+(?:\.\d+)*-\d+)\b', source))
    missing = [tag for tag in tags if tag not in tested]
    assert not missing, f"requirements without a conformance test: {missing}"
    unknown = sorted(tested - set(tags))
    assert not unknown, f"tests name requirements the spec does not have: {unknown}"


def test_requirement_index_matches_tags_and_tests() -> None:
    """§1.3: Appendix A lists every tag once, in text order, with tests that exist here."""
    text = SPEC.read_text(encoding="utf-8")
    index = text.split("<!-- BEGIN REQUIREMENT INDEX -->", 1)[1].split(
        "<!-- END REQUIREMENT INDEX -->", 1
    )[0]
    rows = re.findall(r"^\| §(\S+) \|.*\|(.*)\|$", index, flags=re.MULTILINE)
    assert [tag for tag, _ in rows] == _spec_tags()
    defined = set(
        re.findall(
            r"^def (test_\w+)\(", Path(__file__).read_text(encoding="utf-8"), flags=re.MULTILINE
        )
    )
    for tag, cell in rows:
        names = re.findall(r"`(test_\w+)`", cell)
        assert names and set(names) <= defined, (tag, names)


# --- datagram crafting ------------------------------------------------------------


def _packet(ptype: PacketType = PacketType.DATA, **fields: Any) -> Packet:
    base = Packet(ptype, 0, 0x0123456789ABCDEF, 7, 9, 100, 0, (), b"")
    return base._replace(**fields)


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def _raw(
    *,
    version: int = 1,
    ptype: int = 3,
    flags: int = 0,
    sack: Iterable[tuple[int, int]] = (),
    cid: int = 1,
    seq: int = 0,
    ack: int = 0,
    window: int = 10,
    fragments_left: int = 0,
    payload: bytes = b"",
    sack_count: int | None = None,
    payload_length: int | None = None,
) -> bytes:
    """Build a datagram by hand, with a valid CRC, from the layout of spec Table 1."""
    blocks = list(sack)
    header = struct.pack(
        ">BBBBQIIHIH",
        version,
        ptype,
        flags,
        len(blocks) if sack_count is None else sack_count,
        cid,
        seq,
        ack,
        window,
        fragments_left,
        len(payload) if payload_length is None else payload_length,
    )
    body = header + b"".join(struct.pack(">II", s, e) for s, e in blocks) + payload
    return _with_crc(body)


def _decode_error(data: bytes) -> str:
    with pytest.raises(BadPacket) as info:
        wire.decode(data)
    return str(info.value)


# --- engines under test -------------------------------------------------------------

CLIENT_ID = 0xC11E_0000_0000_0001
"""The scripted client's connection id (tests of a server engine)."""
SERVER_ID = 0x5E4E_0000_0000_0002
"""The scripted server's connection id (tests of a client engine)."""


def _engine(
    config: Config | None, *, is_client: bool, seed: int = 7, isn: int | None = None
) -> Conn:
    return SansIOConnection(
        config, is_client=is_client, rng=random.Random(seed), initial_sequence=isn
    )


def _decode_all(datagrams: Iterable[bytes]) -> list[Packet]:
    return [wire.decode(d) for d in datagrams]


def _drain_events(conn: Conn) -> list[Event]:
    events: list[Event] = []
    for _ in range(100_000):
        event = conn.next_event()
        if event is None:
            return events
        events.append(event)
    raise AssertionError("event queue does not drain")


def _state(conn: Conn) -> ConnectionState:
    """The state, read through a call so a type checker does not narrow it across events."""
    return conn.state


def _received(data: bytes) -> MessageReceived:
    return MessageReceived(data)


def _snapshot(conn: Conn) -> tuple[ConnectionState, int, float | None, int]:
    stats = conn.stats
    return (conn.state, stats.datagrams_dropped, conn.get_timer(), stats.local_window)


def _assert_dropped_without_effect(
    conn: Conn, before: tuple[ConnectionState, int, float | None, int], now: float
) -> None:
    """Section 1.4 "drop": counted, and no state change, event or reply."""
    state, dropped, timer, window = before
    assert conn.stats.datagrams_dropped == dropped + 1
    assert conn.state == state
    assert conn.get_timer() == timer
    assert conn.stats.local_window == window
    assert conn.datagrams_to_send(now) == []
    assert conn.next_event() is None


class _Peer:
    """A scripted remote endpoint: crafts datagrams for one engine under test.

    Tracks the two sequence spaces as plain integers: ``next_seq`` is the
    peer's next sequence number, ``expected`` the engine's next one (what the
    peer acknowledges).
    """

    def __init__(self, conn: Conn, peer_id: int, next_seq: int, expected: int) -> None:
        self.conn = conn
        self.peer_id = peer_id
        self.next_seq = next_seq
        self.expected = expected
        self.now = 0.0
        self.window = 1000

    @property
    def engine_id(self) -> int:
        cid = self.conn.local_connection_id
        assert cid is not None
        return cid

    def craft(
        self,
        ptype: PacketType,
        *,
        seq: int | None = None,
        ack: int | None = None,
        flags: int = 0,
        window: int | None = None,
        fragments_left: int = 0,
        sack: Iterable[tuple[int, int]] = (),
        payload: bytes = b"",
        cid: int | None = None,
    ) -> bytes:
        """One datagram from the peer; DATA/FIN with ``seq=None`` take the next number."""
        if seq is None:
            seq = self.next_seq
            if ptype in (PacketType.DATA, PacketType.FIN):
                self.next_seq += 1
        return wire.encode(
            Packet(
                ptype,
                flags,
                self.engine_id if cid is None else cid,
                wire.wire_seq(seq),
                wire.wire_seq(self.expected if ack is None else ack),
                self.window if window is None else window,
                fragments_left,
                tuple((wire.wire_seq(a), wire.wire_seq(b)) for a, b in sack),
                payload,
            )
        )

    def feed(self, *datagrams: bytes) -> None:
        for data in datagrams:
            self.conn.receive_datagram(data, self.now)

    def output(self) -> list[Packet]:
        """Everything the engine sends now, decoded."""
        return _decode_all(self.conn.datagrams_to_send(self.now))

    def fire(self) -> list[Packet]:
        """Advance the clock to the engine's timer, fire it, return its output."""
        deadline = self.conn.get_timer()
        assert deadline is not None, "the engine has no timer running"
        self.now = max(self.now, deadline)
        self.conn.handle_timer(self.now)
        return self.output()

    def full(self, wire_value: int, expected: int | None = None) -> int:
        return wire.expand_seq(wire_value, self.expected if expected is None else expected)


def _server_under_test(
    config: Config | None = None, *, client_isn: int = 1000, server_isn: int | None = None
) -> _Peer:
    """An ESTABLISHED server engine and the scripted client talking to it."""
    conn = _engine(config, is_client=False, isn=server_isn)
    mds = (config or Config()).max_datagram_size
    syn = wire.encode(
        Packet(
            PacketType.SYN,
            0,
            0,
            client_isn,
            0,
            1000,
            0,
            (),
            wire.encode_handshake(wire.Handshake(CLIENT_ID, mds)),
        )
    )
    conn.receive_datagram(syn, 0.0)
    (syn_ack,) = _decode_all(conn.datagrams_to_send(0.0))
    assert syn_ack.type is PacketType.SYN_ACK
    isn = syn_ack.seq if server_isn is None else server_isn
    peer = _Peer(conn, CLIENT_ID, client_isn + 1, isn + 1)
    peer.feed(peer.craft(PacketType.ACK))
    assert conn.state is ConnectionState.ESTABLISHED
    _drain_events(conn)
    assert peer.output() == []
    return peer


def _client_under_test(
    config: Config | None = None,
    *,
    server_isn: int = 5000,
    client_isn: int | None = None,
    peer_mds: int = 1400,
) -> _Peer:
    """An ESTABLISHED client engine and the scripted server it talks to."""
    conn = _engine(config, is_client=True, isn=client_isn)
    conn.connect(0.0)
    (syn,) = _decode_all(conn.datagrams_to_send(0.0))
    assert syn.type is PacketType.SYN
    peer = _Peer(conn, SERVER_ID, server_isn, syn.seq + 1)
    hs = wire.decode_handshake(syn.payload)
    syn_ack = wire.encode(
        Packet(
            PacketType.SYN_ACK,
            0,
            hs.source_connection_id,
            server_isn,
            wire.wire_seq(syn.seq + 1),
            1000,
            0,
            (),
            wire.encode_handshake(wire.Handshake(SERVER_ID, peer_mds)),
        )
    )
    peer.next_seq = server_isn + 1
    conn.receive_datagram(syn_ack, 0.0)
    assert conn.state is ConnectionState.ESTABLISHED
    assert _drain_events(conn) == [Connected()]
    peer.output()  # the ack of the SYN_ACK
    return peer


# --- §3 wire format -----------------------------------------------------------------


def test_s3_1_field_offsets_sizes_byte_order() -> None:
    """§3.1-1: every field sits at the offset, size and byte order of Table 1."""
    packet = _packet(
        PacketType.DATA,
        flags=1,
        connection_id=0x0102030405060708,
        seq=0x11223344,
        ack=0x55667788,
        window=0x99AA,
        fragments_left=0xBBCCDDEE,
        sack=((0xA0A1A2A3, 0xB0B1B2B3),),
        payload=b"xyz",
    )
    data = wire.encode(packet)
    expected_body = (
        bytes([1, 3, 1, 1])
        + bytes.fromhex("0102030405060708")
        + bytes.fromhex("11223344")
        + bytes.fromhex("55667788")
        + bytes.fromhex("99AA")
        + bytes.fromhex("BBCCDDEE")
        + bytes.fromhex("0003")
        + bytes.fromhex("A0A1A2A3B0B1B2B3")
        + b"xyz"
    )
    assert data == _with_crc(expected_body)
    assert len(data) == wire.OVERHEAD + wire.SACK_SIZE + 3
    # The reference schema agrees byte for byte (Section 3.5).
    assert wire.reference_encode(packet) == data


def test_s3_2_sender_never_sets_reserved_flags() -> None:
    """§3.2-1: a sender sends reserved flag bits as zero (the encoder refuses to set them)."""
    for bit in range(1, 8):
        with pytest.raises(ValueError):
            wire.encode(_packet(flags=1 << bit))
    # And every datagram of a whole conversation has them clear.
    pair = ConnectionPair()
    pair.handshake()
    pair.client.send(b"x" * 5000)
    pair.server.send(b"y")
    pair.client.close(pair.now)
    assert pair.run(stop=lambda: pair.client.is_closed and pair.server.is_closed)
    assert pair.sent, "the conversation produced datagrams"
    assert all(data[2] & 0xFE == 0 for _, data in pair.sent)


def test_s3_2_receiver_drops_reserved_flags() -> None:
    """§3.2-2: a datagram with any reserved flag bit set is dropped and counted."""
    for bit in range(1, 8):
        assert "reserved flag" in _decode_error(_raw(flags=1 << bit))
    peer = _server_under_test()
    conn = peer.conn
    good = peer.craft(PacketType.DATA, payload=b"hello", flags=Flags.ACK_NOW)
    for bit in range(1, 8):
        bad = bytearray(good[:-4])
        bad[2] |= 1 << bit
        before = _snapshot(conn)
        peer.feed(_with_crc(bytes(bad)))
        _assert_dropped_without_effect(conn, before, peer.now)
    peer.feed(good)  # the same datagram with the reserved bits clear is accepted
    assert _drain_events(conn) == [_received(b"hello")]


def test_s3_3_too_many_sack_blocks_dropped() -> None:
    """§3.3-1: a datagram with more than 32 SACK blocks is dropped."""
    blocks = [(10 * i + 1, 10 * i + 2) for i in range(33)]
    assert "SACK" in _decode_error(_raw(ptype=4, sack=blocks))
    assert len(wire.decode(_raw(ptype=4, sack=blocks[:32])).sack) == 32


def test_s3_4_type_specific_payload_rules() -> None:
    """§3.4-1: ACK/PING/FIN/RESET with payload or fragments_left, bad handshake length: dropped."""
    for ptype in (4, 5, 6, 7):
        _decode_error(_raw(ptype=ptype, payload=b"x"))
        _decode_error(_raw(ptype=ptype, fragments_left=1))
        assert wire.decode(_raw(ptype=ptype)).type == ptype
    for ptype in (1, 2):
        _decode_error(_raw(ptype=ptype, payload=b"x" * 9))
        _decode_error(_raw(ptype=ptype, payload=b"x" * 11))
        handshake = wire.encode_handshake(wire.Handshake(5, 1400))
        assert wire.decode(_raw(ptype=ptype, payload=handshake)).payload == handshake


def test_s3_6_validation_order() -> None:
    """§3.6-1: length, CRC, version, type, flags, length fields, SACK count, payload rules."""
    assert "shorter" in _decode_error(b"\x01" * 31)
    # Each datagram below fails its check *and every later one*: the error names the earliest.
    bad_crc = bytearray(_raw(version=9, ptype=99, flags=0xFF, payload_length=7))
    bad_crc[-1] ^= 1
    assert "checksum" in _decode_error(bytes(bad_crc))
    assert "version" in _decode_error(_raw(version=9, ptype=99, flags=0xFF, payload_length=7))
    assert "type" in _decode_error(_raw(ptype=99, flags=0xFF, payload_length=7))
    assert "reserved flag" in _decode_error(_raw(flags=0xFF, payload_length=7))
    assert "length" in _decode_error(_raw(ptype=4, sack_count=40, payload_length=7))
    assert "SACK" in _decode_error(
        _raw(ptype=4, sack=[(1, 2)] * 33, payload=b"x")  # 33 blocks and a payload on an ACK
    )
    assert "payload" in _decode_error(_raw(ptype=4, payload=b"x"))


@given(st.binary(max_size=200))
def test_s3_6_decoder_raises_only_badpacket(data: bytes) -> None:
    """§3.6-2: whatever the input, decoding yields a packet or raises BadPacket, nothing else."""
    try:
        packet = wire.decode(data)
    except BadPacket:
        return
    assert isinstance(packet, Packet)


@given(st.binary(min_size=32, max_size=120), st.integers(min_value=0, max_value=200))
def test_s3_6_decoder_raises_only_badpacket_on_checksummed_garbage(data: bytes, cut: int) -> None:
    """§3.6-2: same, for garbage that passes the CRC (so the field checks are exercised)."""
    body = data[: max(28, len(data) - cut)]
    with contextlib.suppress(BadPacket):
        wire.decode(_with_crc(body))
    with contextlib.suppress(BadPacket):
        wire.reference_decode(_with_crc(body))


# --- §7.3 expansion (pure function) -------------------------------------------------


@given(
    st.integers(min_value=0, max_value=(1 << 62)),
    st.integers(min_value=-(1 << 31) + 1, max_value=(1 << 31) - 1),
)
def test_s7_3_expand_seq_nearest(expected: int, delta: int) -> None:
    """§7.3-2: expansion returns the value congruent mod 2^32 nearest to the expected one."""
    actual = expected + delta
    if actual < 0:
        return
    assert wire.expand_seq(wire.wire_seq(actual), expected) == actual


# --- §14 checksum -------------------------------------------------------------------


def test_s14_checksum_is_zlib_crc32_of_preceding_bytes() -> None:
    """§14-1: the last 4 bytes are zlib.crc32 of all before them, big-endian."""
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32/ISO-HDLC check value
    for packet in (
        _packet(PacketType.ACK, sack=((20, 25), (30, 31))),
        _packet(PacketType.DATA, payload=b"payload" * 10),
        _packet(PacketType.SYN, payload=wire.encode_handshake(wire.Handshake(9, 1200))),
    ):
        data = wire.encode(packet)
        assert data[-4:] == zlib.crc32(data[:-4]).to_bytes(4, "big")


def test_s14_checksum_mismatch_dropped() -> None:
    """§14-2: flipping any single bit of a datagram makes the receiver drop it."""
    peer = _server_under_test()
    conn = peer.conn
    good = peer.craft(PacketType.DATA, payload=b"abc")
    for index in range(len(good)):
        for bit in (0, 7):
            corrupted = bytearray(good)
            corrupted[index] ^= 1 << bit
            assert "checksum" in _decode_error(bytes(corrupted))
            before = _snapshot(conn)
            peer.feed(bytes(corrupted))
            _assert_dropped_without_effect(conn, before, peer.now)
    peer.feed(good)
    assert _drain_events(conn) == [_received(b"abc")]


# CORE-DEPENDENT TESTS BELOW


# --- §3.6 drops at the engine ---------------------------------------------------------


def _invalid_datagrams(cid: int) -> list[bytes]:
    """One datagram per validation check of Section 3.6, each failing only that check."""
    good = _raw(ptype=4, cid=cid)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0x55
    return [
        good[:31],  # 1. length
        bytes(bad_crc),  # 2. checksum
        _raw(ptype=4, cid=cid, version=2),  # 3. version
        _raw(ptype=0, cid=cid),  # 4. type
        _raw(ptype=4, cid=cid, flags=0x02),  # 5. reserved flags
        _raw(ptype=4, cid=cid, payload_length=1),  # 6. length fields
        _raw(ptype=4, cid=cid, sack=[(1, 2)] * 33),  # 7. SACK count
        _raw(ptype=5, cid=cid, payload=b"!"),  # 8. payload rules
    ]


def test_s3_6_invalid_datagram_has_no_effect() -> None:
    """§3.6-3: a datagram failing validation changes nothing, emits nothing, sends nothing."""
    for peer in (_server_under_test(), _client_under_test()):
        conn = peer.conn
        conn.send(b"pending")  # something in flight, so timers are running
        peer.output()
        for data in _invalid_datagrams(peer.engine_id):
            before = _snapshot(conn)
            peer.feed(data)
            _assert_dropped_without_effect(conn, before, peer.now)


class _Fuzzed(NamedTuple):
    """A plausible packet relative to the scripted peer's sequence numbers."""

    ptype: int
    flags: int
    seq_delta: int
    ack_delta: int
    window: int
    fragments_left: int
    sack: list[tuple[int, int]]
    payload: bytes
    right_cid: bool


_FUZZED = st.builds(
    _Fuzzed,
    ptype=st.integers(min_value=1, max_value=7),
    flags=st.sampled_from([0, 1]),
    seq_delta=st.integers(min_value=-3, max_value=2000),
    ack_delta=st.integers(min_value=-3, max_value=5),
    window=st.integers(min_value=0, max_value=0xFFFF),
    fragments_left=st.integers(min_value=0, max_value=3),
    sack=st.lists(st.tuples(st.integers(-5, 40), st.integers(-5, 40)), max_size=4),
    payload=st.binary(max_size=30),
    right_cid=st.booleans(),
)


@given(st.lists(st.one_of(st.binary(max_size=80), _FUZZED), max_size=25), st.booleans())
def test_s3_6_engine_never_raises_on_network_input(
    inputs: list[bytes | _Fuzzed], client: bool
) -> None:
    """§3.6-4: arbitrary datagrams, garbage or plausible, never make the engine raise."""
    peer = _client_under_test() if client else _server_under_test()
    conn = peer.conn
    conn.send(b"m" * 3000)
    peer.output()
    for item in inputs:
        if isinstance(item, bytes):
            peer.feed(item)
        else:
            ptype = PacketType(item.ptype)
            payload = item.payload
            if ptype in (PacketType.SYN, PacketType.SYN_ACK):
                payload = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
            elif ptype is not PacketType.DATA:
                payload = b""
            base = peer.expected
            peer.feed(
                peer.craft(
                    ptype,
                    seq=peer.next_seq + item.seq_delta,
                    ack=base + item.ack_delta,
                    flags=item.flags,
                    window=item.window,
                    fragments_left=item.fragments_left if ptype is PacketType.DATA else 0,
                    sack=[(base + start, base + end) for start, end in item.sack],
                    payload=payload,
                    cid=None if item.right_cid else 0x1234,
                )
            )
        peer.output()
        _drain_events(conn)
        peer.now += 0.05  # virtual time, so timers fire in between
        timer = conn.get_timer()
        if timer is not None and timer <= peer.now:
            conn.handle_timer(peer.now)


# --- §4 packet types ------------------------------------------------------------------


def test_s4_non_seq_packets_carry_next_seq() -> None:
    """§4-1: ACK, PING and RESET carry the next sequence number and consume none."""
    peer = _client_under_test(Config(keepalive_interval=1.0))
    conn = peer.conn
    conn.send(b"first")
    (data,) = peer.output()
    first = peer.full(data.seq, peer.expected)
    assert first == peer.expected  # the first DATA takes ISN + 1
    peer.expected = first + 1
    peer.feed(peer.craft(PacketType.PING))  # acks the DATA and asks for an immediate ACK
    (ack,) = peer.output()
    assert ack.type is PacketType.ACK and ack.seq == wire.wire_seq(first + 1)
    ping = [p for p in peer.fire() if p.type is PacketType.PING]  # keepalive after silence
    assert ping and ping[0].seq == wire.wire_seq(first + 1)
    conn.send(b"second")
    (data2,) = peer.output()
    assert data2.seq == wire.wire_seq(first + 1)  # nothing was consumed by ACK or PING
    conn.abort("test")
    (reset,) = peer.output()
    assert reset.type is PacketType.RESET and reset.seq == wire.wire_seq(first + 2)


# --- §5 state machine ------------------------------------------------------------------


def test_s5_packet_not_allowed_in_state_dropped() -> None:
    """§5-1: a packet type the current state does not accept is dropped and counted."""
    # DATA reaching a server that has not seen a SYN (it could only guess the id).
    listener = _engine(None, is_client=False)
    cid = listener.local_connection_id
    before = _snapshot(listener)
    listener.receive_datagram(_raw(ptype=3, cid=cid, payload=b"x"), 0.0)
    _assert_dropped_without_effect(listener, before, 0.0)
    assert listener.state is ConnectionState.LISTEN
    # DATA reaching a client still waiting for its SYN_ACK.
    client = _engine(None, is_client=True)
    client.connect(0.0)
    client.datagrams_to_send(0.0)
    before = _snapshot(client)
    client.receive_datagram(_raw(ptype=3, cid=client.local_connection_id, payload=b"x"), 0.0)
    _assert_dropped_without_effect(client, before, 0.0)
    # A SYN_ACK reaching an established server.
    peer = _server_under_test()
    hs = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    before = _snapshot(peer.conn)
    peer.feed(peer.craft(PacketType.SYN_ACK, payload=hs, seq=peer.next_seq - 1))
    _assert_dropped_without_effect(peer.conn, before, peer.now)
    # Anything reaching a connection that has ended.
    peer.conn.abort("over")
    peer.output()
    dropped = peer.conn.stats.datagrams_dropped
    peer.feed(peer.craft(PacketType.DATA, payload=b"late"))
    assert peer.conn.stats.datagrams_dropped == dropped + 1
    assert peer.output() == []


# --- §6 handshake, close, reset ---------------------------------------------------------


class _ZeroFirst(random.Random):
    """A random source whose first 64-bit draw is 0 (the forbidden connection id)."""

    def __init__(self) -> None:
        super().__init__(11)
        self.zero_given = False

    def getrandbits(self, k: int) -> int:
        if k == 64 and not self.zero_given:
            self.zero_given = True
            return 0
        return super().getrandbits(k)


def test_s6_1_connection_id_never_zero() -> None:
    """§6.1-1: a connection id of 0 is never used, even when the random source yields it."""
    for is_client in (True, False):
        rng = _ZeroFirst()
        conn = SansIOConnection(is_client=is_client, rng=rng)
        assert rng.zero_given
        assert conn.local_connection_id not in (0, None)
        assert 0 < conn.local_connection_id < 1 << 64


def test_s6_1_syn_layout() -> None:
    """§6.1-2: a SYN has connection_id 0 and the client's own id in its handshake block."""
    config = Config(max_datagram_size=1200)
    conn = _engine(config, is_client=True, isn=4242)
    conn.connect(0.0)
    (syn,) = _decode_all(conn.datagrams_to_send(0.0))
    assert syn.type is PacketType.SYN
    assert syn.connection_id == 0
    assert syn.seq == 4242
    assert wire.decode_handshake(syn.payload) == wire.Handshake(conn.local_connection_id, 1200)


def test_s6_1_syn_ack_layout() -> None:
    """§6.1-3: a SYN_ACK carries the client's id in its header and the server's in its block."""
    conn = _engine(Config(max_datagram_size=1000), is_client=False, isn=900)
    syn = _raw(
        ptype=1, cid=0, seq=77, payload=wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    )
    conn.receive_datagram(syn, 0.0)
    (syn_ack,) = _decode_all(conn.datagrams_to_send(0.0))
    assert syn_ack.type is PacketType.SYN_ACK
    assert syn_ack.connection_id == CLIENT_ID
    assert syn_ack.seq == 900
    assert wire.decode_handshake(syn_ack.payload) == wire.Handshake(conn.local_connection_id, 1000)
    assert conn.remote_connection_id == CLIENT_ID


def test_s6_1_foreign_connection_id_dropped() -> None:
    """§6.1-4: a non-SYN packet whose connection id is not ours is dropped, whatever its type."""
    for peer in (_server_under_test(), _client_under_test()):
        conn = peer.conn
        conn.send(b"in flight")
        peer.output()
        for ptype in (
            PacketType.DATA,
            PacketType.ACK,
            PacketType.PING,
            PacketType.FIN,
            PacketType.RESET,
        ):
            for cid in (0, peer.engine_id ^ 1, peer.peer_id):
                payload = b"forged" if ptype is PacketType.DATA else b""
                before = _snapshot(conn)
                peer.feed(peer.craft(ptype, cid=cid, payload=payload, seq=peer.next_seq))
                _assert_dropped_without_effect(conn, before, peer.now)
        assert conn.state is ConnectionState.ESTABLISHED


def test_s6_1_effective_datagram_size() -> None:
    """§6.1-5: once the peer's size is known, no datagram exceeds min(ours, theirs)."""
    # Client with the default 1400, peer announcing 200.
    peer = _client_under_test(peer_mds=200)
    peer.conn.send(b"a" * 5000)
    peer.conn.send(b"")
    sizes = [len(d) for d in peer.conn.datagrams_to_send(0.0)]
    assert sizes and max(sizes) <= 200
    # Server with the default 1400, SYN announcing 300.
    syn = _raw(
        ptype=1, cid=0, seq=10, payload=wire.encode_handshake(wire.Handshake(CLIENT_ID, 300))
    )
    small = _engine(None, is_client=False, isn=500)
    small.receive_datagram(syn, 0.0)
    small.datagrams_to_send(0.0)
    small.send(b"d" * 5000)
    small.receive_datagram(_raw(ptype=4, cid=small.local_connection_id, seq=11, ack=501), 0.0)
    assert small.state is ConnectionState.ESTABLISHED
    out = small.datagrams_to_send(0.0)
    assert out and max(len(d) for d in out) <= 300


def test_s6_2_syn_ack_acknowledges_syn() -> None:
    """§6.2-1: the SYN_ACK's ack field is the client's ISN + 1 (also across the 2^32 wrap)."""
    for isn in (0, 12345, (1 << 32) - 1):
        conn = _engine(None, is_client=False)
        syn = _raw(ptype=1, cid=0, seq=isn, payload=wire.encode_handshake(wire.Handshake(5, 1400)))
        conn.receive_datagram(syn, 0.0)
        (syn_ack,) = _decode_all(conn.datagrams_to_send(0.0))
        assert syn_ack.ack == wire.wire_seq(isn + 1)


def test_s6_2_server_connected_only_when_syn_ack_acknowledged() -> None:
    """§6.2-2: the server is connected on the first valid packet acking ISNs + 1, not before."""
    for ptype, payload in ((PacketType.ACK, b""), (PacketType.DATA, b"hi"), (PacketType.PING, b"")):
        conn = _engine(None, is_client=False, isn=9000)
        syn = _raw(ptype=1, cid=0, seq=50, payload=wire.encode_handshake(wire.Handshake(5, 1400)))
        conn.receive_datagram(syn, 0.0)
        conn.datagrams_to_send(0.0)
        cid = conn.local_connection_id
        for wrong_ack in (9000, 8999, 9002):  # does not acknowledge exactly the SYN_ACK
            conn.receive_datagram(
                _raw(ptype=ptype, cid=cid, seq=51, ack=wrong_ack, payload=payload), 0.0
            )
            assert conn.state is ConnectionState.SYN_RECEIVED
            assert conn.next_event() is None
        conn.receive_datagram(
            _raw(ptype=ptype, cid=cid ^ 1, seq=51, ack=9001, payload=payload), 0.0
        )
        assert conn.state is ConnectionState.SYN_RECEIVED
        conn.receive_datagram(_raw(ptype=ptype, cid=cid, seq=51, ack=9001, payload=payload), 0.0)
        assert _state(conn) is ConnectionState.ESTABLISHED
        events = _drain_events(conn)
        assert events[0] == Connected()
        if ptype is PacketType.DATA:
            assert events[1:] == [_received(b"hi")]


def test_s6_2_duplicate_syn_gets_same_syn_ack() -> None:
    """§6.2-3: a repeated SYN from the same client is answered with the same SYN_ACK."""
    conn = _engine(None, is_client=False)
    syn = _raw(ptype=1, cid=0, seq=50, payload=wire.encode_handshake(wire.Handshake(5, 1400)))
    conn.receive_datagram(syn, 0.0)
    (first,) = _decode_all(conn.datagrams_to_send(0.0))
    conn.receive_datagram(syn, 0.05)
    (again,) = _decode_all(conn.datagrams_to_send(0.05))
    assert again.type is PacketType.SYN_ACK
    assert (again.connection_id, again.seq, again.ack, again.payload) == (
        first.connection_id,
        first.seq,
        first.ack,
        first.payload,
    )
    assert conn.state is ConnectionState.SYN_RECEIVED
    assert conn.next_event() is None


def test_s6_2_messages_sent_before_connected_are_delivered() -> None:
    """§6.2-4: messages passed to send() before the handshake are queued and delivered in order."""
    pair = ConnectionPair()
    ids = [pair.client.send(b"early %d" % i) for i in range(3)]
    assert ids == [0, 1, 2]
    pair.server.send(b"server early")
    pair.client.connect(pair.now)
    assert pair.run(
        stop=lambda: len(pair.events["server"]) >= 4 and len(pair.events["client"]) >= 2
    )
    received = [e for e in pair.events["server"] if isinstance(e, MessageReceived)]
    assert received == [_received(b"early 0"), _received(b"early 1"), _received(b"early 2")]
    assert _received(b"server early") in pair.events["client"]


def test_s6_3_send_after_close_raises() -> None:
    """§6.3-1: send() after close() raises LocalProtocolError (in every state it can be called)."""
    peer = _client_under_test()
    peer.conn.close(0.0)
    with pytest.raises(LocalProtocolError):
        peer.conn.send(b"too late")
    handshaking = _engine(None, is_client=True)
    handshaking.connect(0.0)
    handshaking.close(0.0)
    with pytest.raises(LocalProtocolError):
        handshaking.send(b"too late")


def test_s6_3_fin_follows_last_data() -> None:
    """§6.3-2: the FIN goes after every queued fragment, with the next sequence number."""
    config = Config(max_datagram_size=200, initial_window=2, keepalive_interval=None)
    peer = _client_under_test(config)
    conn = peer.conn
    conn.send(b"x" * 500)  # three fragments
    conn.send(b"y")
    conn.close(0.0)
    seen: list[Packet] = []
    for _ in range(20):
        out = peer.output()
        seen += out
        if any(p.type is PacketType.FIN for p in out):
            break
        top = max((peer.full(p.seq) for p in out if p.type is PacketType.DATA), default=None)
        if top is not None:
            peer.feed(peer.craft(PacketType.ACK, ack=top + 1))
    data = [peer.full(p.seq) for p in seen if p.type is PacketType.DATA]
    fins = [peer.full(p.seq) for p in seen if p.type is PacketType.FIN]
    assert len(data) == 4 and fins == [max(data) + 1]
    assert seen[-1].type is PacketType.FIN


def test_s6_3_peer_closed_after_all_messages() -> None:
    """§6.3-3: PeerClosed comes only after every message sent before the FIN was delivered."""
    peer = _server_under_test()
    conn = peer.conn
    first, second, fin_seq = peer.next_seq, peer.next_seq + 1, peer.next_seq + 2
    peer.feed(peer.craft(PacketType.FIN, seq=fin_seq))
    peer.feed(peer.craft(PacketType.DATA, seq=second, payload=b"two"))
    assert [e for e in _drain_events(conn)] == []
    peer.feed(peer.craft(PacketType.DATA, seq=first, payload=b"one"))
    assert _drain_events(conn) == [_received(b"one"), _received(b"two"), PeerClosed()]


def test_s6_3_exactly_one_closed_event() -> None:
    """§6.3-4: a graceful close (either side first, or both) reports Closed exactly once."""
    for closers in (("client",), ("server",), ("client", "server")):
        pair = ConnectionPair(Config(keepalive_interval=None))
        pair.handshake()
        pair.client.send(b"c" * 3000)
        pair.server.send(b"s" * 3000)
        for name in closers:
            getattr(pair, name).close(pair.now)
        assert pair.run(stop=pair.both_closed)
        for name in ("client", "server"):
            events = pair.events[name]
            assert events.count(Closed()) == 1, (closers, name, events)
            assert events[-1] == Closed()
            assert not any(isinstance(e, Failed) for e in events)
            assert PeerClosed() in events
            assert events.index(PeerClosed()) < events.index(Closed())


def test_s6_3_terminal_connection_is_silent() -> None:
    """§6.3-5: in CLOSED or FAILED, get_timer() is None and datagrams_to_send() is empty."""
    pair = ConnectionPair(Config(keepalive_interval=None))
    pair.handshake()
    pair.client.send(b"bye")
    pair.client.close(pair.now)
    assert pair.run(
        stop=lambda: (
            pair.client.state is ConnectionState.CLOSED
            and pair.server.state is ConnectionState.CLOSED
        )
    )
    for conn in (pair.client, pair.server):
        assert conn.get_timer() is None
        assert conn.datagrams_to_send(pair.now + 100) == []
    # Failed through RESET, give-up and abort: the RESET of abort() goes out once, then silence.
    peer = _client_under_test()
    peer.conn.send(b"x")
    peer.output()
    peer.feed(peer.craft(PacketType.RESET))
    assert peer.conn.state is ConnectionState.FAILED
    assert peer.conn.get_timer() is None and peer.output() == []
    aborted = _client_under_test()
    aborted.conn.abort("local")
    assert [p.type for p in aborted.output()] == [PacketType.RESET]
    assert aborted.conn.get_timer() is None and aborted.output() == []


def test_s6_4_reset_fails_with_undelivered() -> None:
    """§6.4-1: a RESET with our id fails the connection: "reset by peer", undelivered listed."""
    peer = _client_under_test()
    conn = peer.conn
    conn.send(b"a")
    conn.send(b"b")
    peer.output()
    peer.feed(peer.craft(PacketType.RESET, cid=peer.engine_id ^ 0xFF))
    assert conn.state is ConnectionState.ESTABLISHED
    peer.feed(peer.craft(PacketType.RESET))
    assert _drain_events(conn) == [Failed("reset by peer", (0, 1), FailureKind.RESET_BY_PEER)]
    assert _state(conn) is ConnectionState.FAILED
    assert peer.output() == []  # no RESET in reply to a RESET


def test_s6_5_failed_lists_every_unacknowledged_message() -> None:
    """§6.5-1: Failed lists acknowledged-never, in flight and never-sent messages, in order."""
    # Handshake never answered: every message, none ever transmitted.
    conn = _engine(Config.textbook(), is_client=True)
    for i in range(3):
        conn.send(b"%d" % i)
    conn.connect(0.0)
    now = 0.0
    for _ in range(20):
        conn.datagrams_to_send(now)
        timer = conn.get_timer()
        if timer is None:
            break
        now = timer
        conn.handle_timer(now)
    events = _drain_events(conn)
    failed = [e for e in events if isinstance(e, Failed)]
    assert len(failed) == 1 and failed[0].undelivered == (0, 1, 2)
    # Established, window of 2: one acknowledged, one in flight, the rest never sent.
    peer = _client_under_test()
    peer.feed(peer.craft(PacketType.ACK, window=2))
    for i in range(5):
        peer.conn.send(b"m%d" % i)
    sent = peer.output()
    assert len(sent) == 2
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1, window=1))
    assert _drain_events(peer.conn) == [MessageAcknowledged(0)]
    peer.conn.abort("enough")
    assert _drain_events(peer.conn) == [Failed("enough", (1, 2, 3, 4), FailureKind.ABORTED)]


# --- §17 security ---------------------------------------------------------------------------


def test_s17_1_default_random_source_is_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    """§17.1-1: without an injected rng, ids and ISNs come from random.SystemRandom."""
    draws: list[int] = []

    class Recording(random.SystemRandom):
        def getrandbits(self, k: int) -> int:
            value = super().getrandbits(k)
            draws.append(value)
            return value

    monkeypatch.setattr(random, "SystemRandom", Recording)
    conn = SansIOConnection(is_client=True)
    conn.connect(0.0)
    (syn,) = _decode_all(conn.datagrams_to_send(0.0))
    assert conn.local_connection_id in draws
    assert syn.seq in draws


# --- §7 sequence space ------------------------------------------------------------------


def test_s7_2_consecutive_numbering_and_reuse_on_retransmission() -> None:
    """§7.2-1: DATA/FIN numbered consecutively from ISN + 1; a retransmission reuses its number."""
    config = Config(max_datagram_size=200, keepalive_interval=None)
    peer = _client_under_test(config, client_isn=(1 << 32) - 2)
    conn = peer.conn
    for size in (0, 1, 168, 169, 500):
        conn.send(b"z" * size)
    conn.close(0.0)
    first = peer.output()
    seqs = [peer.full(p.seq) for p in first]
    isn = (1 << 32) - 2
    assert seqs == list(range(isn + 1, isn + 1 + len(first)))
    assert [p.type for p in first][-1] is PacketType.FIN
    # The first timer is the tail-loss probe (the newest packet), the next the RTO
    # (the oldest): either way a packet goes out again under its original number.
    originals = {p.seq: p for p in first}
    resent = peer.fire() + peer.fire()
    assert {p.seq for p in resent} >= {first[0].seq, first[-1].seq}
    for packet in resent:
        original = originals[packet.seq]
        assert (packet.type, packet.payload, packet.fragments_left) == (
            original.type,
            original.payload,
            original.fragments_left,
        )


def test_s7_3_transfer_across_wraparound() -> None:
    """§7.3-1: data flows correctly both ways while the 32-bit wire numbers wrap."""
    lost_once: set[bytes] = set()

    def lossy(name: str, data: bytes) -> bool:
        # Drop the first copy of every 5th datagram so retransmission and SACK run over the wrap.
        if zlib.crc32(data) % 5 == 0 and data not in lost_once:
            lost_once.add(data)
            return True
        return False

    pair = ConnectionPair(
        Config(max_datagram_size=300, keepalive_interval=None),
        client_initial_sequence=(1 << 32) - 5,
        server_initial_sequence=(1 << 32) - 3,
        drop=lossy,
    )
    pair.handshake()
    messages = [bytes([i]) * (i * 97 % 900) for i in range(40)]
    for message in messages:
        pair.client.send(message)
        pair.server.send(message[::-1])
    assert pair.run(
        stop=lambda: (
            sum(isinstance(e, MessageReceived) for e in pair.events["server"]) == 40
            and sum(isinstance(e, MessageReceived) for e in pair.events["client"]) == 40
        )
    )
    assert [e.data for e in pair.events["server"] if isinstance(e, MessageReceived)] == messages
    assert [e.data for e in pair.events["client"] if isinstance(e, MessageReceived)] == [
        m[::-1] for m in messages
    ]
    wire_seqs = {wire.decode(d).seq for _, d in pair.sent}
    assert min(wire_seqs) < 100 and max(wire_seqs) > (1 << 32) - 10, "the numbers did wrap"
    assert lost_once, "the test exercised loss recovery"


# --- §8 acknowledgements ------------------------------------------------------------------


def test_s8_1_ack_field_is_cumulative_ack() -> None:
    """§8.1-1: every packet after the handshake carries the cumulative ack (ACKs and DATA)."""
    peer = _server_under_test(Config(keepalive_interval=None))
    conn = peer.conn
    base = peer.next_seq
    peer.feed(peer.craft(PacketType.DATA, seq=base, payload=b"0"))
    peer.feed(peer.craft(PacketType.DATA, seq=base + 1, payload=b"1"))
    peer.feed(peer.craft(PacketType.DATA, seq=base + 3, payload=b"3"))  # out of order
    acks = peer.output()
    assert acks and all(p.ack == wire.wire_seq(base + 2) for p in acks)
    conn.send(b"reply")
    (data,) = [p for p in peer.output() if p.type is PacketType.DATA]
    assert data.ack == wire.wire_seq(base + 2)  # piggybacked
    peer.feed(peer.craft(PacketType.DATA, seq=base + 2, payload=b"2"))
    out = peer.output()
    assert out and all(p.ack == wire.wire_seq(base + 4) for p in out)


def test_s8_2_sack_blocks_lowest_first() -> None:
    """§8.2-1: SACK blocks are ascending, disjoint, non-adjacent; the lowest holes are reported."""
    peer = _server_under_test(Config(keepalive_interval=None))
    base = peer.next_seq
    for offset in (5, 3, 1, 6):
        peer.feed(peer.craft(PacketType.DATA, seq=base + offset, payload=b"."))
    (ack,) = peer.output()
    assert [(peer.full(s, base), peer.full(e, base)) for s, e in ack.sack] == [
        (base + 1, base + 2),
        (base + 3, base + 4),
        (base + 5, base + 7),
    ]
    # More holes than blocks fit: the 32 lowest are reported, in order.
    for offset in range(9, 9 + 2 * 40, 2):
        peer.feed(peer.craft(PacketType.DATA, seq=base + offset, payload=b"."))
    ack = [p for p in peer.output() if p.type is PacketType.ACK][-1]
    blocks = [(peer.full(s, base), peer.full(e, base)) for s, e in ack.sack]
    assert len(blocks) == wire.MAX_SACK_BLOCKS
    assert blocks[:3] == [(base + 1, base + 2), (base + 3, base + 4), (base + 5, base + 7)]
    assert all(b[1] < c[0] for b, c in itertools.pairwise(blocks))


def test_s8_2_sack_blocks_above_cumulative_ack() -> None:
    """§8.2-2: every SACK block lies strictly above the cumulative ack of the same packet."""
    peer = _server_under_test(Config(keepalive_interval=None))
    base = peer.next_seq
    order = [4, 2, 7, 0, 1, 9, 3, 5, 6, 8]
    checked = 0
    for offset in order:
        peer.feed(peer.craft(PacketType.DATA, seq=base + offset, payload=b"."))
        for packet in peer.output():
            ack = peer.full(packet.ack, base)
            for start, end in packet.sack:
                assert ack < peer.full(start, base) < peer.full(end, base)
                checked += 1
    assert checked > 0


def _immediate_ack_cases(peer: _Peer) -> dict[str, tuple[list[bytes], int]]:
    """name -> (datagrams to feed, the cumulative ack expected afterwards)."""
    base = peer.next_seq
    return {
        "ACK_NOW flag": (
            [peer.craft(PacketType.DATA, seq=base, payload=b"a", flags=Flags.ACK_NOW)],
            base + 1,
        ),
        "PING": ([peer.craft(PacketType.PING)], base),
        "FIN": ([peer.craft(PacketType.FIN, seq=base)], base + 1),
        "out of order": ([peer.craft(PacketType.DATA, seq=base + 1, payload=b"b")], base),
        "second packet": (
            [
                peer.craft(PacketType.DATA, seq=base, payload=b"a"),
                peer.craft(PacketType.DATA, seq=base + 1, payload=b"b"),
            ],
            base + 2,
        ),
        "duplicate": (
            [
                peer.craft(PacketType.DATA, seq=base, payload=b"a"),
                peer.craft(PacketType.DATA, seq=base, payload=b"a"),
            ],
            base + 1,
        ),
    }


def test_s8_3_immediate_ack_triggers() -> None:
    """§8.3-1: ACK_NOW, PING, FIN, out-of-order, duplicate, 2nd packet: acked with no delay."""
    names = list(_immediate_ack_cases(_server_under_test()))
    for name in names:
        peer = _server_under_test(Config(keepalive_interval=None))
        datagrams, cumulative = _immediate_ack_cases(peer)[name]
        for data in datagrams[:-1]:
            peer.feed(data)
            peer.output()
        peer.feed(datagrams[-1])
        out = peer.output()  # same instant: no timer has run
        # A FIN is answered by our own FIN (we close too), which carries the ack.
        assert any(p.type in (PacketType.ACK, PacketType.FIN) for p in out), name
        assert all(p.ack == wire.wire_seq(cumulative) for p in out), name


def test_s8_3_delayed_ack_bound() -> None:
    """§8.3-2: one in-order DATA is acked after at most max_ack_delay, not at once."""
    for delay in (0.01, 0.2):
        peer = _server_under_test(Config(max_ack_delay=delay, keepalive_interval=None))
        peer.now = 1.0
        base = peer.next_seq
        peer.feed(peer.craft(PacketType.DATA, seq=base, payload=b"a"))
        assert peer.output() == []
        deadline = peer.conn.get_timer()
        assert deadline is not None and 1.0 < deadline <= 1.0 + delay
        (ack,) = peer.fire()
        assert ack.type is PacketType.ACK and ack.ack == wire.wire_seq(base + 1)


def test_s8_4_no_reneging() -> None:
    """§8.4-1: SACKed packets are kept: filling the hole delivers them without a resend."""
    config = Config(receive_window=8, keepalive_interval=None)
    peer = _server_under_test(config)
    conn = peer.conn
    base = peer.next_seq
    for offset in (1, 2, 3, 5, 6, 7):
        peer.feed(peer.craft(PacketType.DATA, seq=base + offset, payload=b"%d" % offset))
    (ack,) = [p for p in peer.output() if p.type is PacketType.ACK][-1:]
    assert ack.sack
    # Pressure: the application does not read, time passes, timers fire.
    for _ in range(3):
        if conn.get_timer() is not None:
            peer.fire()
    peer.feed(peer.craft(PacketType.DATA, seq=base, payload=b"0"))
    peer.feed(peer.craft(PacketType.DATA, seq=base + 4, payload=b"4"))
    assert _drain_events(conn) == [_received(b"%d" % i) for i in range(8)]
    final = peer.output()[-1]
    assert peer.full(final.ack, base) == base + 8


def test_s8_5_forged_acks_dropped() -> None:
    """§8.5-1: an ack of unsent data or a SACK block outside [ack, next seq) drops the packet."""
    # The silence deadline (0.5 s) is the earliest timer, so a packet that wrongly counted as
    # "heard from the peer" would move get_timer() and fail the no-effect check.
    config = Config(peer_timeout=0.5, initial_rto=1.0, min_rto=1.0, keepalive_interval=None)
    peer = _client_under_test(config)
    conn = peer.conn
    conn.send(b"one")
    conn.send(b"two")
    conn.send(b"three")
    peer.output()
    peer.now = 0.3
    nxt = peer.expected + 3  # the client's next sequence number
    una = peer.expected
    forged = [
        peer.craft(PacketType.ACK, ack=nxt + 1),  # acknowledges a packet never sent
        peer.craft(PacketType.ACK, ack=nxt + 1000),
        peer.craft(PacketType.ACK, ack=una, sack=[(una + 1, nxt + 1)]),  # beyond next seq
        peer.craft(PacketType.ACK, ack=una, sack=[(una + 2, una + 1)]),  # reversed
        peer.craft(PacketType.ACK, ack=una, sack=[(una + 1, una + 1)]),  # empty
        peer.craft(PacketType.ACK, ack=una + 1, sack=[(una, una + 2)]),  # below the ack
        peer.craft(PacketType.DATA, payload=b"x", ack=nxt + 1, seq=peer.next_seq),
    ]
    for data in forged:
        before = _snapshot(conn)
        peer.feed(data)
        _assert_dropped_without_effect(conn, before, peer.now)
    assert conn.stats.messages_acked == 0


def test_s8_6_message_acknowledged_once_in_order() -> None:
    """§8.6-1: MessageAcknowledged comes once per message, in send order."""
    peer = _client_under_test(Config(max_datagram_size=128, keepalive_interval=None))
    conn = peer.conn
    conn.send(b"a" * 150)  # two fragments of at most 96 bytes: seqs 0, 1
    conn.send(b"b")  # seq 2
    conn.send(b"c" * 100)  # seqs 3, 4
    peer.output()
    una = peer.expected
    peer.feed(peer.craft(PacketType.ACK, ack=una + 1))  # half of message 0: nothing
    assert _drain_events(conn) == []
    peer.feed(peer.craft(PacketType.ACK, ack=una + 5))
    assert _drain_events(conn) == [
        MessageAcknowledged(0),
        MessageAcknowledged(1),
        MessageAcknowledged(2),
    ]
    peer.feed(peer.craft(PacketType.ACK, ack=una + 5))  # the same ack again
    assert _drain_events(conn) == []


def test_s8_6_sack_never_acknowledges_a_message() -> None:
    """§8.6-2: messages covered only by SACK blocks are not reported acknowledged."""
    peer = _client_under_test(Config(keepalive_interval=None))
    conn = peer.conn
    for name in (b"0", b"1", b"2"):
        conn.send(name)
    peer.output()
    una = peer.expected
    peer.feed(peer.craft(PacketType.ACK, ack=una, sack=[(una + 1, una + 3)]))
    assert _drain_events(conn) == []
    peer.feed(peer.craft(PacketType.ACK, ack=una + 3))
    assert _drain_events(conn) == [MessageAcknowledged(i) for i in range(3)]


# --- §9 retransmission timer ---------------------------------------------------------------


def test_s9_2_karn_no_sample_from_retransmission() -> None:
    """§9.2-1: the ack of a retransmitted packet gives no RTT sample."""
    config = Config(keepalive_interval=None, initial_rto=1.0, min_rto=0.2)
    # The handshake itself is answered at once, so start from a client whose SYN was resent.
    conn = _engine(config, is_client=True)
    conn.connect(0.0)
    (syn,) = _decode_all(conn.datagrams_to_send(0.0))
    conn.handle_timer(1.0)
    conn.datagrams_to_send(1.0)
    hs = wire.decode_handshake(syn.payload)
    syn_ack = wire.encode(
        Packet(
            PacketType.SYN_ACK,
            0,
            hs.source_connection_id,
            10,
            wire.wire_seq(syn.seq + 1),
            100,
            0,
            (),
            wire.encode_handshake(wire.Handshake(SERVER_ID, 1400)),
        )
    )
    conn.receive_datagram(syn_ack, 1.05)
    assert conn.state is ConnectionState.ESTABLISHED
    assert conn.stats.srtt is None  # the SYN was sent twice: no sample
    peer = _Peer(conn, SERVER_ID, 11, syn.seq + 1)
    peer.now = 1.05
    peer.output()
    conn.send(b"data")
    (first,) = peer.output()
    retransmitted = peer.fire()
    assert [p.seq for p in retransmitted if p.type is PacketType.DATA][:1] == [first.seq]
    peer.now += 0.05
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1))
    assert conn.stats.srtt is None  # acked after a retransmission: still no sample
    conn.send(b"fresh")
    peer.output()
    peer.now += 0.3
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 2))
    assert conn.stats.srtt == pytest.approx(0.3)  # a packet sent once does give one


def test_s9_3_first_deadline_is_send_time_plus_rto() -> None:
    """§9.3-1: the timer starts at send time + current RTO (initial_rto before any sample)."""
    config = Config(initial_rto=0.7, min_rto=0.1, keepalive_interval=None, tail_loss_probe=False)
    conn = _engine(config, is_client=True)
    conn.connect(2.0)
    conn.datagrams_to_send(2.0)
    assert conn.get_timer() == pytest.approx(2.7)
    peer = _client_under_test(config)
    rto = peer.conn.stats.rto
    peer.now = 4.0
    peer.conn.send(b"x")
    peer.output()
    assert peer.conn.get_timer() == pytest.approx(4.0 + rto)


def test_s9_3_backoff_doubles_to_cap() -> None:
    """§9.3-2: successive timeouts wait RTO, 2 RTO, 4 RTO, ... capped at max_rto."""
    config = Config(
        initial_rto=0.5,
        min_rto=0.1,
        max_rto=2.0,
        keepalive_interval=None,
        peer_timeout=100.0,
        tail_loss_probe=False,
    )
    conn = _engine(config, is_client=True)
    conn.connect(0.0)
    times = [0.0]
    conn.datagrams_to_send(0.0)
    now = 0.0
    for _ in range(6):
        timer = conn.get_timer()
        assert timer is not None
        now = timer
        conn.handle_timer(now)
        if any(p.type is PacketType.SYN for p in _decode_all(conn.datagrams_to_send(now))):
            times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.5, 1.0, 2.0, 2.0, 2.0, 2.0])
    # The same for data, after an RTT sample.
    peer = _client_under_test(config)
    peer.conn.send(b"x")
    peer.output()
    rto = peer.conn.stats.rto
    sent_at = [peer.now]
    for _ in range(5):
        out = peer.fire()
        if any(p.type is PacketType.DATA for p in out):
            sent_at.append(peer.now)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    expected = [min(rto * 2**i, 2.0) for i in range(5)]
    assert gaps == pytest.approx(expected)


def test_s9_3_retransmissions_ask_for_immediate_ack() -> None:
    """§9.3-4: retransmitted DATA and FIN (timeout or fast retransmit) carry ACK_NOW."""
    peer = _client_under_test(Config(keepalive_interval=None))
    conn = peer.conn
    for i in range(5):
        conn.send(b"%d" % i)
    conn.close(0.0)
    first = peer.output()
    assert all(not p.flags & Flags.ACK_NOW for p in first)
    una = peer.expected
    peer.feed(peer.craft(PacketType.ACK, ack=una, sack=[(una + 3, una + 5)]))  # fast retransmit
    fast = [p for p in peer.output() if p.type is PacketType.DATA]
    assert fast and all(p.flags & Flags.ACK_NOW for p in fast)
    resent = [p for p in peer.fire() if p.type in (PacketType.DATA, PacketType.FIN)]
    assert resent and all(p.flags & Flags.ACK_NOW for p in resent)
    # The FIN alone outstanding: its retransmission too.
    peer.feed(peer.craft(PacketType.ACK, ack=una + 5))
    fin_again = [p for p in peer.fire() if p.type is PacketType.FIN]
    assert fin_again and all(p.flags & Flags.ACK_NOW for p in fin_again)


def test_s9_5_retransmission_budget() -> None:
    """§9.5-1: more than max_retransmits timeouts without progress fail the connection."""
    config = Config(
        max_retransmits=2, keepalive_interval=None, peer_timeout=1000.0, tail_loss_probe=False
    )
    peer = _client_under_test(config)
    conn = peer.conn
    conn.send(b"lost")
    peer.output()
    copies = 1
    for _ in range(10):
        if conn.get_timer() is None:
            break
        copies += sum(p.type is PacketType.DATA for p in peer.fire())
    failed = [e for e in _drain_events(conn) if isinstance(e, Failed)]
    assert len(failed) == 1
    assert failed[0].reason.startswith("peer unreachable")
    assert failed[0].undelivered == (0,)
    assert copies == 3  # the original and max_retransmits retransmissions


def test_s9_5_silence_budget() -> None:
    """§9.5-2: silence for peer_timeout while the peer owes an answer fails the connection."""
    config = Config(peer_timeout=5.0, keepalive_interval=None)
    peer = _client_under_test(config)
    conn = peer.conn
    conn.send(b"unanswered")
    peer.output()
    for _ in range(100):
        if conn.get_timer() is None:
            break
        peer.fire()
        if peer.now < 5.0:
            assert conn.state is ConnectionState.ESTABLISHED
    assert conn.state is ConnectionState.FAILED
    assert peer.now == pytest.approx(5.0)
    (failed,) = [e for e in _drain_events(conn) if isinstance(e, Failed)]
    assert failed.reason.startswith("peer unreachable")
    # Nothing owed (idle, keepalive off): silence alone does not fail the connection.
    idle = _client_under_test(config)
    assert idle.conn.get_timer() is None


def test_s9_6_textbook_policy_schedule() -> None:
    """§9.6-1: the textbook policy sends the SYN at 0, 0.1, 0.3, 0.7, 1.5 s and fails at 3.1 s."""
    conn = _engine(Config.textbook(), is_client=True)
    conn.connect(0.0)
    sent_at = []
    now = 0.0
    for _ in range(20):
        if conn.datagrams_to_send(now):
            sent_at.append(now)
        timer = conn.get_timer()
        if timer is None:
            break
        now = timer
        conn.handle_timer(now)
    assert sent_at == pytest.approx([0.0, 0.1, 0.3, 0.7, 1.5])
    assert now == pytest.approx(3.1)
    (failed,) = _drain_events(conn)
    assert isinstance(failed, Failed) and failed.reason.startswith("peer unreachable")


# --- §10 fast retransmit --------------------------------------------------------------------


def test_s10_packet_threshold_triggers_retransmission() -> None:
    """§10-1: a packet with three acknowledged successors is resent at once, before new data."""
    # With NewReno the window halves on the loss and the resend waits for room (the rule
    # below is about *when a packet is declared lost*); "fixed" isolates that rule.
    peer = _client_under_test(Config(keepalive_interval=None, congestion_control="fixed"))
    conn = peer.conn
    peer.feed(peer.craft(PacketType.ACK, window=5))
    for i in range(8):
        conn.send(b"%d" % i)
    assert len(peer.output()) == 5
    una = peer.expected
    peer.feed(peer.craft(PacketType.ACK, ack=una, sack=[(una + 3, una + 4)], window=7))
    out = [p for p in peer.output() if p.type is PacketType.DATA]
    assert [peer.full(p.seq) - una for p in out] == [0, 5, 6]  # the lost one before new data
    assert out[0].flags & Flags.ACK_NOW
    assert conn.stats.timeouts == 0 and conn.stats.fast_retransmits == 1
    # NewReno: declared lost at once as well (the resend then waits for the window).
    reno = _client_under_test(Config(keepalive_interval=None, initial_window=5))
    for i in range(5):
        reno.conn.send(b"%d" % i)
    reno.output()
    una = reno.expected
    reno.feed(reno.craft(PacketType.ACK, ack=una, sack=[(una + 3, una + 4)]))
    assert reno.conn.stats.fast_retransmits == 1 and reno.conn.stats.timeouts == 0
    reno.feed(reno.craft(PacketType.ACK, ack=una, sack=[(una + 3, una + 5)]))
    resent = [reno.full(p.seq) - una for p in reno.output() if p.type is PacketType.DATA]
    assert resent[:1] == [0]


def test_s10_fewer_than_three_is_not_loss() -> None:
    """§10-2: a packet with only one or two acknowledged successors is not resent."""
    peer = _client_under_test(Config(keepalive_interval=None, initial_window=3))
    conn = peer.conn
    for i in range(3):
        conn.send(b"%d" % i)
    peer.output()
    una = peer.expected
    peer.feed(peer.craft(PacketType.ACK, ack=una, sack=[(una + 2, una + 3)]))
    assert [p for p in peer.output() if peer.full(p.seq) == una and p.type is PacketType.DATA] == []
    peer.feed(peer.craft(PacketType.ACK, ack=una, sack=[(una + 1, una + 3)]))
    assert [p for p in peer.output() if p.type is PacketType.DATA] == []
    assert conn.stats.fast_retransmits == 0


# --- §11 flow control --------------------------------------------------------------------


def test_s11_2_data_beyond_window_dropped() -> None:
    """§11.2-1: DATA at or beyond ack + window is dropped, not held, not SACKed."""
    peer = _server_under_test(Config(receive_window=4, keepalive_interval=None))
    conn = peer.conn
    base = peer.next_seq
    dropped = conn.stats.datagrams_dropped
    peer.feed(peer.craft(PacketType.DATA, seq=base + 4, payload=b"beyond"))
    assert conn.stats.datagrams_dropped == dropped + 1
    replies = peer.output()
    assert all(not p.sack for p in replies)  # not held
    peer.feed(peer.craft(PacketType.DATA, seq=base + 3, payload=b"edge"))  # last in window
    (ack,) = peer.output()
    assert [(peer.full(s, base), peer.full(e, base)) for s, e in ack.sack] == [(base + 3, base + 4)]
    for offset in range(3):
        peer.feed(peer.craft(PacketType.DATA, seq=base + offset, payload=b"%d" % offset))
    assert _drain_events(conn) == [_received(m) for m in (b"0", b"1", b"2", b"edge")]


def test_s11_2_sender_respects_peer_window() -> None:
    """§11.2-2: the sender never has more sequence numbers outstanding than the peer's window."""
    peer = _client_under_test(Config(keepalive_interval=None))
    conn = peer.conn
    peer.feed(peer.craft(PacketType.ACK, window=3))
    for i in range(10):
        conn.send(b"%d" % i)
    assert len([p for p in peer.output() if p.type is PacketType.DATA]) == 3
    una = peer.expected
    peer.feed(peer.craft(PacketType.ACK, ack=una + 1, window=3))
    out = [peer.full(p.seq) for p in peer.output() if p.type is PacketType.DATA]
    assert out == [una + 3]  # the right edge moved by one
    peer.feed(peer.craft(PacketType.ACK, ack=una + 4, window=0))
    assert [p for p in peer.output() if p.type is PacketType.DATA] == []


def test_s11_3_window_update_after_read() -> None:
    """§11.3-1: when reading reopens a zero window, an ACK with the new window goes out."""
    peer = _server_under_test(Config(receive_window=4, keepalive_interval=None))
    conn = peer.conn
    base = peer.next_seq
    for offset in range(4):
        peer.feed(
            peer.craft(
                PacketType.DATA, seq=base + offset, payload=b"%d" % offset, flags=Flags.ACK_NOW
            )
        )
    last = peer.output()[-1]
    assert last.window == 0
    assert conn.next_event() == _received(b"0")
    (update,) = peer.output()
    assert update.type is PacketType.ACK and update.window == 1
    assert update.ack == wire.wire_seq(base + 4)


def test_s11_4_ping_acknowledged_immediately() -> None:
    """§11.4-1: a PING is answered by an ACK at once, on an idle established connection."""
    for peer in (_server_under_test(), _client_under_test()):
        peer.now = 3.0
        peer.feed(peer.craft(PacketType.PING, flags=Flags.ACK_NOW))
        out = peer.output()
        assert [p.type for p in out] == [PacketType.ACK]


# --- §12 congestion control ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial_window", "max_send_window", "peer_window", "expected"),
    [(4, 1024, 1000, 4), (10, 3, 1000, 3), (10, 1024, 2, 2), (10, 1024, 1000, 10)],
)
def test_s12_flight_bounded_by_cwnd_peer_window_and_max(
    initial_window: int, max_send_window: int, peer_window: int, expected: int
) -> None:
    """§12-1: packets in flight never exceed min(cwnd, peer window, max_send_window)."""
    config = Config(
        initial_window=initial_window, max_send_window=max_send_window, keepalive_interval=None
    )
    peer = _client_under_test(config)
    conn = peer.conn
    peer.feed(peer.craft(PacketType.ACK, window=peer_window))
    for i in range(30):
        conn.send(b"%d" % i)
    assert len([p for p in peer.output() if p.type is PacketType.DATA]) == expected
    assert conn.stats.packets_in_flight == expected
    # Acknowledging one packet releases at most what the bounds allow again.
    una = peer.expected
    peer.feed(peer.craft(PacketType.ACK, ack=una + 1, window=peer_window))
    assert conn.stats.packets_in_flight <= min(conn.stats.cwnd, peer_window, max_send_window)


# --- §13 fragmentation ---------------------------------------------------------------------


def test_s13_1_fragment_numbering() -> None:
    """§13.1-1: max_payload-byte fragments, fragments_left down to 0; empty message = 1 DATA."""
    peer = _client_under_test(Config(max_datagram_size=1000, keepalive_interval=None), peer_mds=200)
    conn = peer.conn
    conn.send(b"q" * 500)
    conn.send(b"")
    conn.send(b"r" * 168)
    out = [p for p in peer.output() if p.type is PacketType.DATA]
    assert [(len(p.payload), p.fragments_left) for p in out] == [
        (168, 2),
        (168, 1),
        (164, 0),
        (0, 0),
        (168, 0),
    ]
    seqs = [peer.full(p.seq) for p in out]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert b"".join(p.payload for p in out[:3]) == b"q" * 500


def test_s13_2_send_too_large_raises() -> None:
    """§13.2-1: send() of more than max_message_size raises MessageTooLarge; the limit is fine."""
    conn = _engine(Config(max_message_size=1000), is_client=True)
    with pytest.raises(MessageTooLarge):
        conn.send(b"x" * 1001)
    assert isinstance(MessageTooLarge("x"), LocalProtocolError)
    assert conn.send(b"x" * 1000) == 0


def test_s13_3_in_order_exactly_once() -> None:
    """§13.3-1: messages are delivered in order, once, despite reordering and duplicates."""
    peer = _server_under_test(Config(keepalive_interval=None))
    conn = peer.conn
    base = peer.next_seq
    packets = [
        peer.craft(PacketType.DATA, seq=base, payload=b"A", fragments_left=0),
        peer.craft(PacketType.DATA, seq=base + 1, payload=b"B1", fragments_left=2),
        peer.craft(PacketType.DATA, seq=base + 2, payload=b"B2", fragments_left=1),
        peer.craft(PacketType.DATA, seq=base + 3, payload=b"B3", fragments_left=0),
        peer.craft(PacketType.DATA, seq=base + 4, payload=b"", fragments_left=0),
        peer.craft(PacketType.DATA, seq=base + 5, payload=b"C", fragments_left=0),
    ]
    rng = random.Random(5)
    for _ in range(5):
        order = packets * 2
        rng.shuffle(order)
        for data in order:
            peer.feed(data)
            peer.output()
    assert _drain_events(conn) == [_received(m) for m in (b"A", b"B1B2B3", b"", b"C")]


def test_s13_3_reassembly_over_max_message_size_fails() -> None:
    """§13.3-2: a message growing past max_message_size fails the connection (counted in bytes)."""
    peer = _server_under_test(Config(max_message_size=1000, keepalive_interval=None))
    conn = peer.conn
    # fragments_left announces far more than the limit, but the bytes decide.
    peer.feed(peer.craft(PacketType.DATA, payload=b"x" * 400, fragments_left=1000))
    peer.feed(peer.craft(PacketType.DATA, payload=b"x" * 400, fragments_left=999))
    assert conn.state is ConnectionState.ESTABLISHED
    peer.feed(peer.craft(PacketType.DATA, payload=b"x" * 400, fragments_left=998))
    assert _state(conn) is ConnectionState.FAILED
    (failed,) = _drain_events(conn)
    assert isinstance(failed, Failed) and "too large" in failed.reason
    # A single-fragment message over the limit too.
    single = _server_under_test(Config(max_message_size=10, keepalive_interval=None))
    single.feed(single.craft(PacketType.DATA, payload=b"y" * 11))
    assert single.conn.state is ConnectionState.FAILED


def test_s13_3_inconsistent_fragments_left_fails() -> None:
    """§13.3-3: fragments_left not one less than the previous fragment's fails the connection."""
    for second in (3, 1, 5):
        peer = _server_under_test(Config(keepalive_interval=None))
        peer.feed(peer.craft(PacketType.DATA, payload=b"a", fragments_left=3))
        peer.feed(peer.craft(PacketType.DATA, payload=b"b", fragments_left=second))
        assert peer.conn.state is ConnectionState.FAILED
        (failed,) = _drain_events(peer.conn)
        assert isinstance(failed, Failed) and "fragments_left" in failed.reason
    good = _server_under_test(Config(keepalive_interval=None))
    good.feed(good.craft(PacketType.DATA, payload=b"a", fragments_left=3))
    good.feed(good.craft(PacketType.DATA, payload=b"b", fragments_left=2))
    assert good.conn.state is ConnectionState.ESTABLISHED


def test_s13_3_empty_middle_fragment_or_fin_inside_message_fails() -> None:
    """§13.3-4: an empty non-final fragment, or a FIN inside a message, fails the connection."""
    empty = _server_under_test(Config(keepalive_interval=None))
    empty.feed(empty.craft(PacketType.DATA, payload=b"a", fragments_left=2))
    empty.feed(empty.craft(PacketType.DATA, payload=b"", fragments_left=1))
    assert empty.conn.state is ConnectionState.FAILED
    first = _server_under_test(Config(keepalive_interval=None))
    first.feed(first.craft(PacketType.DATA, payload=b"", fragments_left=1))
    assert first.conn.state is ConnectionState.FAILED
    fin = _server_under_test(Config(keepalive_interval=None))
    fin.feed(fin.craft(PacketType.DATA, payload=b"a", fragments_left=1))
    fin.feed(fin.craft(PacketType.FIN))
    assert fin.conn.state is ConnectionState.FAILED
    # Each of these failures is announced to the peer with a RESET.
    for peer in (empty, first, fin):
        assert [p.type for p in peer.output()][-1:] == [PacketType.RESET]


def test_s9_3_at_most_two_packets_per_expiry() -> None:
    """§9.3-3: one RTO expiry releases at most two DATA/FIN packets until an ack arrives."""
    peer = _client_under_test(Config(keepalive_interval=None, tail_loss_probe=False))
    conn = peer.conn
    for i in range(8):
        conn.send(b"%d" % i)
    assert len(peer.output()) == 8
    resent = [p for p in peer.fire() if p.type in (PacketType.DATA, PacketType.FIN)]
    assert 1 <= len(resent) <= 2
    assert peer.full(resent[0].seq) == peer.expected  # the oldest first
    assert [p for p in peer.output() if p.type is PacketType.DATA] == []


# --- §15 versioning ---------------------------------------------------------------------------


def test_s15_1_other_versions_dropped_silently() -> None:
    """§15.1-1: a datagram of any version but 1 is dropped with no reply, in every state."""
    listener = _engine(None, is_client=False)
    handshake = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    for version in (0, 2, 3, 0x7F, 0xFF):
        before = _snapshot(listener)
        listener.receive_datagram(_raw(version=version, ptype=1, cid=0, payload=handshake), 0.0)
        _assert_dropped_without_effect(listener, before, 0.0)
        assert listener.state is ConnectionState.LISTEN
    peer = _server_under_test()
    for version in (0, 2, 0xFF):
        for ptype, payload in ((3, b"data"), (4, b""), (5, b""), (6, b""), (7, b"")):
            data = _raw(
                version=version,
                ptype=ptype,
                cid=peer.engine_id,
                seq=peer.next_seq,
                ack=peer.expected,
                payload=payload,
            )
            before = _snapshot(peer.conn)
            peer.feed(data)
            _assert_dropped_without_effect(peer.conn, before, peer.now)
    # The same datagram as version 1 is accepted.
    peer.feed(
        _raw(ptype=3, cid=peer.engine_id, seq=peer.next_seq, ack=peer.expected, payload=b"v1")
    )
    assert _drain_events(peer.conn) == [_received(b"v1")]


def test_s17_3_syn_ack_not_larger_than_syn() -> None:
    """§17.3-1: the SYN_ACK answering a SYN is never larger than that SYN (no amplification)."""
    for client_mds, server_mds in ((1400, 1400), (128, 65507), (65507, 128)):
        client = _engine(Config(max_datagram_size=client_mds), is_client=True)
        server = _engine(Config(max_datagram_size=server_mds), is_client=False)
        client.connect(0.0)
        (syn,) = client.datagrams_to_send(0.0)
        server.receive_datagram(syn, 0.0)
        (syn_ack,) = server.datagrams_to_send(0.0)
        assert wire.decode(syn_ack).type is PacketType.SYN_ACK
        assert len(syn_ack) <= len(syn) == wire.OVERHEAD + wire.HANDSHAKE_SIZE
        # Retransmitted SYN_ACKs (on RTO, or on a duplicate SYN) are the same size.
        server.receive_datagram(syn, 0.1)
        (again,) = server.datagrams_to_send(0.1)
        assert len(again) <= len(syn)
