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
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp.config import Config
from rudp.core import wire, wire_reference
from rudp.core.congestion import MIN_WINDOW, NewReno, RateSample, register
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


def _conformance_sources() -> str:
    """This file and its siblings ``test_spec_*.py`` (one per part of the spec)."""
    here = Path(__file__).parent
    files = [Path(__file__), *sorted(here.glob("test_spec_*.py"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


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
    source = _conformance_sources()
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
    defined = set(re.findall(r"^def (test_\w+)\(", _conformance_sources(), flags=re.MULTILINE))
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
    version: int = wire.VERSION,
    ptype: int = 3,
    flags: int = 0,
    sack: Iterable[tuple[int, int]] = (),
    cid: int = 1,
    pn: int = 0,
    seq: int = 0,
    ack: int = 0,
    largest: int = 0,
    ack_delay: int = 0,
    window: int = 10,
    fragments_left: int = 0,
    payload: bytes = b"",
    sack_count: int | None = None,
    payload_length: int | None = None,
) -> bytes:
    """Build a datagram by hand, with a valid CRC, from the layout of spec Table 1."""
    blocks = list(sack)
    header = struct.pack(
        ">BBBBQIIIIHHIH",
        version,
        ptype,
        flags,
        len(blocks) if sack_count is None else sack_count,
        cid,
        pn,
        seq,
        ack,
        largest,
        ack_delay,
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


PEER_TOKEN = bytes(range(0xA0, 0xB0))
"""The reset token the scripted peers announce in their handshake blocks."""


class _Peer:
    """A scripted remote endpoint: crafts datagrams for one engine under test.

    Tracks the two sequence spaces as plain integers: ``next_seq`` is the
    peer's next sequence number, ``expected`` the engine's next one (what the
    peer acknowledges).  It numbers its own datagrams from ``next_pn`` on (its
    SYN or SYN_ACK took 0) and, unless told otherwise, echoes ``largest``: the
    largest packet number the engine has sent (the test sees every datagram, so
    by default the peer has received them all).  ``pns`` maps each of the
    engine's sequence numbers to the packet number of its latest transmission.
    """

    def __init__(self, conn: Conn, peer_id: int, next_seq: int, expected: int) -> None:
        self.conn = conn
        self.peer_id = peer_id
        self.next_seq = next_seq
        self.expected = expected
        self.now = 0.0
        self.window = 1000
        self.next_pn = 1
        self.largest = 0
        self.pns: dict[int, int] = {}
        self.reset_token = PEER_TOKEN
        """The stateless-reset token the scripted peer announced (section 6.6)."""

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
        payload: bytes | None = None,
        cid: int | None = None,
        pn: int | None = None,
        largest: int | None = None,
        ack_delay: int = 0,
    ) -> bytes:
        """One datagram from the peer; DATA/FIN with ``seq=None`` take the next number.

        A RESET carries the peer's token unless ``payload`` says otherwise.
        """
        if payload is None:
            payload = self.reset_token if ptype is PacketType.RESET else b""
        if seq is None:
            seq = self.next_seq
            if ptype in (PacketType.DATA, PacketType.FIN):
                self.next_seq += 1
        if pn is None:
            pn = self.next_pn
            self.next_pn += 1
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
                wire.wire_seq(pn),
                wire.wire_seq(self.largest if largest is None else largest),
                ack_delay,
            )
        )

    def feed(self, *datagrams: bytes) -> None:
        for data in datagrams:
            self.conn.receive_datagram(data, self.now)

    def saw(self, packets: list[Packet]) -> list[Packet]:
        """Note the packet numbers of datagrams the engine sent."""
        for packet in packets:
            self.largest = max(self.largest, packet.packet_number)
            if packet.type in (PacketType.DATA, PacketType.FIN):
                self.pns[self.full(packet.seq)] = packet.packet_number
        return packets

    def output(self) -> list[Packet]:
        """Everything the engine sends now, decoded."""
        return self.saw(_decode_all(self.conn.datagrams_to_send(self.now)))

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
            wire.encode_handshake(wire.Handshake(CLIENT_ID, mds, PEER_TOKEN)),
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
            wire.encode_handshake(wire.Handshake(SERVER_ID, peer_mds, PEER_TOKEN)),
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
        packet_number=0x0A0B0C0D,
        seq=0x11223344,
        ack=0x55667788,
        largest_received=0x1A1B1C1D,
        ack_delay=0xCAFE,
        window=0x99AA,
        fragments_left=0xBBCCDDEE,
        sack=((0xA0A1A2A3, 0xB0B1B2B3),),
        payload=b"xyz",
    )
    data = wire.encode(packet)
    expected_body = (
        bytes([6, 3, 1, 1])  # version 6, DATA, ACK_NOW, one SACK block
        + bytes.fromhex("0102030405060708")  # 4: connection id
        + bytes.fromhex("0A0B0C0D")  # 12: packet number
        + bytes.fromhex("11223344")  # 16: seq
        + bytes.fromhex("55667788")  # 20: ack
        + bytes.fromhex("1A1B1C1D")  # 24: largest received
        + bytes.fromhex("CAFE")  # 28: ack delay
        + bytes.fromhex("99AA")  # 30: window
        + bytes.fromhex("BBCCDDEE")  # 32: fragments left
        + bytes.fromhex("0003")  # 36: payload length
        + bytes.fromhex("A0A1A2A3B0B1B2B3")  # 38: the SACK block
        + b"xyz"  # 46: payload
    )
    assert data == _with_crc(expected_body)
    assert wire.HEADER_SIZE == 38 and wire.OVERHEAD == 42
    assert len(data) == wire.OVERHEAD + wire.SACK_SIZE + 3
    # The reference schema agrees byte for byte (Section 3.5).
    assert wire_reference.reference_encode(packet) == data
    assert wire.decode(data) == packet


def test_s3_2_sender_never_sets_reserved_flags() -> None:
    """§3.2-1: a sender sends reserved flag bits as zero (the encoder refuses to set them).
    Bit 1 is SEALED since version 5 (section 3.7): an unkeyed conversation never sets it."""
    for bit in range(2, 8):
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
    assert all(data[2] & 0xFE == 0 for _, data in pair.sent)  # nor SEALED, without a key


def test_s3_2_receiver_drops_reserved_flags() -> None:
    """§3.2-2: a datagram with any reserved flag bit set is dropped and counted."""
    for bit in range(2, 8):
        assert "reserved flag" in _decode_error(_raw(flags=1 << bit))
    peer = _server_under_test()
    conn = peer.conn
    good = peer.craft(PacketType.DATA, payload=b"hello", flags=Flags.ACK_NOW)
    for bit in range(2, 8):
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
    """§3.4-1: payload of the wrong length or fragments_left outside DATA: dropped."""
    for ptype, size in ((4, 0), (5, 0), (6, 0), (7, 16), (9, 8), (10, 8)):
        _decode_error(_raw(ptype=ptype, payload=b"x" * (size + 1)))
        if size:
            _decode_error(_raw(ptype=ptype, payload=b"x" * (size - 1)))
        _decode_error(_raw(ptype=ptype, payload=b"x" * size, fragments_left=1))
        assert wire.decode(_raw(ptype=ptype, payload=b"x" * size)).type == ptype
    _decode_error(_raw(ptype=8, payload=b"x" * 16))  # a stateless reset has its own layout
    for ptype in (1, 2):
        _decode_error(_raw(ptype=ptype, payload=b"x" * (wire.HANDSHAKE_SIZE - 1)))
        _decode_error(_raw(ptype=ptype, payload=b"x" * (wire.HANDSHAKE_SIZE + 1)))
        handshake = wire.encode_handshake(wire.Handshake(5, 1400))
        assert wire.decode(_raw(ptype=ptype, payload=handshake)).payload == handshake


def test_s3_6_validation_order() -> None:
    """§3.6-1: length, CRC, version, type, flags, length fields, SACK count, payload rules."""
    assert "shorter" in _decode_error(b"\x02" * (wire.OVERHEAD - 1))
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


