"""Unit tests of rudp.core.wire: layout, validation order, sequence expansion (spec 3 and 7)."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp.core import endpoint, wire, wire_reference
from rudp.core.connection import SansIOConnection
from rudp.core.state import ConnectionState
from rudp.core.wire import Packet, PacketType
from rudp.errors import BadPacket


def data_packet(payload: bytes = b"abc", **fields: object) -> Packet:
    base = Packet(PacketType.DATA, 0, 0x0123456789ABCDEF, 7, 9, 100, 0, (), payload)
    return base._replace(**fields)


def with_valid_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_derived_struct_matches_construct_sizes() -> None:
    """Section 3.1: the fast codec is derived from the construct schema, field for field."""
    assert wire.HEADER.sizeof() == wire.HEADER_SIZE == 38
    assert wire.SACK_BLOCK.sizeof() == wire.SACK_SIZE == 8
    assert wire.HANDSHAKE.sizeof() == wire.HANDSHAKE_SIZE == 26
    assert wire.CHECKSUM_SIZE == 4
    assert wire.OVERHEAD == wire.HEADER_SIZE + wire.CHECKSUM_SIZE == 42
    assert wire.HEADER_STRUCT.format == ">BBBBQIIIIHHIH"
    names = [subcon.name for subcon in wire.HEADER.subcons]
    assert names == [
        "version",
        "type",
        "flags",
        "sack_count",
        "connection_id",
        "packet_number",
        "seq",
        "ack",
        "largest_received",
        "ack_delay",
        "window",
        "fragments_left",
        "payload_length",
    ]


def test_packet_keeps_its_field_order_with_the_new_fields_last() -> None:
    """Section 3.1: ``Packet`` appends packet_number, largest_received, ack_delay (default 0)."""
    assert Packet._fields[-3:] == ("packet_number", "largest_received", "ack_delay")
    packet = Packet(PacketType.ACK, 0, 1, 2, 3, 4, 0, (), b"")
    assert (packet.packet_number, packet.largest_received, packet.ack_delay) == (0, 0, 0)
    assert wire.VERSION == 6


def test_field_offsets_are_big_endian_as_specified() -> None:
    """Section 3.1: the wire-format table's offsets and byte order."""
    packet = data_packet(
        b"xy",
        flags=1,
        packet_number=0x0A0B0C0D,
        seq=0x11223344,
        ack=0x55667788,
        largest_received=0x1A1B1C1D,
        ack_delay=0xCAFE,
        window=0x99AA,
        fragments_left=0xBBCCDDEE,
        sack=((0xA0A1A2A3, 0xB0B1B2B3),),
    )
    datagram = wire.encode(packet)
    assert datagram[0] == wire.VERSION == 6
    assert datagram[1] == PacketType.DATA
    assert datagram[2] == 1
    assert datagram[3] == 1
    assert datagram[4:12] == bytes.fromhex("0123456789abcdef")
    assert datagram[12:16] == bytes.fromhex("0a0b0c0d")
    assert datagram[16:20] == bytes.fromhex("11223344")
    assert datagram[20:24] == bytes.fromhex("55667788")
    assert datagram[24:28] == bytes.fromhex("1a1b1c1d")
    assert datagram[28:30] == bytes.fromhex("cafe")
    assert datagram[30:32] == bytes.fromhex("99aa")
    assert datagram[32:36] == bytes.fromhex("bbccddee")
    assert datagram[36:38] == b"\x00\x02"
    assert datagram[38:46] == bytes.fromhex("a0a1a2a3b0b1b2b3")
    assert datagram[46:48] == b"xy"
    assert datagram[48:] == zlib.crc32(datagram[:48]).to_bytes(4, "big")
    assert len(datagram) == wire.encoded_size(packet) == wire.OVERHEAD + wire.SACK_SIZE + 2
    assert wire.decode(datagram) == packet == wire_reference.reference_decode(datagram)


