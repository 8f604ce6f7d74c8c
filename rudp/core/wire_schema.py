"""The rudp wire format as construct declarations: the single source of truth.

specs/protocol.md section 3 reproduces ``HEADER`` and ``DATAGRAM``.  Everything about the
layout is declared here once; ``rudp.core.wire`` derives its fast ``struct`` codec from
these declarations at import time (``derive_struct``), and ``rudp.core.wire_reference``
parses and builds datagrams with them directly, as the oracle the tests hold the fast
codec to.  A wire change starts here, with the spec and ``VERSION`` in the same commit.
"""

from __future__ import annotations

import enum
import struct
import zlib

import construct as cs

__all__ = [
    "AEAD_TAG_SIZE",
    "ANSWER_TAG_SIZE",
    "BODY",
    "DATAGRAM",
    "HANDSHAKE",
    "HEADER",
    "KNOWN_FLAGS",
    "MAX_SACK_BLOCKS",
    "NOISE_MESSAGE",
    "PATH_DATA_SIZE",
    "RESET_TOKEN_SIZE",
    "RETRY_MAC_SIZE",
    "RETRY_TOKEN",
    "SACK_BLOCK",
    "STATELESS_RESET",
    "STATELESS_RESET_DATAGRAM",
    "SYN_WITH_TOKEN",
    "TAGGED_RETRY",
    "VERSION",
    "Flags",
    "PacketType",
    "derive_struct",
]

VERSION = 6
"""The only version this implementation speaks (specs/protocol.md section 15).  Version 2
added the packet number, the echo of the largest one received and the ack delay; version 3
the stateless-reset token in the handshake block, the token in RESET, the compact
STATELESS_RESET datagram and the path-validation packets; version 4 the RETRY packet and
the retry token a SYN may carry after its handshake block (stateless address validation);
version 5 the SEALED flag and the Noise message a handshake carries with a pre-shared key
(authenticated encryption, section 3.7); version 6 the answer tags, with which a keyed
server authenticates the two answers it gives without a handshake, a refusing RESET and a
RETRY (section 6.8.1)."""


class PacketType(enum.IntEnum):
    """Packet types (specs/protocol.md section 4)."""

    SYN = 1
    """Client opens a connection; payload is a handshake block."""
    SYN_ACK = 2
    """Server accepts; payload is a handshake block."""
    DATA = 3
    """One fragment of a message; occupies one sequence number."""
    ACK = 4
    """Acknowledgement only; occupies no sequence number."""
    PING = 5
    """Keepalive / probe; asks for an immediate ACK; occupies no sequence number."""
    FIN = 6
    """Graceful close; occupies one sequence number, after all data."""
    RESET = 7
    """Abortive close; carries the sender's reset token; the receiver fails the connection."""
    STATELESS_RESET = 8
    """Sent by an endpoint that has no state for the connection id it received (a
    restarted peer); a compact datagram of its own (``STATELESS_RESET_DATAGRAM``)."""
    PATH_CHALLENGE = 9
    """Asks the peer to echo 8 unpredictable bytes from the address it is seen at
    (RFC 9000 section 8.2); occupies no sequence number."""
    PATH_RESPONSE = 10
    """Echoes a PATH_CHALLENGE's 8 bytes; occupies no sequence number."""
    RETRY = 11
    """A server's stateless answer to a SYN without a valid retry token (RFC 9000 section
    8.1): its payload is the token the client echoes in its next SYN."""


class Flags(enum.IntFlag):
    """Header flags (specs/protocol.md section 3.2).  Unknown bits are reserved."""

    ACK_NOW = 0x01
    """The sender asks for an immediate acknowledgement (set on retransmissions
    and probes so a delayed ack does not hold up loss recovery)."""
    SEALED = 0x02
    """The payload is AEAD ciphertext and tag, the header its associated data (section
    3.7, ``rudp.core.wire_sealed``).  Never set on SYN, SYN_ACK or RETRY."""


KNOWN_FLAGS = int(Flags.ACK_NOW | Flags.SEALED)
"""Bits a sender may set.  A receiver rejects a datagram that sets any other."""

MAX_SACK_BLOCKS = 32
"""Most selective-ack blocks one datagram carries (specs/protocol.md section 8)."""

SACK_BLOCK = cs.Struct(
    "start" / cs.Int32ub,  # first sequence number of a received run
    "end" / cs.Int32ub,  # one past the last (RFC 2018 section 3: left and right edge)
)

HEADER = cs.Struct(
    "version" / cs.Int8ub,
    "type" / cs.Enum(cs.Int8ub, PacketType),
    "flags" / cs.Int8ub,
    "sack_count" / cs.Int8ub,
    "connection_id" / cs.Int64ub,
    "packet_number" / cs.Int32ub,  # this transmission's number (RFC 9000 section 12.3)
    "seq" / cs.Int32ub,
    "ack" / cs.Int32ub,
    "largest_received" / cs.Int32ub,  # the largest packet number received from the peer
    "ack_delay" / cs.Int16ub,  # how long that packet waited for this ack, ACK_DELAY_UNIT units
    "window" / cs.Int16ub,
    "fragments_left" / cs.Int32ub,
    "payload_length" / cs.Int16ub,
)
"""The fixed part of the header: every field has a fixed size and offset."""