@given(st.binary(min_size=42, max_size=120), st.integers(min_value=0, max_value=200))
def test_s3_6_decoder_raises_only_badpacket_on_checksummed_garbage(data: bytes, cut: int) -> None:
    """§3.6-2: same, for garbage that passes the CRC (so the field checks are exercised)."""
    body = data[: max(wire.HEADER_SIZE, len(data) - cut)]
    with contextlib.suppress(BadPacket):
        wire.decode(_with_crc(body))
    with contextlib.suppress(BadPacket):
        wire_reference.reference_decode(_with_crc(body))


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
        good[: wire.OVERHEAD - 1],  # 1. length
        bytes(bad_crc),  # 2. checksum
        _raw(ptype=4, cid=cid, version=1),  # 3. version
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
    block = wire.decode_handshake(syn.payload)
    assert block[:2] == (conn.local_connection_id, 1200)
    assert block.reset_token == conn._opening.reset_token != wire.NO_RESET_TOKEN


def test_s6_1_syn_ack_layout() -> None:
    """§6.1-3: a SYN_ACK carries the client's id in its header and the server's in its block."""
    conn = _engine(Config(max_datagram_size=1250), is_client=False, isn=900)
    syn = _raw(
        ptype=1, cid=0, seq=77, payload=wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    )
    conn.receive_datagram(syn, 0.0)
    (syn_ack,) = _decode_all(conn.datagrams_to_send(0.0))
    assert syn_ack.type is PacketType.SYN_ACK
    assert syn_ack.connection_id == CLIENT_ID
    assert syn_ack.seq == 900
    block = wire.decode_handshake(syn_ack.payload)
    assert block[:2] == (conn.local_connection_id, 1250)
    assert block.reset_token == conn._opening.reset_token != wire.NO_RESET_TOKEN
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
    # Client with the default 1400, peer announcing 1250.
    peer = _client_under_test(peer_mds=1250)
    peer.conn.send(b"a" * 20000)
    peer.conn.send(b"")
    sizes = [len(d) for d in peer.conn.datagrams_to_send(0.0)]
    assert sizes and max(sizes) <= 1250
    # Server with the default 1400, SYN announcing 1300.
    syn = _raw(
        ptype=1, cid=0, seq=10, payload=wire.encode_handshake(wire.Handshake(CLIENT_ID, 1300))
    )
    small = _engine(None, is_client=False, isn=500)
    small.receive_datagram(syn, 0.0)
    small.datagrams_to_send(0.0)
    small.send(b"d" * 20000)
    small.receive_datagram(_raw(ptype=4, cid=small.local_connection_id, seq=11, ack=501), 0.0)
    assert small.state is ConnectionState.ESTABLISHED
    out = small.datagrams_to_send(0.0)
    assert out and max(len(d) for d in out) <= 1300


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
    config = Config(max_datagram_size=1200, initial_window=2, keepalive_interval=None)
    peer = _client_under_test(config)
    conn = peer.conn
    conn.send(b"x" * (3 * (1200 - wire.OVERHEAD) - 10))  # three fragments
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
    # Failed through a (plausible) RESET, and abort: the RESET of abort() goes out once, then
    # silence.
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
    """§6.4-1: a plausible RESET fails the connection: "reset by peer", undelivered listed."""
    peer = _client_under_test()
    conn = peer.conn
    conn.send(b"a")
    conn.send(b"b")
    peer.output()
    peer.feed(peer.craft(PacketType.RESET, cid=peer.engine_id ^ 0xFF))
    assert conn.state is ConnectionState.ESTABLISHED
    # Our id alone is not enough (section 6.4): neither the token nor the exact seq.
    peer.feed(peer.craft(PacketType.RESET, payload=bytes(16), seq=peer.next_seq + 100_000))
    assert conn.state is ConnectionState.ESTABLISHED
    peer.feed(peer.craft(PacketType.RESET))  # the peer's token
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
    config = Config(max_datagram_size=1200, keepalive_interval=None)
    peer = _client_under_test(config, client_isn=(1 << 32) - 2)
    conn = peer.conn
    payload = 1200 - wire.OVERHEAD
    for size in (0, 1, payload, payload + 1, 3000):
        conn.send(b"z" * size)
    conn.close(0.0)
    first = peer.output()
    seqs = [peer.full(p.seq) for p in first]
    isn = (1 << 32) - 2
    assert seqs == list(range(isn + 1, isn + 1 + len(first)))
    assert [p.type for p in first][-1] is PacketType.FIN
    # Nothing is acknowledged: each probe timeout repeats the oldest packets (Section 9.3),
    # under their original sequence numbers (and new packet numbers).
    originals = {p.seq: p for p in first}
    resent = peer.fire() + peer.fire()
    assert [p.seq for p in resent[:2]] == [first[0].seq, first[1].seq]
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
        Config(max_datagram_size=1200, keepalive_interval=None),
        client_initial_sequence=(1 << 32) - 5,
        server_initial_sequence=(1 << 32) - 3,
        drop=lossy,
    )
    pair.handshake()
    messages = [bytes([i]) * (i * 397 % 3600) for i in range(40)]
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


def _assert_newest_first(blocks: list[tuple[int, int]], recent: int | None) -> None:
    """Section 8.2's order: the block holding ``recent`` first, then the highest down."""
    assert all(start < end for start, end in blocks)
    rest = blocks
    if recent is not None and blocks and blocks[0][0] <= recent < blocks[0][1]:
        rest = blocks[1:]
    assert all(b[0] > c[1] for b, c in itertools.pairwise(rest)), "descending, never touching"
    ordered = sorted(blocks)
    assert all(b[1] < c[0] for b, c in itertools.pairwise(ordered)), "disjoint, never touching"


def test_s8_2_sack_blocks_newest_first() -> None:
    """§8.2-1: SACK blocks are disjoint, apart; the newest arrival's first, then highest down."""
    peer = _server_under_test(Config(keepalive_interval=None))
    base = peer.next_seq

    def blocks(packet: Packet) -> list[tuple[int, int]]:
        return [(peer.full(s, base) - base, peer.full(e, base) - base) for s, e in packet.sack]

    for offset in (5, 3, 1, 6):
        peer.feed(peer.craft(PacketType.DATA, seq=base + offset, payload=b"."))
    (ack,) = peer.output()
    assert blocks(ack) == [(5, 7), (3, 4), (1, 2)]  # 6 arrived last, and [5, 7) is the highest
    peer.feed(peer.craft(PacketType.DATA, seq=base + 3, payload=b"."))  # a duplicate of 3
    (ack,) = peer.output()
    assert blocks(ack) == [(3, 4), (5, 7), (1, 2)]
    peer.feed(peer.craft(PacketType.DATA, seq=base + 1, payload=b"."))  # a duplicate of 1
    (ack,) = peer.output()
    assert blocks(ack) == [(1, 2), (5, 7), (3, 4)]
    # More runs than blocks fit: the newest arrival's block first, then the highest 31.
    for offset in range(9, 9 + 2 * 40, 2):
        peer.feed(peer.craft(PacketType.DATA, seq=base + offset, payload=b"."))
    ack = [p for p in peer.output() if p.type is PacketType.ACK][-1]
    reported = blocks(ack)
    assert len(reported) == wire.MAX_SACK_BLOCKS
    assert reported[:3] == [(87, 88), (85, 86), (83, 84)]
    _assert_newest_first(reported, 87)
    peer.feed(peer.craft(PacketType.DATA, seq=base + 12, payload=b"."))  # joins 11 and 13
    ack = [p for p in peer.output() if p.type is PacketType.ACK][-1]
    reported = blocks(ack)
    assert len(reported) == wire.MAX_SACK_BLOCKS
    assert reported[:3] == [(11, 14), (87, 88), (85, 86)]
    _assert_newest_first(reported, 12)


def test_s8_2_sack_blocks_above_cumulative_ack() -> None:
    """§8.2-2: every SACK block lies strictly above the cumulative ack, over received data only."""
    peer = _server_under_test(Config(keepalive_interval=None))
    base = peer.next_seq
    order = [4, 2, 7, 0, 1, 9, 3, 5, 6, 8, 12, 15, 11]
    received: set[int] = set()
    checked = 0
    for offset in order:
        peer.feed(peer.craft(PacketType.DATA, seq=base + offset, payload=b"."))
        received.add(base + offset)
        for packet in peer.output():
            ack = peer.full(packet.ack, base)
            for start, end in packet.sack:
                start, end = peer.full(start, base), peer.full(end, base)
                assert ack < start < end
                assert set(range(start, end)) <= received
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
        "a second gap above the largest": (
            [
                peer.craft(PacketType.DATA, seq=base + 1, payload=b"b"),
                peer.craft(PacketType.DATA, seq=base + 3, payload=b"d"),
            ],
            base,
        ),
        "below the largest, in a hole": (
            [
                peer.craft(PacketType.DATA, seq=base + 1, payload=b"b"),
                peer.craft(PacketType.DATA, seq=base + 3, payload=b"d"),
                peer.craft(PacketType.DATA, seq=base + 2, payload=b"c"),
            ],
            base,
        ),
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