@pytest.mark.parametrize("size", [0, 1, wire.OVERHEAD - 1])
def test_short_datagrams_are_rejected(size: int) -> None:
    """Section 3.3: a datagram shorter than header plus checksum is rejected first."""
    with pytest.raises(BadPacket, match="shorter"):
        wire.decode(bytes(size))


def test_checksum_is_checked_before_fields() -> None:
    """Section 3.3: an unknown version with a bad CRC is reported as a CRC failure."""
    datagram = bytearray(wire.encode(data_packet()))
    datagram[0] = 99
    with pytest.raises(BadPacket, match="checksum"):
        wire.decode(bytes(datagram))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, 2, "version"),
        (0, 3, "version"),
        (0, 4, "version"),
        (0, 5, "version"),
        (0, 7, "version"),
        (1, 0, "type"),
        (1, 12, "type"),
        (1, 200, "type"),
        (2, 0x80, "reserved"),
    ],
)
def test_field_rules_reject_with_valid_crc(offset: int, value: int, message: str) -> None:
    """Section 3.3: version, type and reserved flags are checked even when the CRC is valid."""
    body = bytearray(wire.encode(data_packet())[:-4])
    body[offset] = value
    datagram = with_valid_crc(bytes(body))
    with pytest.raises(BadPacket, match=message):
        wire.decode(datagram)
    with pytest.raises(BadPacket):
        wire_reference.reference_decode(datagram)


def test_length_fields_must_match_datagram_size() -> None:
    """Section 3.3: payload_length and sack_count must account for every byte."""
    body = bytearray(wire.encode(data_packet(b"abcd"))[:-4])
    struct.pack_into(">H", body, 36, 3)  # payload_length
    with pytest.raises(BadPacket, match="length"):
        wire.decode(with_valid_crc(bytes(body)))


def test_version_1_datagrams_are_rejected() -> None:
    """Section 15.1: a version-1 datagram (28-byte header) is rejected, whatever its length."""
    handshake = wire.encode_handshake(wire.Handshake(5, 1400))
    for ptype, payload in ((PacketType.SYN, handshake), (PacketType.DATA, b"x" * 20)):
        header = struct.pack(">BBBBQIIHIH", 1, ptype, 0, 0, 7, 1, 2, 10, 0, len(payload))
        datagram = with_valid_crc(header + payload)  # a CRC-valid version-1 datagram
        assert len(datagram) >= wire.OVERHEAD
        with pytest.raises(BadPacket, match="version"):
            wire.decode(datagram)
        with pytest.raises(BadPacket):
            wire_reference.reference_decode(datagram)
    ack = with_valid_crc(struct.pack(">BBBBQIIHIH", 1, PacketType.ACK, 0, 0, 7, 1, 2, 10, 0, 0))
    assert len(ack) == 32 == wire.STATELESS_RESET_SIZE  # read as a (version-1) stateless reset
    with pytest.raises(BadPacket, match="version"):
        wire.decode(ack)


def test_control_packets_carry_no_payload() -> None:
    """Section 4: ACK, PING, FIN and RESET carry no payload and no fragment information."""
    ack = Packet(PacketType.ACK, 0, 1, 2, 3, 4, 0, (), b"junk")
    with pytest.raises(BadPacket):
        wire.decode(wire.encode(ack))


def test_handshake_payload_round_trip() -> None:
    """Section 6.1: SYN and SYN_ACK carry exactly one handshake block."""
    block = wire.Handshake(0xFEEDFACECAFEBEEF, 1400)
    payload = wire.encode_handshake(block)
    assert wire.decode_handshake(payload) == block
    syn = Packet(PacketType.SYN, 0, 0, 1, 0, 10, 0, (), payload)
    assert wire.decode(wire.encode(syn)) == syn
    with pytest.raises(BadPacket):
        wire.decode(wire.encode(syn._replace(payload=payload + b"!")))


def test_encode_refuses_unrepresentable_packets() -> None:
    """A local bug (too many SACK blocks, reserved flags) is a ValueError, never sent."""
    with pytest.raises(ValueError, match="SACK"):
        wire.encode(data_packet(sack=((1, 2),) * (wire.MAX_SACK_BLOCKS + 1)))
    with pytest.raises(ValueError, match="reserved"):
        wire.encode(data_packet(flags=0x40))


