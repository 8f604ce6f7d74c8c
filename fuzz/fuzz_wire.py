"""atheris harness: ``rudp.core.wire`` against arbitrary datagrams.

Checks, for every input:

- ``wire.decode`` raises nothing but ``BadPacket``; so does ``decode_handshake`` on the
  payload of a decoded SYN / SYN_ACK;
- the construct reference decoder (``wire_reference.reference_decode``) agrees with the
  fast one on accept / reject and on the decoded packet;
- a decoded packet re-encodes to the very same bytes with both encoders (the wire format
  has exactly one encoding per packet: ``specs/protocol.md`` section 3);
- the same checks on the input with its CRC fixed up (last four bytes replaced by the
  CRC-32 of the rest), so mutations reach the field checks behind the checksum.

Run: ``make fuzz-atheris`` or ``python fuzz/fuzz_wire.py fuzz/corpus/wire -max_total_time=60``.
"""

from __future__ import annotations

import sys
import zlib

import atheris

with atheris.instrument_imports():
    from rudp.core import wire, wire_reference
    from rudp.errors import BadPacket


def _outcome(decoder: object, data: bytes) -> wire.Packet | None:
    assert callable(decoder)
    try:
        packet = decoder(data)
    except BadPacket:
        return None
    assert isinstance(packet, wire.Packet), packet
    return packet


def check(data: bytes) -> None:
    fast = _outcome(wire.decode, data)
    reference = _outcome(wire_reference.reference_decode, data)
    assert fast == reference, f"decoders disagree: fast={fast!r} reference={reference!r}"
    if fast is None:
        return
    assert wire.encoded_size(fast) == len(data)
    assert wire.encode(fast) == data, "fast re-encoding differs"
    assert wire_reference.reference_encode(fast) == data, "reference re-encoding differs"
    if fast.type in (wire.PacketType.SYN, wire.PacketType.SYN_ACK):
        try:
            handshake = wire.decode_handshake(fast.payload)
        except BadPacket:
            return
        assert wire.encode_handshake(handshake) == fast.payload


def with_fixed_crc(data: bytes) -> bytes:
    body = data[:-4] if len(data) >= 4 else data
    return body + zlib.crc32(body).to_bytes(4, "big")


def TestOneInput(data: bytes) -> None:
    check(data)
    check(with_fixed_crc(data))


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