def test_s8_5_forged_sack_does_not_complete_the_handshake() -> None:
    """§8.5-1: also in SYN_RECEIVED: a SACK block beyond what was sent drops the packet."""
    conn = _engine(None, is_client=False, isn=9000)
    hs = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    conn.receive_datagram(_raw(ptype=1, cid=0, seq=50, payload=hs), 0.0)
    conn.datagrams_to_send(0.0)
    cid = conn.local_connection_id
    forged = _raw(ptype=4, cid=cid, pn=1, seq=51, ack=9001, sack=[(9001, 9005)])
    before = _snapshot(conn)
    conn.receive_datagram(forged, 0.0)
    _assert_dropped_without_effect(conn, before, 0.0)


def test_s8_6_message_acknowledged_once_in_order() -> None:
    """§8.6-1: MessageAcknowledged comes once per message, in send order."""
    peer = _client_under_test(Config(max_datagram_size=1200, keepalive_interval=None))
    conn = peer.conn
    conn.send(b"a" * 1500)  # two fragments of at most 1158 bytes: seqs 0, 1
    conn.send(b"b")  # seq 2
    conn.send(b"c" * 1200)  # seqs 3, 4
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


# --- §8.7 packet numbers and the echo ---------------------------------------------------------


def test_s8_7_every_datagram_numbered_in_send_order() -> None:
    """§8.7-1: every datagram takes the next packet number, 0, 1, 2, ...; a resend a new one."""
    lost: set[bytes] = set()

    def lossy(name: str, data: bytes) -> bool:
        # Lose the first copy of every 4th datagram, so SYNs, data and FINs are sent again.
        if zlib.crc32(data) % 4 == 0 and data not in lost:
            lost.add(data)
            return True
        return False

    pair = ConnectionPair(Config(keepalive_interval=0.5, max_datagram_size=1200), drop=lossy)
    pair.handshake()
    pair.client.send(b"c" * 12000)
    pair.server.send(b"s" * 8000)
    pair.client.close(pair.now)
    assert pair.run(stop=pair.both_closed)
    assert lost
    for side in ("client", "server"):
        packets = [wire.decode(data) for sender, data in pair.sent if sender == side]
        assert [p.packet_number for p in packets] == list(range(len(packets))), side
        assert {PacketType.DATA, PacketType.ACK, PacketType.FIN} <= {p.type for p in packets}
        numbers: dict[tuple[PacketType, int], list[int]] = {}
        for packet in packets:
            if packet.type in (PacketType.DATA, PacketType.FIN):
                numbers.setdefault((packet.type, packet.seq), []).append(packet.packet_number)
        resent = [pns for pns in numbers.values() if len(pns) > 1]
        assert resent, f"{side} retransmitted nothing"
        assert all(len(set(pns)) == len(pns) for pns in resent)
    # PING and RESET take their numbers like every other datagram.
    peer = _client_under_test(Config(keepalive_interval=1.0))
    peer.conn.send(b"x")
    (data,) = peer.output()
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1))
    (ping,) = peer.fire()
    peer.conn.abort("done")
    (reset,) = peer.output()
    assert (ping.type, reset.type) == (PacketType.PING, PacketType.RESET)
    assert [data.packet_number + 1, data.packet_number + 2] == [
        ping.packet_number,
        reset.packet_number,
    ]


def test_s8_7_echo_of_largest_received_and_ack_delay() -> None:
    """§8.7-2: DATA, ACK, PING and FIN echo the largest packet number received and its age."""
    unit = wire.ACK_DELAY_UNIT
    # The SYN echoes nothing; the SYN_ACK echoes the SYN.
    client = _engine(None, is_client=True)
    client.connect(0.0)
    (syn,) = _decode_all(client.datagrams_to_send(0.0))
    assert (syn.packet_number, syn.largest_received, syn.ack_delay) == (0, 0, 0)
    server = _engine(None, is_client=False)
    hs = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    server.receive_datagram(_raw(ptype=1, cid=0, pn=5, seq=50, payload=hs), 0.0)
    (syn_ack,) = _decode_all(server.datagrams_to_send(0.1))
    assert (syn_ack.largest_received, syn_ack.ack_delay) == (5, 0)

    peer = _server_under_test(Config(keepalive_interval=1.0, max_ack_delay=0.02))
    peer.now = 1.0
    peer.feed(peer.craft(PacketType.DATA, payload=b"a", pn=40))
    (ack,) = peer.fire()  # the delayed ack, max_ack_delay later
    assert ack.type is PacketType.ACK and peer.now == pytest.approx(1.02)
    assert ack.largest_received == 40 and abs(ack.ack_delay - 0.02 / unit) <= 1
    peer.now = 1.03
    peer.feed(peer.craft(PacketType.DATA, payload=b"b", pn=30))  # an older number: no change
    peer.now = 1.05
    peer.conn.send(b"reply")
    (data,) = [p for p in peer.output() if p.type is PacketType.DATA]
    assert data.largest_received == 40 and abs(data.ack_delay - 0.05 / unit) <= 1
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1, pn=41))
    # A keepalive PING after a second of silence: the delay is clamped to the 16-bit field.
    (ping,) = peer.fire()
    assert ping.type is PacketType.PING and peer.now == pytest.approx(2.05)
    assert (ping.largest_received, ping.ack_delay) == (41, 0xFFFF)
    peer.conn.close(peer.now)
    fin = [p for p in peer.output() if p.type is PacketType.FIN]
    assert fin and (fin[0].largest_received, fin[0].ack_delay) == (41, 0xFFFF)


def test_s8_7_implausible_jump_not_believed() -> None:
    """§8.7-3: a packet number more than 2^20 above the largest received does not move the echo."""
    peer = _server_under_test(Config(keepalive_interval=None))
    jump = 1 << 20
    peer.feed(peer.craft(PacketType.DATA, payload=b"a", pn=10, flags=Flags.ACK_NOW))
    (ack,) = peer.output()
    assert ack.largest_received == 10
    peer.feed(peer.craft(PacketType.DATA, payload=b"b", pn=10 + jump + 1, flags=Flags.ACK_NOW))
    assert _drain_events(peer.conn) == [_received(b"a"), _received(b"b")]  # processed as usual
    (ack,) = peer.output()
    assert ack.largest_received == 10
    peer.feed(peer.craft(PacketType.DATA, payload=b"c", pn=10 + jump, flags=Flags.ACK_NOW))
    (ack,) = peer.output()
    assert ack.largest_received == 10 + jump


def test_s8_7_echo_of_unsent_packet_number_dropped() -> None:
    """§8.7-4: a packet whose echo names a packet number never sent is dropped whole."""
    # As in §8.5-1, the silence deadline is the earliest timer, so counting a dropped packet
    # as "heard from the peer" would show.
    config = Config(peer_timeout=0.5, initial_rto=1.0, min_rto=1.0, keepalive_interval=None)
    peer = _client_under_test(config)
    conn = peer.conn
    conn.send(b"one")
    (data,) = peer.output()
    peer.now = 0.3
    last = data.packet_number  # the newest packet number the engine has used
    for bogus in (last + 1, last + 1000, last + (1 << 31) - 1):
        for datagram in (
            peer.craft(PacketType.ACK, ack=peer.expected + 1, largest=bogus),
            peer.craft(PacketType.DATA, payload=b"x", largest=bogus, seq=peer.next_seq),
            peer.craft(PacketType.PING, largest=bogus),
        ):
            before = _snapshot(conn)
            peer.feed(datagram)
            _assert_dropped_without_effect(conn, before, peer.now)
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1, largest=last))
    assert _drain_events(conn) == [MessageAcknowledged(0)]