BODY = cs.Struct(
    "header" / HEADER,
    "sack" / cs.Array(cs.this.header.sack_count, SACK_BLOCK),
    "payload" / cs.Bytes(cs.this.header.payload_length),
)

DATAGRAM = cs.Struct(
    "body" / cs.RawCopy(BODY),
    "checksum" / cs.Checksum(cs.Int32ub, lambda data: zlib.crc32(data), cs.this.body.data),
    cs.Terminated,
)
"""A whole datagram: the body followed by a CRC-32 (ISO-HDLC, as zlib.crc32) of it."""

RESET_TOKEN_SIZE = 16
"""Bytes of a stateless-reset token (RFC 9000 section 10.3 uses 16 as well)."""
PATH_DATA_SIZE = 8
"""Bytes of a PATH_CHALLENGE / PATH_RESPONSE payload (RFC 9000 section 19.17)."""

HANDSHAKE = cs.Struct(
    "source_connection_id" / cs.Int64ub,
    "max_datagram_size" / cs.Int16ub,
    # The token a stateless reset for source_connection_id will carry (section 6.6).
    "reset_token" / cs.Bytes(RESET_TOKEN_SIZE),
)
"""Payload of SYN and SYN_ACK (specs/protocol.md section 6)."""

RETRY_MAC_SIZE = 16
"""Bytes of a retry token's MAC (HMAC-SHA256 truncated, as a reset token)."""

RETRY_TOKEN = cs.Struct(
    "bucket" / cs.Int32ub,  # the coarse time bucket the token was issued in (section 6.2.1)
    "mac" / cs.Bytes(RETRY_MAC_SIZE),  # over (client address, client id) under that bucket's key
)
"""Payload of RETRY, and what a SYN carries after its handshake block to echo it."""

SYN_WITH_TOKEN = cs.Struct("handshake" / HANDSHAKE, "token" / RETRY_TOKEN)
"""The payload of a SYN answering a RETRY: the handshake block, then the retry token."""

ANSWER_TAG_SIZE = 16
"""Bytes of an answer tag (section 6.8.1): HMAC-SHA256 truncated, as a reset token."""

TAGGED_RETRY = cs.Struct(
    "token" / RETRY_TOKEN,
    # Keyed only: proves the RETRY comes from a holder of the PSK who read this very SYN.
    "tag" / cs.Bytes(ANSWER_TAG_SIZE),
)
"""Payload of a keyed server's RETRY: the retry token, then its answer tag (section 6.8.1)."""

AEAD_TAG_SIZE = 16
"""Bytes of a ChaCha20-Poly1305 tag: what sealing adds to a payload (section 3.7)."""
NOISE_MESSAGE = cs.Struct(
    "ephemeral" / cs.Bytes(32),  # the sender's X25519 ephemeral public key
    # Sealed: the sender's real handshake block (its reset token) and its ISN, then the tag.
    "sealed" / cs.Bytes(HANDSHAKE.sizeof() + 4 + AEAD_TAG_SIZE),
)
"""What a SYN or SYN_ACK carries last with a pre-shared key: one Noise NNpsk0 handshake
message (section 6.8)."""

STATELESS_RESET = cs.Struct(
    "version" / cs.Int8ub,
    "type" / cs.Const(int(PacketType.STATELESS_RESET), cs.Int8ub),
    "reserved" / cs.Const(0, cs.Int16ub),
    "connection_id" / cs.Int64ub,  # the id the triggering datagram was addressed to
    "reset_token" / cs.Bytes(RESET_TOKEN_SIZE),
)
STATELESS_RESET_DATAGRAM = cs.Struct(
    "body" / cs.RawCopy(STATELESS_RESET),
    "checksum" / cs.Checksum(cs.Int32ub, lambda data: zlib.crc32(data), cs.this.body.data),
    cs.Terminated,
)
"""A stateless reset (specs/protocol.md section 6.6): 32 bytes, smaller than any other
datagram (the fixed header alone is 42), so it can never be mistaken for one and is
always smaller than the datagram that triggered it."""


# --- the struct codes a fixed-size schema derives to ------------------------------

_STRUCT_CODES = {
    cs.Int8ub: "B",
    cs.Int16ub: "H",
    cs.Int32ub: "I",
    cs.Int64ub: "Q",
}


def _struct_code(subcon: cs.Construct) -> str:
    """The ``struct`` code of one fixed-size field (Enum and Const unwrap; Bytes is ``Ns``)."""
    while isinstance(subcon, cs.Renamed | cs.Enum | cs.Const):
        subcon = subcon.subcon
    if isinstance(subcon, cs.Bytes) and isinstance(subcon.length, int):
        return f"{subcon.length}s"
    try:
        return _STRUCT_CODES[subcon]
    except KeyError:  # pragma: no cover - only reached if the schema grows a new kind of field
        raise TypeError(f"no struct code for {subcon!r}") from None


def derive_struct(schema: cs.Struct) -> struct.Struct:
    """The big-endian ``struct`` of a schema whose fields all have a fixed size."""
    return struct.Struct(">" + "".join(_struct_code(sc) for sc in schema.subcons))