@given(
    expected=st.integers(min_value=1 << 31, max_value=1 << 60),
    offset=st.integers(min_value=-(1 << 31) + 1, max_value=(1 << 31) - 1),
)
def test_expand_seq_recovers_any_value_within_half_the_space(expected: int, offset: int) -> None:
    """Section 7: a 32-bit wire value expands to the full number nearest the expected one."""
    actual = expected + offset
    assert wire.expand_seq(wire.wire_seq(actual), expected) == actual


def test_expand_seq_across_the_wrap() -> None:
    """Section 7: values just past 2**32 expand upward, just below expand downward."""
    top = (1 << 32) - 2
    assert wire.expand_seq(3, top) == (1 << 32) + 3
    assert wire.expand_seq(top - 1, (1 << 32) + 3) == top - 1


# --- the core's encoders: the same layout as ``encode``, fields in, full sequence numbers --


_FULL = st.integers(0, 1 << 40)
"""A full (unbounded) sequence or packet number, as the core passes them."""


@given(
    ptype=st.sampled_from([PacketType.ACK, PacketType.PING, PacketType.RESET]),
    token=st.binary(min_size=wire.RESET_TOKEN_SIZE, max_size=wire.RESET_TOKEN_SIZE),
    flags=st.sampled_from([0, int(wire.Flags.ACK_NOW)]),
    connection_id=st.integers(0, (1 << 64) - 1),
    packet_number=_FULL,
    seq=_FULL,
    ack=_FULL,
    largest=_FULL,
    ack_delay=st.integers(0, 0xFFFF),
    window=st.integers(0, 0xFFFF),
    sack=st.lists(st.tuples(_FULL, _FULL), max_size=wire.MAX_SACK_BLOCKS),
)
def test_encode_fields_is_encode_with_32_bit_numbers(
    ptype: PacketType,
    flags: int,
    connection_id: int,
    packet_number: int,
    seq: int,
    ack: int,
    largest: int,
    ack_delay: int,
    window: int,
    sack: list[tuple[int, int]],
    token: bytes,
) -> None:
    """Sections 7.3 and 8.7: only the low 32 bits of seq, ack, SACK edges and packet numbers go."""
    acks = wire.AckFields(ack, window, largest, ack_delay)
    payload = token if ptype is PacketType.RESET else b""
    datagram = wire.encode_fields(
        ptype, flags, connection_id, packet_number, seq, acks, payload, sack=sack
    )
    wire_sack = tuple((wire.wire_seq(s), wire.wire_seq(e)) for s, e in sack)
    packet = Packet(
        ptype,
        flags,
        connection_id,
        wire.wire_seq(seq),
        wire.wire_seq(ack),
        window,
        0,
        wire_sack,
        payload,
        wire.wire_seq(packet_number),
        wire.wire_seq(largest),
        ack_delay,
    )
    assert datagram == wire.encode(packet) == wire_reference.reference_encode(packet)
    assert wire.decode(datagram) == packet
    assert wire.encoded_size(packet) == len(datagram)
    assert wire.decode(datagram).ack_now == bool(flags)


def test_encode_fields_carries_a_handshake_block() -> None:
    """Section 6.1: SYN and SYN_ACK go through ``encode_fields`` with their block as payload."""
    block = wire.encode_handshake(wire.Handshake(0xFEED, 1400))
    acks = wire.AckFields(0, 1024, 0, 0)
    datagram = wire.encode_fields(PacketType.SYN, 0, 0, 0, (1 << 32) + 77, acks, block)
    assert wire.decode(datagram) == Packet(PacketType.SYN, 0, 0, 77, 0, 1024, 0, (), block)
    assert len(datagram) == wire.OVERHEAD + wire.HANDSHAKE_SIZE == 68