def test_s8_7_forged_echo_does_not_complete_the_handshake() -> None:
    """§8.7-4: also in SYN_RECEIVED: a forged echo does not complete the handshake."""
    conn = _engine(None, is_client=False, isn=9000)
    hs = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    conn.receive_datagram(_raw(ptype=1, cid=0, seq=50, payload=hs), 0.0)
    (syn_ack,) = _decode_all(conn.datagrams_to_send(0.0))
    cid = conn.local_connection_id
    forged = _raw(ptype=4, cid=cid, pn=1, seq=51, ack=9001, largest=syn_ack.packet_number + 1)
    before = _snapshot(conn)
    conn.receive_datagram(forged, 0.0)
    _assert_dropped_without_effect(conn, before, 0.0)
    honest = _raw(ptype=4, cid=cid, pn=2, seq=51, ack=9001, largest=syn_ack.packet_number)
    conn.receive_datagram(honest, 0.0)
    assert _state(conn) is ConnectionState.ESTABLISHED


# --- §9 RTT estimation and the probe timeout ---------------------------------------------------


def _client_with_rtt(config: Config | None, rtt: float) -> _Peer:
    """An ESTABLISHED client whose handshake took ``rtt``: its first RTT sample."""
    conn = _engine(config, is_client=True)
    conn.connect(0.0)
    (syn,) = _decode_all(conn.datagrams_to_send(0.0))
    hs = wire.decode_handshake(syn.payload)
    syn_ack = wire.encode(
        Packet(
            PacketType.SYN_ACK,
            0,
            hs.source_connection_id,
            5000,
            wire.wire_seq(syn.seq + 1),
            1000,
            0,
            (),
            wire.encode_handshake(wire.Handshake(SERVER_ID, 1400)),
            0,
            syn.packet_number,
        )
    )
    conn.receive_datagram(syn_ack, rtt)
    assert conn.state is ConnectionState.ESTABLISHED
    assert conn.stats.srtt == pytest.approx(rtt)
    peer = _Peer(conn, SERVER_ID, 5001, syn.seq + 1)
    peer.now = rtt
    peer.output()  # the ack of the SYN_ACK
    _drain_events(conn)
    return peer


def _syn_ack(syn: Packet, *, echo: int) -> bytes:
    """The scripted server's SYN_ACK to ``syn``, echoing packet number ``echo``."""
    hs = wire.decode_handshake(syn.payload)
    return wire.encode(
        Packet(
            PacketType.SYN_ACK,
            0,
            hs.source_connection_id,
            5000,
            wire.wire_seq(syn.seq + 1),
            1000,
            0,
            (),
            wire.encode_handshake(wire.Handshake(SERVER_ID, 1400)),
            0,
            echo,
        )
    )


def _resent_syns(config: Config, count: int) -> tuple[Conn, list[tuple[Packet, float]]]:
    """A client that sent its SYN ``count`` times (timer-driven): each SYN and its send time."""
    conn = _engine(config, is_client=True)
    conn.connect(0.0)
    sent = [(p, 0.0) for p in _decode_all(conn.datagrams_to_send(0.0))]
    while len(sent) < count:
        now = conn.get_timer()
        assert now is not None
        conn.handle_timer(now)
        sent += [(p, now) for p in _decode_all(conn.datagrams_to_send(now))]
    assert [p.type for p, _ in sent] == [PacketType.SYN] * count
    assert [p.packet_number for p, _ in sent] == list(range(count))
    return conn, sent


def _client_without_rtt_sample(config: Config) -> _Peer:
    """An ESTABLISHED client with no RTT sample, its handshake RTO backed off to max_rto.

    Its SYN went out HANDSHAKE_SAMPLES + 1 = 9 times, and the SYN_ACK echoes the first
    (the SYN the server got; its earlier SYN_ACKs were lost): that transmission is no
    longer remembered, so it gives no sample (Section 9.4).
    """
    conn, sent = _resent_syns(config, 9)
    first, _ = sent[0]
    now = sent[-1][1] + 0.05
    conn.receive_datagram(_syn_ack(first, echo=first.packet_number), now)
    assert conn.state is ConnectionState.ESTABLISHED
    assert conn.stats.srtt is None and conn.stats.rto == config.max_rto
    peer = _Peer(conn, SERVER_ID, 5001, first.seq + 1)
    peer.now = now
    peer.output()
    _drain_events(conn)
    return peer


def _pto(conn: Conn) -> float:
    """Section 9.2's base probe timeout, from the connection's current estimates."""
    config = conn.config
    stats = conn.stats
    if stats.srtt is None or stats.rttvar is None:
        return config.initial_rto
    pto = stats.srtt + max(4 * stats.rttvar, 0.001) + config.max_ack_delay
    return min(max(pto, config.min_rto), config.max_rto)


def _data(packets: list[Packet]) -> list[Packet]:
    return [p for p in packets if p.type in (PacketType.DATA, PacketType.FIN)]


def test_s9_1_rtt_sample_from_the_echoed_transmission() -> None:
    """§9.1-1: the echo of a new largest ack-eliciting transmission gives a sample, resends too."""
    config = Config(keepalive_interval=None, peer_timeout=100.0)
    peer = _client_with_rtt(config, 0.2)
    conn = peer.conn
    conn.send(b"data")
    (first,) = peer.output()
    (probe,) = _data(peer.fire())  # the probe timeout repeats it under a new packet number
    assert probe.seq == first.seq and probe.packet_number > first.packet_number
    sent_at = peer.now
    peer.now += 0.15
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1, largest=probe.packet_number))
    assert conn.stats.latest_rtt == pytest.approx(0.15)  # from the probe, not the original
    # An echo that is not new gives no sample, nor does one naming a pure ACK.
    peer.now += 0.5
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1, largest=probe.packet_number))
    assert conn.stats.latest_rtt == pytest.approx(0.15)
    peer.feed(peer.craft(PacketType.DATA, payload=b"in", flags=Flags.ACK_NOW))
    (ack,) = peer.output()
    assert ack.type is PacketType.ACK
    peer.now += 0.1
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1, largest=ack.packet_number))
    assert conn.stats.latest_rtt == pytest.approx(0.15)
    assert sent_at < peer.now


def test_s9_1_ack_delay_adjustment() -> None:
    """§9.1-2: the ack delay, capped at max_ack_delay, is subtracted unless below min_rtt."""
    config = Config(keepalive_interval=None, peer_timeout=100.0, max_ack_delay=0.025)
    peer = _client_with_rtt(config, 0.1)  # first sample: srtt 0.1, rttvar 0.05, min_rtt 0.1
    conn = peer.conn
    srtt, rttvar, min_rtt = 0.1, 0.05, 0.1
    una = peer.expected
    for rtt, delay in ((0.15, 0.03), (0.15, 0.02), (0.11, 0.02), (0.09, 0.02), (0.2, 0.0)):
        conn.send(b"x")
        (data,) = peer.output()
        peer.now += rtt
        una += 1
        units = int(delay / wire.ACK_DELAY_UNIT)
        peer.feed(peer.craft(PacketType.ACK, ack=una, largest=data.packet_number, ack_delay=units))
        min_rtt = min(min_rtt, rtt)
        held = min(units * wire.ACK_DELAY_UNIT, config.max_ack_delay)
        adjusted = rtt - held if rtt >= min_rtt + held else rtt
        rttvar = 0.75 * rttvar + 0.25 * abs(srtt - adjusted)
        srtt = 0.875 * srtt + 0.125 * adjusted
        stats = conn.stats
        assert stats.latest_rtt == pytest.approx(rtt)
        assert stats.min_rtt == pytest.approx(min_rtt)  # never adjusted
        assert (stats.srtt, stats.rttvar) == (pytest.approx(srtt), pytest.approx(rttvar))


