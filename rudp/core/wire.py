"""The rudp wire format (specs/protocol.md section 3).

The construct schema (``DATAGRAM`` and the rest, ``rudp.core.wire_schema``, re-exported
here) is the single source of truth and the reference codec.  Parsing a datagram with
construct costs 20-40 us, so the hot path uses this ``struct`` codec *derived from* that
schema at import time; a hypothesis test proves the two agree byte for byte, both ways.

This module is the only one that knows the layout: every header is packed by
``_pack`` (through ``encode``, ``encode_fields`` or ``encode_data_batch``) and
unpacked by ``decode``; other modules use ``OVERHEAD``, ``SACK_SIZE`` and
``encoded_size`` for sizes.  The construct oracle is ``rudp.core.wire_reference``;
sequence-number expansion is ``rudp.core.seqnum`` (re-exported here).

Every function here that reads bytes from the network may raise only
``BadPacket``.  Length and CRC are checked before any field is parsed.

Datagram layout (all integers big-endian)::

    0      1      2      3      4                          12            16
    +------+------+------+------+--------------------------+-------------+
    | ver  | type | flags| nsack|   connection id (64)     |  pkt num    |
    +------+------+------+------+--------------------------+-------------+
    16            20            24            28      30      32      34            38
    +-------------+-------------+-------------+-------+-------+-------------+------+
    |  seq (32)   |  ack (32)   | largest rcvd| ack dl| window| frag left   | plen |
    +-------------+-------------+-------------+-------+-------+-------------+------+
    | nsack x (sack start u32, sack end u32)                                      |
    | payload (plen bytes)                                                        |
    | CRC-32 of everything above (u32)                                            |
    +-----------------------------------------------------------------------------+
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from rudp.config import MIN_DATAGRAM_SIZE
from rudp.core.seqnum import SEQ_BITS as SEQ_BITS  # re-exported: callers use wire.*
from rudp.core.seqnum import SEQ_MODULUS as SEQ_MODULUS
from rudp.core.seqnum import expand_seq as expand_seq
from rudp.core.seqnum import wire_seq as wire_seq
from rudp.core.wire_schema import AEAD_TAG_SIZE as AEAD_TAG_SIZE
from rudp.core.wire_schema import ANSWER_TAG_SIZE as ANSWER_TAG_SIZE
from rudp.core.wire_schema import BODY as BODY
from rudp.core.wire_schema import DATAGRAM as DATAGRAM
from rudp.core.wire_schema import HANDSHAKE as HANDSHAKE
from rudp.core.wire_schema import HEADER as HEADER
from rudp.core.wire_schema import KNOWN_FLAGS as KNOWN_FLAGS
from rudp.core.wire_schema import MAX_SACK_BLOCKS as MAX_SACK_BLOCKS
from rudp.core.wire_schema import NOISE_MESSAGE as NOISE_MESSAGE
from rudp.core.wire_schema import PATH_DATA_SIZE as PATH_DATA_SIZE
from rudp.core.wire_schema import RESET_TOKEN_SIZE as RESET_TOKEN_SIZE
from rudp.core.wire_schema import RETRY_MAC_SIZE as RETRY_MAC_SIZE
from rudp.core.wire_schema import RETRY_TOKEN as RETRY_TOKEN
from rudp.core.wire_schema import SACK_BLOCK as SACK_BLOCK
from rudp.core.wire_schema import STATELESS_RESET as STATELESS_RESET
from rudp.core.wire_schema import STATELESS_RESET_DATAGRAM as STATELESS_RESET_DATAGRAM
from rudp.core.wire_schema import SYN_WITH_TOKEN as SYN_WITH_TOKEN
from rudp.core.wire_schema import TAGGED_RETRY as TAGGED_RETRY
from rudp.core.wire_schema import VERSION as VERSION
from rudp.core.wire_schema import Flags as Flags
from rudp.core.wire_schema import PacketType as PacketType
from rudp.core.wire_schema import derive_struct as _derive_struct
from rudp.errors import BadPacket

SEQ_MASK = SEQ_MODULUS - 1
"""``seq & SEQ_MASK``: the 32 bits of a full sequence number that go on the wire."""

# --- the fast codec, derived from the schema ----------------------------------

HEADER_STRUCT = _derive_struct(HEADER)
HEADER_SIZE = HEADER_STRUCT.size
SACK_STRUCT = _derive_struct(SACK_BLOCK)
SACK_SIZE = SACK_STRUCT.size
HANDSHAKE_STRUCT = _derive_struct(HANDSHAKE)
HANDSHAKE_SIZE = HANDSHAKE_STRUCT.size
RETRY_TOKEN_STRUCT = _derive_struct(RETRY_TOKEN)
RETRY_TOKEN_SIZE = RETRY_TOKEN_STRUCT.size
"""Bytes of a retry token (20): the payload of an unkeyed RETRY."""
TAGGED_RETRY_SIZE = TAGGED_RETRY.sizeof()
"""Payload length of a keyed RETRY (36): the token, then its answer tag (section 6.8.1)."""
SYN_WITH_TOKEN_SIZE = HANDSHAKE_SIZE + RETRY_TOKEN_SIZE
"""Payload length of a SYN that echoes a retry token (46)."""
NOISE_MESSAGE_SIZE = NOISE_MESSAGE.sizeof()
"""Bytes of the Noise message a handshake carries last with a pre-shared key (78)."""
_SYN_SIZES = frozenset(
    size + noise
    for size in (HANDSHAKE_SIZE, SYN_WITH_TOKEN_SIZE)
    for noise in (0, NOISE_MESSAGE_SIZE)
)
_SYN_ACK_SIZES = frozenset((HANDSHAKE_SIZE, HANDSHAKE_SIZE + NOISE_MESSAGE_SIZE))
_CHECKSUM_STRUCT = struct.Struct(">I")
CHECKSUM_SIZE = _CHECKSUM_STRUCT.size
OVERHEAD = HEADER_SIZE + CHECKSUM_SIZE
"""Bytes a datagram adds to its payload when it carries no SACK blocks."""
_STATELESS_RESET_STRUCT = _derive_struct(STATELESS_RESET)
STATELESS_RESET_SIZE = _STATELESS_RESET_STRUCT.size + CHECKSUM_SIZE
"""Length of a stateless-reset datagram (32): below ``OVERHEAD``, the smallest other one."""

_TYPES: dict[int, PacketType] = {int(t): t for t in PacketType}
_PAYLOAD_RULED = frozenset(PacketType) - {PacketType.DATA}
"""Types whose payload ``check_semantics`` rules on (DATA may carry anything)."""
_PAYLOAD_SIZES: dict[PacketType, int] = {
    PacketType.RESET: RESET_TOKEN_SIZE,
    PacketType.PATH_CHALLENGE: PATH_DATA_SIZE,
    PacketType.PATH_RESPONSE: PATH_DATA_SIZE,
}
"""The exact payload length of each type but SYN, SYN_ACK and RETRY that has one (the
others carry none).  A handshake carries its block, a SYN perhaps a retry token, and either
perhaps a Noise message (``_SYN_SIZES``, ``_SYN_ACK_SIZES``); a RETRY its token, and with a
key the token's answer tag."""
_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFFFFFF
ACK_DELAY_UNIT = 8e-6
"""Seconds per unit of ``ack_delay``: 8 us, QUIC's default ack_delay_exponent of 3
(RFC 9000 section 18.2), so the 16-bit field spans 0.52 s, far above max_ack_delay."""
_MAX_U64 = (1 << 64) - 1
# Plain int: ``flags & Flags.ACK_NOW`` builds a new IntFlag (measured 0.56 us, a tenth of
# a whole packet's cost in the core packet-rate benchmark).
_ACK_NOW_BIT = int(Flags.ACK_NOW)
_SEALED_BIT = int(Flags.SEALED)
_NEVER_SEALED = frozenset((PacketType.SYN, PacketType.SYN_ACK, PacketType.RETRY))


