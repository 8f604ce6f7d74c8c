"""The construct reference codec: the test oracle for ``rudp.core.wire``'s fast codec.

``rudp.core.wire`` holds the schema (the single source of truth) and the ``struct``
codec derived from it; these two functions parse and build with construct itself,
which is slow (20-40 us a datagram) but obviously follows the schema.  Hypothesis
tests prove both codecs agree byte for byte, both ways.
"""

from __future__ import annotations

import struct

import construct as cs

from rudp.core.wire import (
    DATAGRAM,
    KNOWN_FLAGS,
    MAX_SACK_BLOCKS,
    STATELESS_RESET_DATAGRAM,
    STATELESS_RESET_SIZE,
    VERSION,
    Packet,
    PacketType,
    check_semantics,
)
from rudp.errors import BadPacket

__all__ = ["reference_decode", "reference_encode"]


def reference_encode(packet: Packet) -> bytes:
    """Serialise with the construct schema.  Slow; the oracle for ``encode``."""
    if packet.flags & ~KNOWN_FLAGS:
        raise ValueError("reserved flag bits set")
    if packet.type is PacketType.STATELESS_RESET:
        reset: dict[str, object] = {
            "version": VERSION,
            "connection_id": packet.connection_id,
            "reset_token": packet.payload,
        }
        try:
            built_reset: bytes = STATELESS_RESET_DATAGRAM.build({"body": {"value": reset}})
        except (cs.ConstructError, struct.error) as exc:
            raise ValueError(str(exc)) from exc
        return built_reset
    if len(packet.sack) > MAX_SACK_BLOCKS:
        raise ValueError("too many SACK blocks")
    body = {
        "header": {
            "version": VERSION,
            "type": packet.type.name,
            "flags": packet.flags,
            "sack_count": len(packet.sack),
            "connection_id": packet.connection_id,
            "packet_number": packet.packet_number,
            "seq": packet.seq,
            "ack": packet.ack,
            "largest_received": packet.largest_received,
            "ack_delay": packet.ack_delay,
            "window": packet.window,
            "fragments_left": packet.fragments_left,
            "payload_length": len(packet.payload),
        },
        "sack": [{"start": start, "end": end} for start, end in packet.sack],
        "payload": packet.payload,
    }
    try:
        built: bytes = DATAGRAM.build({"body": {"value": body}})
    except (cs.ConstructError, struct.error) as exc:
        raise ValueError(str(exc)) from exc
    return built


def reference_decode(data: bytes) -> Packet:
    """Parse with the construct schema.  Slow; the oracle for ``decode``.

    Applies the same version, type, flag and length rules, and like ``decode``
    raises only ``BadPacket``.
    """
    if len(data) == STATELESS_RESET_SIZE:
        try:
            reset = STATELESS_RESET_DATAGRAM.parse(data).body.value
        except (cs.ConstructError, struct.error, ValueError, OverflowError) as exc:
            raise BadPacket(f"construct rejected the datagram: {exc}") from exc
        if reset.version != VERSION:
            raise BadPacket(f"unsupported version {reset.version}")
        return Packet(
            PacketType.STATELESS_RESET, 0, reset.connection_id, 0, 0, 0, 0, (), reset.reset_token
        )
    try:
        parsed = DATAGRAM.parse(data)
    except (cs.ConstructError, struct.error, ValueError, OverflowError) as exc:
        raise BadPacket(f"construct rejected the datagram: {exc}") from exc
    body = parsed.body.value
    header = body.header
    if header.version != VERSION:
        raise BadPacket(f"unsupported version {header.version}")
    # A parsed construct Enum compares equal to its *name*; an unknown value
    # parses to a plain int.  Convert at this boundary.
    packet_type = PacketType.__members__.get(header.type) if isinstance(header.type, str) else None
    if packet_type is None:
        raise BadPacket(f"unknown packet type {header.type}")
    if header.flags & ~KNOWN_FLAGS:
        raise BadPacket("reserved flag bits set")
    if header.sack_count > MAX_SACK_BLOCKS:
        raise BadPacket("too many SACK blocks")
    packet = Packet(
        packet_type,
        header.flags,
        header.connection_id,
        header.seq,
        header.ack,
        header.window,
        header.fragments_left,
        tuple((block.start, block.end) for block in body.sack),
        bytes(body.payload),
        header.packet_number,
        header.largest_received,
        header.ack_delay,
    )
    check_semantics(packet)
    return packet
