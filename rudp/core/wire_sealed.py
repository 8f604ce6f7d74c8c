"""The sealed form of a datagram (specs/protocol.md section 3.7).

With a pre-shared key, every datagram after the handshake is sealed: its payload is
replaced by the AEAD ciphertext of that payload and a 16-byte tag, the ``SEALED`` flag is
set, ``payload_length`` counts ciphertext and tag, and the header and SACK blocks, as
sent, are the associated data.  So every field is authenticated and the payload is
secret; the CRC-32 still comes last and is still checked first, so a corrupted datagram
costs a CRC and never an AEAD open.  The nonce is the full packet number (section 8.7),
which no two transmissions in one direction share: WireGuard numbers its packets for
the nonce in the same way (its counter), as QUIC does (RFC 9001 section 5.3).

This module is the only one besides ``rudp.core.wire`` that knows the layout: it rebuilds
the associated data of a sealed datagram ``wire`` decoded and the packet it opens to.  The
encoders seal as they lay a datagram out (``wire._pack``); ``seal_datagram`` writes the
layout out on its own, as the reference the tests hold that sealing to (and to build
sealed datagrams by hand).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from rudp.core.wire import (
    AEAD_TAG_SIZE,
    CHECKSUM_SIZE,
    HEADER,
    HEADER_SIZE,
    HEADER_STRUCT,
    SACK_SIZE,
    SACK_STRUCT,
    VERSION,
    Flags,
    Packet,
    PacketType,
    check_semantics,
)

Encrypt = Callable[[int, bytes, memoryview], bytes]
"""``(packet number, associated data, plaintext) -> ciphertext and tag``."""


def _offset(field: str) -> int:
    """Where ``field`` of the fixed header starts: derived from the schema, not typed."""
    offset = 0
    for subcon in HEADER.subcons:
        if subcon.name == field:
            return offset
        offset += subcon.sizeof()
    raise KeyError(field)  # pragma: no cover - only if the schema loses a field


_FLAGS_AT = _offset("flags")
_SACK_COUNT_AT = _offset("sack_count")
_PN_AT = _offset("packet_number")
_PLEN_AT = _offset("payload_length")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SEALED = int(Flags.SEALED)
_DATA = PacketType.DATA
_crc32 = zlib.crc32
_new_tuple = tuple.__new__


def packet_number(datagram: bytes) -> int:
    """The low 32 bits of the packet number of a datagram we encoded."""
    number: int = _U32.unpack_from(datagram, _PN_AT)[0]
    return number


def is_sealed(datagram: bytes) -> bool:
    """Whether a datagram we encoded carries the ``SEALED`` flag."""
    return bool(datagram[_FLAGS_AT] & _SEALED)


def seal_datagram(datagram: bytes, number: int, encrypt: Encrypt) -> bytes:
    """``datagram`` (as ``rudp.core.wire`` encoded it, unsealed) sealed under the full
    packet ``number``: the flag set, the length grown by the tag, a new CRC."""
    start = HEADER_SIZE + datagram[_SACK_COUNT_AT] * SACK_SIZE
    end = len(datagram) - CHECKSUM_SIZE
    header = bytearray(datagram[:start])
    header[_FLAGS_AT] |= _SEALED
    _U16.pack_into(header, _PLEN_AT, end - start + AEAD_TAG_SIZE)
    associated = bytes(header)
    sealed = encrypt(number, associated, memoryview(datagram)[start:end])
    checksum = _crc32(sealed, _crc32(associated))
    return b"".join((associated, sealed, checksum.to_bytes(CHECKSUM_SIZE, "big")))


def associated_data(packet: Packet) -> bytes:
    """The header and SACK blocks of a decoded sealed packet, byte for byte as they were
    on the wire (``decode`` checked that the datagram is exactly their layout)."""
    header = HEADER_STRUCT.pack(
        VERSION,
        packet.type,
        packet.flags,
        len(packet.sack),
        packet.connection_id,
        packet.packet_number,
        packet.seq,
        packet.ack,
        packet.largest_received,
        packet.ack_delay,
        packet.window,
        packet.fragments_left,
        len(packet.payload),
    )
    if packet.sack:
        header += b"".join([SACK_STRUCT.pack(start, end) for start, end in packet.sack])
    return header


def opened(packet: Packet, plaintext: bytes) -> Packet:
    """The packet as it was before sealing: its plaintext, the flag cleared, and the
    stateless checks of section 3.3 applied now that the payload can be read.  Raises
    ``BadPacket``."""
    ptype, flags, cid, seq, ack, window, left, sack, _, number, largest, delay = packet
    flags &= ~_SEALED
    # tuple.__new__ as in wire.decode: NamedTuple._replace costs five times as much.
    inner: Packet = _new_tuple(
        Packet, (ptype, flags, cid, seq, ack, window, left, sack, plaintext, number, largest, delay)
    )
    if ptype is not _DATA:  # DATA may carry anything (section 3.4)
        check_semantics(inner)
    return inner
