"""Sequence and packet numbers: 32 bits on the wire, unbounded inside (specs/protocol.md §7.3)."""

from __future__ import annotations

SEQ_BITS = 32
_MAX_U32 = (1 << SEQ_BITS) - 1
_MAX_U64 = (1 << 64) - 1
SEQ_MODULUS = 1 << SEQ_BITS


def expand_seq(wire_value: int, expected: int) -> int:
    """Recover a full sequence number from its 32 wire bits.

    Picks the value congruent to ``wire_value`` modulo 2**32 that is closest to
    ``expected`` (the next number we expect), as RFC 9000 appendix A.3 does for
    packet numbers.  Windows are far below 2**31, so this is unambiguous for
    every packet an honest peer can send; anything else lands far outside the
    window and is dropped there.
    """
    candidate = (expected & ~_MAX_U32) | wire_value
    half = SEQ_MODULUS >> 1
    if candidate <= expected - half and candidate + SEQ_MODULUS <= _MAX_U64:
        return candidate + SEQ_MODULUS
    if candidate > expected + half and candidate >= SEQ_MODULUS:
        return candidate - SEQ_MODULUS
    return candidate


def wire_seq(seq: int) -> int:
    """The 32 bits of a full sequence number that go on the wire."""
    return seq & _MAX_U32