def test_s9_1_handshake_sample_from_the_echoed_transmission() -> None:
    """§9.1-3: the handshake sample is timed from the SYN or SYN_ACK the echo names, resends too."""
    config = Config(keepalive_interval=None, peer_timeout=100.0)
    # Client: the SYN went out at 0 and 1.0 s; the SYN_ACK's echo says which one it answers.
    for echo, arrival, rtt in ((1, 1.05, 0.05), (0, 1.3, 1.3)):
        conn, sent = _resent_syns(config, 2)
        assert sent[1][1] == pytest.approx(1.0)
        conn.receive_datagram(_syn_ack(sent[0][0], echo=echo), arrival)
        assert conn.state is ConnectionState.ESTABLISHED
        stats = conn.stats
        assert (stats.latest_rtt, stats.srtt, stats.min_rtt) == pytest.approx((rtt, rtt, rtt))
        assert stats.rttvar == pytest.approx(rtt / 2)
    # An echo naming a transmission older than the newest HANDSHAKE_SAMPLES = 8: no sample.
    conn, sent = _resent_syns(config, 9)
    conn.receive_datagram(_syn_ack(sent[0][0], echo=0), sent[-1][1] + 0.05)
    assert conn.state is ConnectionState.ESTABLISHED and conn.stats.srtt is None
    conn, sent = _resent_syns(config, 9)
    conn.receive_datagram(_syn_ack(sent[0][0], echo=1), sent[-1][1] + 0.05)
    assert conn.stats.srtt == pytest.approx(sent[-1][1] + 0.05 - sent[1][1])
    # Server: a duplicate SYN at 0.3 s is answered by a second SYN_ACK; the ack's echo of it
    # gives 40 ms, not the 340 ms since the first SYN_ACK.
    server = _engine(config, is_client=False, isn=300)
    hs = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    syn_acks = []
    for pn, at in ((0, 0.0), (1, 0.3)):
        server.receive_datagram(_raw(ptype=1, cid=0, pn=pn, seq=50, payload=hs), at)
        syn_acks += _decode_all(server.datagrams_to_send(at))
    assert [p.packet_number for p in syn_acks] == [0, 1]
    cid = server.local_connection_id
    server.receive_datagram(_raw(ptype=4, cid=cid, pn=2, seq=51, ack=301, largest=1), 0.34)
    assert server.state is ConnectionState.ESTABLISHED
    assert (server.stats.srtt, server.stats.min_rtt) == pytest.approx((0.04, 0.04))


def test_s9_2_pto_deadline_from_last_send() -> None:
    """§9.2-1: the probe deadline is the last ack-eliciting send plus the clamped PTO formula."""
    for config in (
        Config(keepalive_interval=None),
        Config(keepalive_interval=None, max_rto=0.5, initial_rto=0.5),  # 0.61 s capped
        Config(keepalive_interval=None, min_rto=0.7, initial_rto=0.7),  # and floored
    ):
        peer = _client_with_rtt(config, 0.2)  # srtt 0.2, rttvar 0.1: 0.2 + 0.4 + 0.01 = 0.61
        expected = min(max(0.61, config.min_rto), config.max_rto)
        assert _pto(peer.conn) == pytest.approx(expected)
        peer.now = 1.0
        peer.conn.send(b"a")
        peer.output()
        assert peer.conn.get_timer() == pytest.approx(1.0 + expected)
        peer.now = 1.3
        peer.conn.send(b"b")
        peer.output()
        assert peer.conn.get_timer() == pytest.approx(1.3 + expected)  # from the last send
    # Before any RTT sample the PTO is initial_rto: a server that answered nine duplicate
    # SYNs, acknowledged by an echo of its first SYN_ACK, no longer remembered (Section 9.4),
    # takes no sample.
    config = Config(keepalive_interval=None, initial_rto=0.7, min_rto=0.1, peer_timeout=100.0)
    server = _engine(config, is_client=False, isn=300)
    hs = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    for pn in range(9):
        at = pn * 0.001
        server.receive_datagram(_raw(ptype=1, cid=0, pn=pn, seq=50, payload=hs), at)
        (syn_ack,) = _decode_all(server.datagrams_to_send(at))
        assert syn_ack.packet_number == pn
    cid = server.local_connection_id
    server.receive_datagram(_raw(ptype=4, cid=cid, pn=9, seq=51, ack=301, largest=0), 0.02)
    assert server.state is ConnectionState.ESTABLISHED and server.stats.srtt is None
    server.send(b"x")
    server.datagrams_to_send(2.0)
    assert server.get_timer() == pytest.approx(2.7)


def test_s9_2_pto_before_any_sample_after_a_resent_syn() -> None:
    """§9.2-1: before any sample the PTO is initial_rto, not the SYN's backed-off timeout."""
    config = Config(keepalive_interval=None, initial_rto=0.7, min_rto=0.1, peer_timeout=100.0)
    peer = _client_without_rtt_sample(config)  # handshake RTO backed off to max_rto = 2.0
    peer.now += 1.0
    peer.conn.send(b"x")
    peer.output()
    assert peer.conn.get_timer() == pytest.approx(peer.now + 0.7)


def test_s9_2_backoff_doubles_to_cap() -> None:
    """§9.2-2: successive probe timeouts wait PTO, 2 PTO, 4 PTO, ... capped at max_rto."""
    default = Config(keepalive_interval=None, peer_timeout=100.0, max_rto=2.0)
    floored = replace(default, min_rto=0.05)
    for config, rtt, pto in (
        (default, 0.2, 0.61),
        (default, 0.05, 0.16),
        (default, 0.0, 0.011),  # srtt 0: 1 ms + max_ack_delay, above the 5 ms floor
        (floored, 0.0, 0.05),  # a floor above the formula holds
    ):
        peer = _client_with_rtt(config, rtt)
        assert _pto(peer.conn) == pytest.approx(pto)
        peer.conn.send(b"x")
        peer.output()
        sent_at = [peer.now]
        for _ in range(5):
            if _data(peer.fire()):
                sent_at.append(peer.now)
        gaps = [b - a for a, b in itertools.pairwise(sent_at)]
        assert gaps == pytest.approx([min(pto * 2**i, 2.0) for i in range(5)])


def test_s9_2_acknowledgement_resets_backoff() -> None:
    """§9.2-3: an acknowledgement resets the backoff: the next expiry waits PTO again."""
    config = Config(keepalive_interval=None, peer_timeout=100.0)
    peer = _client_with_rtt(config, 0.2)
    conn = peer.conn
    for i in range(3):
        conn.send(b"%d" % i)
    peer.output()
    for _ in range(2):
        probes = _data(peer.fire())
    last_send = peer.now
    assert conn.get_timer() == pytest.approx(last_send + min(4 * _pto(conn), 2.0))
    # The first packet is acknowledged, the others still outstanding.
    peer.now += 0.2
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1, largest=probes[0].packet_number))
    assert conn.get_timer() == pytest.approx(last_send + _pto(conn))


def test_s9_3_probes_beyond_the_window() -> None:
    """§9.3-1: an expiry sends one or two probes whatever cwnd says: new data, old data, a PING."""
    config = Config(keepalive_interval=None, peer_timeout=100.0, initial_window=4)
    peer = _client_with_rtt(config, 0.1)
    conn = peer.conn
    for i in range(6):
        conn.send(b"%d" % i)
    una = peer.expected
    assert len(_data(peer.output())) == 4  # the window is full
    probes = _data(peer.fire())
    assert [peer.full(p.seq) - una for p in probes] == [4, 5]  # new data first
    assert peer.output() == []  # two probes, no more
    probes = _data(peer.fire())
    assert [peer.full(p.seq) - una for p in probes] == [0, 1]  # then the oldest again
    assert peer.output() == []
    assert conn.stats.probes_sent == 4
    # One packet outstanding, nothing queued: one probe.
    single = _client_with_rtt(config, 0.1)
    single.conn.send(b"only")
    (only,) = single.output()
    assert [p.seq for p in _data(single.fire())] == [only.seq]
    # No data to carry it: a PING.  (The keepalive PING awaits an answer; the PTO repeats it.)
    idle = _client_with_rtt(Config(keepalive_interval=1.0), 0.1)
    assert [p.type for p in idle.fire()] == [PacketType.PING]  # the keepalive
    keepalive_at = idle.now
    (probe,) = idle.fire()
    assert probe.type is PacketType.PING and probe.ack_now
    assert idle.now == pytest.approx(keepalive_at + _pto(idle.conn))