class Packet(NamedTuple):
    """One decoded datagram.

    A NamedTuple rather than a frozen dataclass: it is built once per datagram
    on the hot path, and a tuple is several times cheaper to construct.  Sequence
    numbers here are the 32-bit values on the wire; the connection expands them.
    """

    type: PacketType
    flags: int
    connection_id: int
    seq: int
    ack: int
    window: int
    fragments_left: int
    sack: tuple[tuple[int, int], ...]
    payload: bytes
    packet_number: int = 0
    """This transmission's packet number, low 32 bits (specs/protocol.md section 8.7)."""
    largest_received: int = 0
    """Low 32 bits of the largest packet number the sender has received from us."""
    ack_delay: int = 0
    """How long the sender held ``largest_received`` before this packet, in
    ``ACK_DELAY_UNIT`` units (RFC 9000 section 13.2.5)."""

    @property
    def ack_now(self) -> bool:
        """``Flags.ACK_NOW`` is set: the sender asks for an immediate acknowledgement."""
        return bool(self.flags & _ACK_NOW_BIT)


NO_RESET_TOKEN = bytes(RESET_TOKEN_SIZE)
"""The all-zero token: "none".  A stateless reset is never accepted against it."""


class Handshake(NamedTuple):
    """The payload of SYN and SYN_ACK."""

    source_connection_id: int
    max_datagram_size: int
    reset_token: bytes = NO_RESET_TOKEN
    """What a stateless reset for ``source_connection_id`` will carry (section 6.6)."""