def test_encode_data_batch_is_encode_per_packet() -> None:
    """DATA and FIN datagrams of one batch share the acks; each has its own packet number."""
    payload = b"fragment"
    batch = [
        ((1 << 32) + 40, (1 << 32) + 5, payload, 2, False, False),
        (41, 7, memoryview(payload)[2:], 0, False, True),
        (42, 8, b"", 0, True, False),
    ]
    acks = wire.AckFields((1 << 33) + 9, 300, (1 << 32) + 17, 1250)
    datagrams = wire.encode_data_batch(0xABC, acks, batch)
    now = int(wire.Flags.ACK_NOW)
    expected = [
        Packet(PacketType.DATA, 0, 0xABC, 5, 9, 300, 2, (), payload, 40, 17, 1250),
        Packet(PacketType.DATA, now, 0xABC, 7, 9, 300, 0, (), payload[2:], 41, 17, 1250),
        Packet(PacketType.FIN, 0, 0xABC, 8, 9, 300, 0, (), b"", 42, 17, 1250),
    ]
    assert datagrams == [wire_reference.reference_encode(p) for p in expected]
    assert [wire.decode(d) for d in datagrams] == expected
    assert [wire.encoded_size(p) for p in expected] == [len(d) for d in datagrams]


_U64 = st.integers(0, (1 << 62) - 1)


@given(
    connection_id=st.integers(0, 0xFFFFFFFF),
    acks=st.tuples(_U64, st.integers(0, 0xFFFF), _U64, st.integers(0, 0xFFFF)),
    packets=st.lists(
        st.tuples(
            _U64, _U64, st.binary(max_size=64), st.integers(0, 0xFFFF), st.booleans(), st.booleans()
        ),
        max_size=8,
    ),
)
def test_encode_data_batch_lays_out_what_pack_lays_out(
    connection_id: int,
    acks: tuple[int, int, int, int],
    packets: list[tuple[int, int, bytes, int, bool, bool]],
) -> None:
    """The batch encoder's inlined layout gives the bytes of the reference encoder."""
    ack, window, largest, delay = acks
    datagrams = wire.encode_data_batch(connection_id, wire.AckFields(*acks), packets)
    expected = [
        wire_reference.reference_encode(
            Packet(
                PacketType.FIN if fin else PacketType.DATA,
                int(wire.Flags.ACK_NOW) if now else 0,
                connection_id,
                seq & 0xFFFFFFFF,
                ack & 0xFFFFFFFF,
                window,
                left,
                (),
                payload,
                pn & 0xFFFFFFFF,
                largest & 0xFFFFFFFF,
                delay,
            )
        )
        for pn, seq, payload, left, fin, now in packets
    ]
    assert datagrams == expected


@pytest.mark.parametrize(
    ("seconds", "units"),
    [
        (0.0, 0),
        (7.9e-6, 0),
        (8e-6, 1),
        (0.01, 1250),
        (0.524279, 65534),
        (0.53, 0xFFFF),
        (5.0, 0xFFFF),
    ],
)
def test_ack_delay_units(seconds: float, units: int) -> None:
    """Section 8.7: the ack delay in 8 us units, rounded down, clamped to the 16-bit field."""
    assert wire.ACK_DELAY_UNIT == 8e-6
    assert wire.ack_delay_units(seconds) == units


def test_a_routed_syn_has_its_handshake_block_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint decodes a SYN's block to route it and hands it on to the core."""
    calls: list[bytes] = []
    real = wire.decode_handshake

    def counting(payload: bytes) -> wire.Handshake:
        calls.append(payload)
        return real(payload)

    monkeypatch.setattr(wire, "decode_handshake", counting)
    monkeypatch.setattr(endpoint, "decode_handshake", counting)
    client = SansIOConnection(is_client=True, rng=random.Random(1))
    client.connect(0.0)
    (syn,) = client.datagrams_to_send(0.0)
    server = endpoint.Endpoint(accepting=True, rng=random.Random(2))
    server.receive_datagram(syn, ("10.0.0.1", 1000), 0.0)
    assoc = server.accept()
    assert assoc is not None and assoc.connection.state is ConnectionState.SYN_RECEIVED
    assert len(calls) == 1