def test_s9_3_probes_and_retransmissions_ask_for_immediate_ack() -> None:
    """§9.3-2: probes and retransmitted DATA and FIN (loss or probe) carry ACK_NOW."""
    peer = _client_under_test(Config(keepalive_interval=None, congestion_control="fixed"))
    conn = peer.conn
    for i in range(5):
        conn.send(b"%d" % i)
    conn.close(0.0)
    first = peer.output()
    assert first and all(not p.ack_now for p in first)
    una = peer.expected
    # Seqs 3 and 4 arrived: 0 and 1 are three packet numbers below the echo, lost.
    peer.feed(
        peer.craft(PacketType.ACK, ack=una, sack=[(una + 3, una + 5)], largest=peer.pns[una + 4])
    )
    fast = _data(peer.output())
    assert [peer.full(p.seq) - una for p in fast] == [0, 1]
    assert all(p.ack_now for p in fast)
    resent = _data(peer.fire())  # seq 2 by the time threshold, then probes
    resent += _data(peer.fire())
    assert len(resent) == 3 and all(p.ack_now for p in resent)
    # The FIN alone outstanding (the echo names no newer packet, so nothing is judged lost):
    # the probe repeating it too.
    peer.feed(peer.craft(PacketType.ACK, ack=una + 5, largest=peer.pns[una + 4]))
    fin_again = [p for p in peer.fire() if p.type is PacketType.FIN]
    assert fin_again and all(p.ack_now for p in fin_again)


@pytest.mark.parametrize("cc", ["bbr", "cubic", "newreno"])
def test_s9_3_probe_timeout_declares_nothing_lost(cc: str) -> None:
    """§9.3-3: probe timeouts neither declare packets lost nor change the congestion window."""
    config = Config(
        keepalive_interval=None, peer_timeout=100.0, initial_window=4, congestion_control=cc
    )
    peer = _client_with_rtt(config, 0.1)
    conn = peer.conn
    for i in range(8):
        conn.send(b"%d" % i)
    peer.output()
    before = conn.stats
    flights = []
    for _ in range(6):
        peer.fire()
        stats = conn.stats
        assert (stats.cwnd, stats.ssthresh) == (before.cwnd, before.ssthresh)
        assert stats.fast_retransmits == 0
        flights.append(stats.packets_in_flight)
    assert conn.stats.timeouts == 6
    assert flights == sorted(flights) and flights[0] > before.packets_in_flight  # nothing left


def test_s9_4_handshake_timer() -> None:
    """§9.4-1: the SYN is resent initial_rto after it was sent, then after doubling waits."""
    config = Config(
        initial_rto=0.5, min_rto=0.1, max_rto=2.0, keepalive_interval=None, peer_timeout=100.0
    )
    conn = _engine(config, is_client=True)
    conn.connect(2.0)
    conn.datagrams_to_send(2.0)
    assert conn.get_timer() == pytest.approx(2.5)
    times = [2.0]
    now = 2.0
    for _ in range(6):
        timer = conn.get_timer()
        assert timer is not None
        now = timer
        conn.handle_timer(now)
        if any(p.type is PacketType.SYN for p in _decode_all(conn.datagrams_to_send(now))):
            times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.5, 1.0, 2.0, 2.0, 2.0, 2.0])
    # The server's SYN_ACK follows the same timer (twice on its own, Section 17.3).
    server = _engine(config, is_client=False)
    hs = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    server.receive_datagram(_raw(ptype=1, cid=0, seq=5, payload=hs), 1.0)
    server.datagrams_to_send(1.0)
    sent = []
    for _ in range(2):
        timer = server.get_timer()
        assert timer is not None
        server.handle_timer(timer)
        if server.datagrams_to_send(timer):
            sent.append(timer)
    assert sent == pytest.approx([1.5, 2.5])


def test_s9_5_retransmission_budget() -> None:
    """§9.5-1: more than max_retransmits timeouts without progress fail the connection."""
    config = Config(max_retransmits=2, keepalive_interval=None, peer_timeout=1000.0)
    peer = _client_under_test(config)
    conn = peer.conn
    conn.send(b"lost")
    peer.output()
    copies = 1
    for _ in range(10):
        if conn.get_timer() is None:
            break
        copies += len(_data(peer.fire()))
    failed = [e for e in _drain_events(conn) if isinstance(e, Failed)]
    assert len(failed) == 1
    assert failed[0].reason.startswith("peer unreachable")
    assert failed[0].undelivered == (0,)
    assert copies == 3  # the original and max_retransmits probes
    # An acknowledgement in between starts the count again.
    again = _client_under_test(config)
    again.conn.send(b"a")
    again.conn.send(b"b")
    again.output()
    again.fire()
    again.fire()
    first = again.pns[again.expected]  # the first transmission of "a": nothing else lost
    again.feed(again.craft(PacketType.ACK, ack=again.expected + 1, largest=first))
    again.fire()
    again.fire()
    assert again.conn.state is ConnectionState.ESTABLISHED
    again.fire()
    assert _state(again.conn) is ConnectionState.FAILED


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


def test_s9_6_textbook_policy_data_schedule() -> None:
    """§9.6-2: textbook, short RTT: unacked DATA goes at 0, 0.1, 0.3, 0.7, 1.5 s; fails at 3.1 s."""
    for rtt in (0.0, 0.03):
        peer = _client_with_rtt(Config.textbook(keepalive_interval=None), rtt)
        assert _pto(peer.conn) <= 0.1
        start = peer.now
        peer.conn.send(b"unanswered")
        sent_at = [peer.now - start] if _data(peer.output()) else []
        for _ in range(20):
            if peer.conn.get_timer() is None:
                break
            if _data(peer.fire()):
                sent_at.append(peer.now - start)
        assert sent_at == pytest.approx([0.0, 0.1, 0.3, 0.7, 1.5])
        assert peer.now - start == pytest.approx(3.1)
        (failed,) = _drain_events(peer.conn)
        assert isinstance(failed, Failed) and failed.reason.startswith("peer unreachable")


# --- §10 loss detection ------------------------------------------------------------------------


def test_s10_1_packet_threshold_triggers_retransmission() -> None:
    """§10.1-1: a packet 3 numbers below the largest echoed is lost and resent before new data."""
    # "fixed" sends what the windows allow at once; the controllers below pace the resend.
    peer = _client_under_test(Config(keepalive_interval=None, congestion_control="fixed"))
    conn = peer.conn
    peer.feed(peer.craft(PacketType.ACK, window=5))
    for i in range(8):
        conn.send(b"%d" % i)
    assert len(peer.output()) == 5
    una = peer.expected
    # Seq 3 arrived: the transmission of seq 0 is three packet numbers below it, 1 and 2 not.
    peer.feed(
        peer.craft(
            PacketType.ACK, ack=una, sack=[(una + 3, una + 4)], largest=peer.pns[una + 3], window=7
        )
    )
    out = _data(peer.output())
    assert [peer.full(p.seq) - una for p in out] == [0, 5, 6]  # the lost one before new data
    assert out[0].ack_now and out[0].packet_number > peer.pns[una + 4]
    assert conn.stats.timeouts == 0 and conn.stats.fast_retransmits == 1
    # With a congestion controller the resend waits for pacing, but still goes first.
    for cc in ("bbr", "cubic", "newreno"):
        other = _client_with_rtt(Config(keepalive_interval=None, congestion_control=cc), 0.05)
        for i in range(8):
            other.conn.send(b"%d" % i)
        other.output()
        una = other.expected
        other.now += 0.05
        other.feed(
            other.craft(
                PacketType.ACK, ack=una, sack=[(una + 3, una + 4)], largest=other.pns[una + 3]
            )
        )
        assert other.conn.stats.fast_retransmits == 1, cc
        sent = _data(other.output())
        while not sent:
            sent = _data(other.fire())
        assert peer.full(sent[0].seq, una) - una == 0, cc


def test_s10_1_fewer_than_three_is_not_loss() -> None:
    """§10.1-2: a packet less than 3 below the largest echoed waits for the time threshold."""
    peer = _client_with_rtt(Config(keepalive_interval=None, congestion_control="fixed"), 0.1)
    conn = peer.conn
    for i in range(3):
        conn.send(b"%d" % i)
    peer.output()
    una = peer.expected
    sent_at = peer.now
    peer.now += 0.01  # well inside 9/8 RTT
    peer.feed(
        peer.craft(PacketType.ACK, ack=una, sack=[(una + 2, una + 3)], largest=peer.pns[una + 2])
    )
    assert _data(peer.output()) == []
    peer.feed(
        peer.craft(PacketType.ACK, ack=una, sack=[(una + 1, una + 3)], largest=peer.pns[una + 2])
    )
    assert _data(peer.output()) == []
    assert conn.stats.fast_retransmits == 0
    timer = conn.get_timer()  # the loss timer: the time threshold is still ahead
    assert timer is not None and timer > peer.now > sent_at