Payload = bytes | memoryview
"""A payload as the sender hands it out (a fragment may be a view into its message)."""
Seal = Callable[[int, bytes, Payload], bytes]
"""``(full packet number, associated data, plaintext) -> ciphertext and tag``: with a key,
the encoders seal as they lay out (section 3.7; ``rudp.core.protection``)."""

_new_tuple = tuple.__new__
_crc32 = zlib.crc32
_PACK_HEADER = HEADER_STRUCT.pack
_PACK_SACK = SACK_STRUCT.pack
_UNPACK_CHECKSUM = _CHECKSUM_STRUCT.unpack_from
# One precompiled struct per SACK block count: no format string built per datagram.
_SACK_EDGES = [
    struct.Struct(">" + SACK_STRUCT.format[1:] * count) for count in range(MAX_SACK_BLOCKS + 1)
]


def check_semantics(packet: Packet) -> None:
    """Checks that do not depend on connection state (specs/protocol.md section 3.3).

    A sealed packet's payload is ciphertext: its length is ruled on once it is opened."""
    ptype = packet.type
    if ptype is PacketType.STATELESS_RESET:
        raise BadPacket("a stateless reset has a datagram format of its own")
    if packet.flags & _SEALED_BIT:
        if ptype in _NEVER_SEALED:
            raise BadPacket(f"{ptype.name} is never sealed")
        if len(packet.payload) < AEAD_TAG_SIZE:
            raise BadPacket("sealed payload shorter than its tag")
        return
    if ptype is PacketType.DATA:
        return  # any payload, any fragment count
    if packet.fragments_left:
        raise BadPacket(f"{ptype.name} carries fragment information")
    size = len(packet.payload)
    if ptype is PacketType.SYN:
        if size not in _SYN_SIZES:
            raise BadPacket("SYN payload has the wrong length")
    elif ptype is PacketType.SYN_ACK:
        if size not in _SYN_ACK_SIZES:
            raise BadPacket("SYN_ACK payload has the wrong length")
    elif ptype is PacketType.RETRY:
        if size != RETRY_TOKEN_SIZE and size != TAGGED_RETRY_SIZE:
            raise BadPacket("RETRY payload has the wrong length")
    elif size != _PAYLOAD_SIZES.get(ptype, 0):
        raise BadPacket(f"{ptype.name} payload has the wrong length")


def _pack(
    ptype: int,
    flags: int,
    connection_id: int,
    seq: int,
    ack: int,
    window: int,
    fragments_left: int,
    sack: Sequence[tuple[int, int]],
    payload: Payload,
    packet_number: int,
    largest_received: int,
    ack_delay: int,
    seal: Seal | None = None,
    number: int = 0,
) -> bytes:
    """Header, SACK blocks, payload and CRC-32: the one place that lays out a datagram.

    The arguments are ``Packet``'s fields in order; nothing is checked or masked here.
    With ``seal`` the datagram is sealed under the full packet ``number`` (section 3.7):
    the flag set, the length counting the tag, the header and SACK blocks as associated
    data, the CRC over the sealed bytes.
    """
    length = len(payload)
    if seal is not None:
        flags |= _SEALED_BIT
        length += AEAD_TAG_SIZE
    header = _PACK_HEADER(
        VERSION,
        ptype,
        flags,
        len(sack),
        connection_id,
        packet_number,
        seq,
        ack,
        largest_received,
        ack_delay,
        window,
        fragments_left,
        length,
    )
    if sack:
        header += b"".join([_PACK_SACK(start, end) for start, end in sack])
    if seal is not None:
        payload = seal(number, header, payload)
    checksum = _crc32(payload, _crc32(header))
    return b"".join((header, payload, checksum.to_bytes(CHECKSUM_SIZE, "big")))