def test_s10_1_time_threshold() -> None:
    """§10.1-3: a packet below the largest echoed is lost 9/8 max(srtt, latest) after its send."""
    peer = _client_with_rtt(Config(keepalive_interval=None, congestion_control="fixed"), 0.1)
    conn = peer.conn
    for i in range(3):
        conn.send(b"%d" % i)
    peer.output()
    una = peer.expected
    sent_at = peer.now
    peer.now += 0.1
    peer.feed(
        peer.craft(PacketType.ACK, ack=una, sack=[(una + 1, una + 2)], largest=peer.pns[una + 1])
    )
    assert _data(peer.output()) == []
    stats = conn.stats
    assert stats.srtt is not None and stats.latest_rtt is not None
    deadline = sent_at + 9 / 8 * max(stats.srtt, stats.latest_rtt)
    assert conn.get_timer() == pytest.approx(deadline)
    resent = _data(peer.fire())
    assert [peer.full(p.seq) - una for p in resent] == [0]  # seq 2 was not below the echo
    assert resent[0].ack_now and conn.stats.fast_retransmits == 1 and conn.stats.timeouts == 0


class _Recording(NewReno):
    """NewReno that records what the sender tells it (the interface of Section 12.1)."""

    name = "spec-recording"
    acks: ClassVar[list[tuple[float, int, float, RateSample | None]]] = []

    def on_ack(
        self,
        now: float,
        acked: int,
        newest_acked_sent_time: float,
        in_flight: int,
        srtt: float | None,
        min_rtt: float | None,
        sample: RateSample | None,
    ) -> None:
        self.acks.append((now, acked, newest_acked_sent_time, sample))
        super().on_ack(now, acked, newest_acked_sent_time, in_flight, srtt, min_rtt, sample)


register(_Recording)


def _lose_first_of_five(cc: str) -> tuple[_Peer, int]:
    """Five packets out, the first declared lost (seqs 1..4 SACKed); the peer and ``una``."""
    peer = _client_with_rtt(Config(keepalive_interval=None, congestion_control=cc), 0.1)
    conn = peer.conn
    for i in range(5):
        conn.send(b"%d" % i)
    peer.output()
    una = peer.expected
    peer.now += 0.1
    peer.feed(
        peer.craft(PacketType.ACK, ack=una, sack=[(una + 1, una + 5)], largest=peer.pns[una + 4])
    )
    assert conn.stats.fast_retransmits == 1
    return peer, una


def test_s10_2_spurious_retransmission_undone() -> None:
    """§10.2-1: data acked by an earlier transmission than its resend: counted, reduction undone."""
    for resend in (False, True):
        peer, una = _lose_first_of_five("newreno")
        conn = peer.conn
        before = conn.stats  # after the reduction
        assert before.ssthresh != float("inf")
        if resend:
            while not (sent := _data(peer.output())):
                peer.fire()  # pacing holds the resend back for a moment
            assert peer.full(sent[0].seq) == una
        # The original arrives late: the peer acknowledges seq 0, echoing no newer packet.
        peer.feed(peer.craft(PacketType.ACK, ack=una + 5, largest=peer.pns[una + 4]))
        stats = conn.stats
        assert stats.spurious_retransmissions == 1, resend
        assert stats.ssthresh == float("inf") and stats.cwnd == 2 * before.cwnd, resend
        # Once: a repeat of that ack changes nothing.
        peer.feed(peer.craft(PacketType.ACK, ack=una + 5, largest=peer.pns[una + 4]))
        assert conn.stats.spurious_retransmissions == 1 and conn.stats.cwnd == stats.cwnd
    # A loss that was real (the echo names the resend) is not undone.
    peer, una = _lose_first_of_five("newreno")
    while not (sent := _data(peer.output())):
        peer.fire()
    reduced = peer.conn.stats
    peer.now += 0.1
    peer.feed(peer.craft(PacketType.ACK, ack=una + 5, largest=sent[0].packet_number))
    stats = peer.conn.stats
    assert stats.spurious_retransmissions == 0 and stats.ssthresh == reduced.ssthresh


def test_s10_2_transmission_above_the_echo_gives_no_samples() -> None:
    """§10.2-2: a transmission above the echo of the ack of its data gives no RTT or rate sample."""
    peer, una = _lose_first_of_five("spec-recording")
    conn = peer.conn
    while not (sent := _data(peer.output())):
        peer.fire()
    resend = sent[0]
    resent_at = peer.now
    latest = conn.stats.latest_rtt
    _Recording.acks.clear()
    peer.now += 0.02
    peer.feed(peer.craft(PacketType.ACK, ack=una + 5, largest=peer.pns[una + 4]))
    assert resend.packet_number > peer.pns[una + 4]
    assert conn.stats.latest_rtt == latest  # no RTT sample
    ((_, acked, newest_sent, sample),) = _Recording.acks
    assert acked == 1  # the resend leaves the flight ...
    assert newest_sent < resent_at and sample is None  # ... but gives no delivery-rate sample
    assert conn.stats.packets_in_flight == 0


def _outage(
    cc: str, *, sampled: bool = True, peer_sends: bool = False, ptos: int = 4
) -> tuple[_Peer, list[int], list[tuple[Packet, float]]]:
    """A flight and the probes of ``ptos`` probe timeouts, none of them answered.

    ``sampled``: an echo gave an RTT sample first (the handshake's does not start the
    persistent-congestion period).  ``peer_sends``: meanwhile the peer's DATA arrives (its
    acks stale), so the engine's pure ACKs take packet numbers between the lost ones.
    Returns the scripted peer, cwnd after the flight and after each expiry, and every DATA
    sent with its send time.
    """
    config = Config(
        keepalive_interval=None, peer_timeout=100.0, congestion_control=cc, initial_window=4
    )
    peer = _client_with_rtt(config, 0.1)
    conn = peer.conn
    una = peer.expected
    if sampled:
        conn.send(b"first")
        peer.output()
        peer.now += 0.1
        peer.feed(peer.craft(PacketType.ACK, ack=una + 1))
        una += 1
    echo = peer.largest
    for i in range(20):
        conn.send(b"%d" % i)
    sent = [(p, peer.now) for p in _data(peer.output())]
    windows = [conn.stats.cwnd]
    timeouts = conn.stats.timeouts
    acks = 0
    while conn.stats.timeouts < timeouts + ptos:  # pacing releases fire in between
        sent += [(p, peer.now) for p in _data(peer.fire())]
        if conn.stats.timeouts > timeouts + len(windows) - 1:
            windows.append(conn.stats.cwnd)
        if peer_sends:
            peer.feed(peer.craft(PacketType.DATA, payload=b"in", ack=una, largest=echo))
            peer.feed(peer.craft(PacketType.DATA, payload=b"in", ack=una, largest=echo))
            acks += sum(p.type is PacketType.ACK for p in peer.output())
    assert acks >= ptos if peer_sends else acks == 0
    return peer, windows, sent


def _ack_only(peer: _Peer, *acked: Packet) -> None:
    """The peer reports receiving only ``acked`` (by SACK), the last of them the largest."""
    edges = sorted(peer.full(p.seq) for p in acked)
    sack = [(seq, seq + 1) for seq in edges]
    largest = acked[-1].packet_number
    peer.feed(peer.craft(PacketType.ACK, ack=peer.expected + 1, sack=sack, largest=largest))