def encode(packet: Packet) -> bytes:
    """Serialise a packet with its checksum.

    Raises ``ValueError`` for a packet that cannot be represented: that is a
    local bug, never input from the network.
    """
    if len(packet.sack) > MAX_SACK_BLOCKS:
        raise ValueError("too many SACK blocks")
    if len(packet.payload) > _MAX_U16:
        raise ValueError("payload too long for one datagram")
    if packet.flags & ~KNOWN_FLAGS:
        raise ValueError("reserved flag bits set")
    if packet.type is PacketType.STATELESS_RESET:
        return encode_stateless_reset(packet.connection_id, bytes(packet.payload))
    try:
        return _pack(*packet)
    except struct.error as exc:  # a field out of its range
        raise ValueError(str(exc)) from exc


class AckFields(NamedTuple):
    """What every datagram after the handshake says about the other direction.

    Full (unbounded) numbers: the encoders keep their low 32 bits.
    """

    ack: int
    """The cumulative ack (section 8.1)."""
    window: int
    """The receive window from ``ack`` on (section 11)."""
    largest_received: int
    """The largest packet number received from the peer (section 8.7), 0 before any."""
    ack_delay: int
    """How long that packet has waited, in ``ACK_DELAY_UNIT`` units (already clamped)."""


def ack_delay_units(seconds: float) -> int:
    """An ack delay for the wire: ``ACK_DELAY_UNIT`` units, clamped to the 16-bit field."""
    units = int(seconds / ACK_DELAY_UNIT)
    return units if units < _MAX_U16 else _MAX_U16


def encode_fields(
    ptype: int,
    flags: int,
    connection_id: int,
    packet_number: int,
    seq: int,
    acks: AckFields,
    payload: Payload = b"",
    sack: Sequence[tuple[int, int]] = (),
    seal: Seal | None = None,
) -> bytes:
    """The connection's encoder for one control or handshake datagram (no ``Packet`` built).

    ``seq``, the numbers in ``acks`` and the SACK edges may be full ones: only
    their low 32 bits go on the wire (section 7.3).  The caller builds only valid
    packets (at most ``MAX_SACK_BLOCKS`` blocks, known flags), so nothing is checked.
    ``seal``: sealed under ``packet_number`` (section 3.7).
    """
    if sack:
        sack = [(start & _MAX_U32, end & _MAX_U32) for start, end in sack]
    return _pack(
        ptype,
        flags,
        connection_id,
        seq & _MAX_U32,
        acks.ack & _MAX_U32,
        acks.window,
        0,
        sack,
        payload,
        packet_number & _MAX_U32,
        acks.largest_received & _MAX_U32,
        acks.ack_delay,
        seal,
        packet_number,
    )


def encode_data_batch(
    connection_id: int,
    acks: AckFields,
    packets: Iterable[tuple[int, int, Payload, int, bool, bool]],
    seal: Seal | None = None,
) -> list[bytes]:
    """DATA (or FIN) datagrams for the sender's ``(pn, seq, payload, fragments_left,
    is_fin, ack_now)`` tuples (``rudp.core.sender.Sender.next_packets``).

    Every one carries the same ``acks`` and no SACK blocks; ``ack_now`` sets
    ``Flags.ACK_NOW``.  Numbers may be full ones, as in ``encode_fields``.
    """
    ack = acks.ack & _MAX_U32
    window = acks.window
    largest = acks.largest_received & _MAX_U32
    delay = acks.ack_delay
    data, fin, flag = PacketType.DATA, PacketType.FIN, Flags.ACK_NOW  # loop invariants
    if seal is None:
        # The per-packet hot path: _pack's layout inlined (no SACK blocks, no AEAD), one
        # call fewer per datagram.  A property test holds it to _pack's bytes.
        pack_header, crc32, join = _PACK_HEADER, _crc32, b"".join
        out = []
        for pn, seq, payload, fragments_left, is_fin, ack_now in packets:
            header = pack_header(
                VERSION,
                fin if is_fin else data,
                flag if ack_now else 0,
                0,
                connection_id,
                pn & _MAX_U32,
                seq & _MAX_U32,
                ack,
                largest,
                delay,
                window,
                fragments_left,
                len(payload),
            )
            checksum = crc32(payload, crc32(header))
            out.append(join((header, payload, checksum.to_bytes(CHECKSUM_SIZE, "big"))))
        return out
    return [
        _pack(
            fin if is_fin else data,
            flag if ack_now else 0,
            connection_id,
            seq & _MAX_U32,
            ack,
            window,
            fragments_left,
            (),
            payload,
            pn & _MAX_U32,
            largest,
            delay,
            seal,
            pn,
        )
        for pn, seq, payload, fragments_left, is_fin, ack_now in packets
    ]


def encoded_size(packet: Packet) -> int:
    """Length in bytes of ``packet`` on the wire (what ``encode`` would return)."""
    if packet.type is PacketType.STATELESS_RESET:
        return STATELESS_RESET_SIZE  # a compact format of its own (section 6.6)
    return OVERHEAD + SACK_SIZE * len(packet.sack) + len(packet.payload)


def encode_stateless_reset(connection_id: int, token: bytes) -> bytes:
    """A stateless reset for ``connection_id`` carrying ``token`` (section 6.6)."""
    if len(token) != RESET_TOKEN_SIZE:
        raise ValueError("a reset token is 16 bytes")
    try:
        body = _STATELESS_RESET_STRUCT.pack(
            VERSION, PacketType.STATELESS_RESET, 0, connection_id, token
        )
    except struct.error as exc:
        raise ValueError(str(exc)) from exc
    return body + _crc32(body).to_bytes(CHECKSUM_SIZE, "big")


def _decode_stateless_reset(data: bytes) -> Packet:
    body_end = STATELESS_RESET_SIZE - CHECKSUM_SIZE
    if _crc32(memoryview(data)[:body_end]) != _UNPACK_CHECKSUM(data, body_end)[0]:
        raise BadPacket("checksum mismatch")
    version, type_code, reserved, connection_id, token = _STATELESS_RESET_STRUCT.unpack_from(data)
    if version != VERSION:
        raise BadPacket(f"unsupported version {version}")
    if type_code != PacketType.STATELESS_RESET or reserved:
        raise BadPacket("a 32-byte datagram that is not a stateless reset")
    return Packet(PacketType.STATELESS_RESET, 0, connection_id, 0, 0, 0, 0, (), token)