@pytest.mark.parametrize("cc", ["bbr", "cubic", "newreno"])
def test_s10_3_persistent_congestion_takes_the_window_to_the_minimum(cc: str) -> None:
    """§10.3-1: a run of losses spanning 3 PTO takes cwnd to MIN_WINDOW, and nothing less does."""
    peer, windows, sent = _outage(cc)
    assert len(windows) == 5 and len(set(windows)) == 1 and windows[0] > MIN_WINDOW  # PTOs: no
    _ack_only(peer, sent[-1][0])
    assert peer.conn.stats.cwnd == MIN_WINDOW
    # The pure ACKs the engine sent meanwhile take packet numbers between the lost DATA:
    # they do not break the run.
    peer, _, sent = _outage(cc, peer_sends=True)
    pns = [p.packet_number for p, _ in sent]
    assert pns != list(range(pns[0], pns[-1] + 1))
    _ack_only(peer, sent[-1][0])
    assert peer.conn.stats.cwnd == MIN_WINDOW
    # The same losses before any sample from an echo: the period has not started.
    peer, _, sent = _outage(cc, sampled=False)
    _ack_only(peer, sent[-1][0])
    assert peer.conn.stats.cwnd > MIN_WINDOW
    # Acknowledged packets break the run: losses spanning 3 PTO in runs that each span less.
    peer, _, sent = _outage(cc, ptos=3)
    groups = [list(g) for _, g in itertools.groupby(sent, key=lambda entry: entry[1])]
    first, second, third = groups[-3:]  # the probes of the three expiries
    acked = [first[0], second[-1], third[-1]]
    _ack_only(peer, *(p for p, _ in acked))
    span = 3 * _pto(peer.conn)
    runs = [list(g) for ok, g in itertools.groupby(sent[:-1], key=lambda e: e in acked) if not ok]
    assert sent[-2][1] - sent[0][1] >= span
    assert len(runs) == 3 and all(run[-1][1] - run[0][1] < span for run in runs)
    assert peer.conn.stats.cwnd > MIN_WINDOW
    # An ordinary loss event (one packet of a flight) does not.
    lossy, _ = _lose_first_of_five(cc)
    assert lossy.conn.stats.cwnd > MIN_WINDOW


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


def _paced_client(cc: str, burst: int, rtt: float = 0.05) -> _Peer:
    """A client with an RTT sample (NewReno and CUBIC pace from their first one) and a wide cwnd."""
    config = Config(
        keepalive_interval=None,
        peer_timeout=100.0,
        congestion_control=cc,
        initial_window=40,
        pacing_burst=burst,
    )
    peer = _client_with_rtt(config, rtt)
    una = peer.expected
    peer.conn.send(b"first")
    peer.output()
    peer.now += rtt
    peer.feed(peer.craft(PacketType.ACK, ack=una + 1))
    assert peer.conn.stats.pacing_rate is not None
    assert peer.conn.stats.cwnd > burst
    return peer


def _bucket(rate: float, burst: int) -> int:
    """Section 12.6: whole packets the bucket holds, a millisecond at ``rate`` within [2, burst]."""
    return int(min(max(rate * 0.001, 2.0), burst) + 1e-9)


@pytest.mark.parametrize(
    ("cc", "burst", "rtt", "bucket"),
    [
        ("bbr", 10, 0.001, 10),  # fast: a millisecond is more than pacing_burst
        ("bbr", 3, 0.001, 3),
        ("cubic", 5, 0.001, 5),
        ("newreno", 4, 0.001, 4),
        ("newreno", 20, 0.005, 10),  # 1.25 x 41 packets per 5 ms: a millisecond's worth
        ("bbr", 10, 0.05, 2),  # slow: two packets at a time
        ("cubic", 5, 0.05, 2),
        ("newreno", 1, 0.05, 1),  # pacing_burst below two still caps
    ],
)
def test_s12_6_pacing_burst(cc: str, burst: int, rtt: float, bucket: int) -> None:
    """§12.6-1: with a pacing rate, at most pacing_burst packets leave back to back."""
    peer = _paced_client(cc, burst, rtt)
    conn = peer.conn
    rate = conn.stats.pacing_rate
    assert rate is not None and _bucket(rate, burst) == bucket <= burst
    for i in range(100):
        conn.send(b"%d" % i)
    assert len(_data(peer.output())) == bucket
    assert _data(peer.output()) == []  # the same instant, another call: nothing more
    # A driver that wakes up late finds at most a bucket's worth.
    peer.now += 0.1
    assert len(_data(peer.output())) == bucket
    # A fresh connection's bucket starts full: pacing_burst of a larger initial window leave
    # (every controller but "fixed" paces from its first packet).
    fresh = _client_under_test(replace(conn.config, initial_window=burst + 5))
    for i in range(100):
        fresh.conn.send(b"%d" % i)
    assert fresh.conn.stats.pacing_rate is not None
    assert len(_data(fresh.output())) == burst
    assert _data(fresh.output()) == []


def test_s12_6_pacing_is_a_timer() -> None:
    """§12.6-2: while pacing holds packets back, get_timer() is when the bucket is full again."""
    for cc, burst, rtt in (("bbr", 10, 0.05), ("newreno", 8, 0.001), ("cubic", 30, 0.05)):
        peer = _paced_client(cc, burst, rtt)
        conn = peer.conn
        for i in range(100):
            conn.send(b"%d" % i)
        assert _data(peer.output())
        releases = 0
        while True:
            stats = conn.stats
            rate = stats.pacing_rate
            assert rate is not None
            capacity = min(max(rate * 0.001, 2.0), burst)
            if stats.packets_in_flight + capacity > stats.cwnd:
                break  # from here on the window, not pacing, holds packets back
            releases += 1
            timer = conn.get_timer()
            assert timer is not None and peer.now < timer <= peer.now + capacity / rate + 1e-9
            peer.now = timer
            conn.handle_timer(timer)
            assert len(_data(peer.output())) == int(capacity + 1e-9)
        assert releases >= 3


# --- §13 fragmentation ---------------------------------------------------------------------


def test_s13_1_fragment_numbering() -> None:
    """§13.1-1: max_payload-byte fragments, fragments_left down to 0; empty message = 1 DATA."""
    peer = _client_under_test(
        Config(max_datagram_size=1400, keepalive_interval=None), peer_mds=1250
    )
    conn = peer.conn
    size = 1250 - wire.OVERHEAD  # the effective datagram size is the peer's 1250
    conn.send(b"q" * (3 * size - 4))
    conn.send(b"")
    conn.send(b"r" * size)
    out = [p for p in peer.output() if p.type is PacketType.DATA]
    assert [(len(p.payload), p.fragments_left) for p in out] == [
        (size, 2),
        (size, 1),
        (size - 4, 0),
        (0, 0),
        (size, 0),
    ]
    seqs = [peer.full(p.seq) for p in out]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert b"".join(p.payload for p in out[:3]) == b"q" * (3 * size - 4)


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


# --- §15 versioning ---------------------------------------------------------------------------


def _version_1_datagram(ptype: int, cid: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    """A datagram in the layout of version 1 (revision 1's 28-byte header)."""
    header = struct.pack(">BBBBQIIHIH", 1, ptype, 0, 0, cid, seq, ack, 100, 0, len(payload))
    return _with_crc(header + payload)


def test_s15_1_other_versions_dropped_silently() -> None:
    """§15.1-1: a datagram of any version but 6 is dropped with no reply, in every state."""
    listener = _engine(None, is_client=False)
    handshake = wire.encode_handshake(wire.Handshake(CLIENT_ID, 1400))
    # A genuine version-1 SYN (42 bytes, CRC valid) and version-4 layouts with other versions.
    syns = [_version_1_datagram(1, 0, 77, 0, handshake)] + [
        _raw(version=version, ptype=1, cid=0, payload=handshake)
        for version in (0, 1, 2, 3, 4, 5, 7, 0x7F, 0xFF)
    ]
    for syn in syns:
        before = _snapshot(listener)
        listener.receive_datagram(syn, 0.0)
        _assert_dropped_without_effect(listener, before, 0.0)
        assert listener.state is ConnectionState.LISTEN
    peer = _server_under_test()
    for version in (0, 1, 2, 3, 4, 5, 7, 0xFF):
        for ptype, payload in ((3, b"data"), (4, b""), (5, b""), (6, b""), (7, PEER_TOKEN)):
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
    for data in (  # version-1 DATA and ACK (32 bytes: shorter than a version-3 header)
        _version_1_datagram(3, peer.engine_id, peer.next_seq, peer.expected, b"v1 data"),
        _version_1_datagram(4, peer.engine_id, peer.next_seq, peer.expected),
    ):
        before = _snapshot(peer.conn)
        peer.feed(data)
        _assert_dropped_without_effect(peer.conn, before, peer.now)
    # The same datagram as version 3 is accepted.
    peer.feed(
        _raw(ptype=3, cid=peer.engine_id, seq=peer.next_seq, ack=peer.expected, payload=b"v2")
    )
    assert _drain_events(peer.conn) == [_received(b"v2")]


def test_s17_3_syn_ack_not_larger_than_syn() -> None:
    """§17.3-1: the SYN_ACK answering a SYN is never larger than that SYN (no amplification)."""
    for client_mds, server_mds in ((1400, 1400), (1200, 65507), (65507, 1200)):
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