def decode(data: bytes) -> Packet:
    """Parse one untrusted datagram.  Raises only ``BadPacket``.

    Order matters: length first, then the CRC over the raw bytes, and only then
    the fields, each checked against what this version allows.
    """
    size = len(data)
    if size == STATELESS_RESET_SIZE:
        return _decode_stateless_reset(data)
    if size < OVERHEAD:
        raise BadPacket("datagram shorter than the fixed header")
    body_end = size - CHECKSUM_SIZE
    # The header is unpacked before the CRC is checked, but no field is *trusted*
    # until it passes: the fixed header always lies inside the datagram (length
    # checked above), and the length fields only choose how the CRC is computed.
    (
        version,
        type_code,
        flags,
        sack_count,
        connection_id,
        packet_number,
        seq,
        ack,
        largest_received,
        ack_delay,
        window,
        fragments_left,
        payload_length,
    ) = HEADER_STRUCT.unpack_from(data)
    payload_start = HEADER_SIZE + sack_count * SACK_SIZE
    if payload_start + payload_length == body_end:
        # Hot path: the payload must be copied out anyway, so the CRC runs over that
        # copy and the small header slice -- no memoryview, no copy of the whole body.
        payload = data[payload_start:body_end]
        checksum = _crc32(payload, _crc32(data[:payload_start]))
    else:
        # Inconsistent lengths: still report a corrupted datagram as a CRC failure first.
        payload = None
        checksum = _crc32(memoryview(data)[:body_end])
    if checksum != _UNPACK_CHECKSUM(data, body_end)[0]:
        raise BadPacket("checksum mismatch")
    if version != VERSION:
        raise BadPacket(f"unsupported version {version}")
    packet_type = _TYPES.get(type_code)
    if packet_type is None:
        raise BadPacket(f"unknown packet type {type_code}")
    if flags & ~KNOWN_FLAGS:
        raise BadPacket("reserved flag bits set")
    if payload is None:
        raise BadPacket("length fields disagree with the datagram size")
    if sack_count:
        if sack_count > MAX_SACK_BLOCKS:
            raise BadPacket("too many SACK blocks")
        edges = _SACK_EDGES[sack_count].unpack_from(data, HEADER_SIZE)
        sack = tuple(zip(edges[::2], edges[1::2], strict=True))
    else:
        sack = ()
    # tuple.__new__ skips NamedTuple's Python-level __new__: half the cost, same object.
    packet: Packet = _new_tuple(
        Packet,
        (
            packet_type,
            flags,
            connection_id,
            seq,
            ack,
            window,
            fragments_left,
            sack,
            payload,
            packet_number,
            largest_received,
            ack_delay,
        ),
    )
    if packet_type in _PAYLOAD_RULED or flags & _SEALED_BIT:
        check_semantics(packet)
    return packet


def encode_handshake(handshake: Handshake) -> bytes:
    """Serialise a SYN / SYN_ACK payload."""
    return HANDSHAKE_STRUCT.pack(*handshake)


def decode_handshake(payload: bytes) -> Handshake:
    """Parse a SYN / SYN_ACK payload (already length-checked by ``decode``): the handshake
    block, which a SYN's retry token (``syn_token``) and a Noise message (``noise_message``)
    may follow."""
    if len(payload) not in _SYN_SIZES:
        raise BadPacket("handshake payload has the wrong length")
    source_connection_id, max_datagram_size, reset_token = HANDSHAKE_STRUCT.unpack_from(payload)
    if max_datagram_size < MIN_DATAGRAM_SIZE:  # section 6.1-6
        raise BadPacket("peer's max_datagram_size is below the minimum")
    return Handshake(source_connection_id, max_datagram_size, reset_token)


def syn_token(payload: bytes) -> bytes | None:
    """The retry token a SYN's payload carries after its handshake block, or None."""
    if len(payload) not in (SYN_WITH_TOKEN_SIZE, SYN_WITH_TOKEN_SIZE + NOISE_MESSAGE_SIZE):
        return None
    return bytes(payload[HANDSHAKE_SIZE:SYN_WITH_TOKEN_SIZE])


def noise_message(payload: bytes) -> bytes | None:
    """The Noise message a SYN or SYN_ACK payload carries last (section 6.8), or None."""
    if len(payload) - NOISE_MESSAGE_SIZE not in (HANDSHAKE_SIZE, SYN_WITH_TOKEN_SIZE):
        return None
    return bytes(payload[-NOISE_MESSAGE_SIZE:])


def encode_retry(client_id: int, syn: Packet, token: bytes, tag: bytes = b"") -> bytes:
    """The RETRY answering ``syn`` (section 6.2.1): to the client's id, acknowledging its
    ISN, echoing its packet number, carrying ``token`` (and with a key its answer ``tag``,
    section 6.8.1); stateless, so ``seq`` and the packet number are 0."""
    if len(token) != RETRY_TOKEN_SIZE:
        raise ValueError("a retry token is 20 bytes")
    if len(tag) not in (0, ANSWER_TAG_SIZE):
        raise ValueError("an answer tag is 16 bytes")
    acks = AckFields(syn.seq + 1, 0, syn.packet_number, 0)
    return encode_fields(PacketType.RETRY, 0, client_id, 0, 0, acks, token + tag)


def peek_type(datagram: bytes) -> int:
    """The type code of a datagram this implementation encoded (not validated: for
    telling our own outgoing packets apart, never for input)."""
    return datagram[1]
