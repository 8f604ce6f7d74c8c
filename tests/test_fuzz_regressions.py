"""Inputs the atheris harnesses in ``fuzz/`` found, replayed as plain tests.

Each test feeds the minimised crashing input (bytes as the fuzzer wrote them) to the
function that failed and checks the contract the harness asserts.
"""

from __future__ import annotations

from rudp.core import wire


def test_encoded_size_of_a_decoded_stateless_reset_is_its_length() -> None:
    # fuzz_wire.py, first run: a recorded STATELESS_RESET decodes, but encoded_size
    # reported 62 (the generic header + CRC + 16-byte payload) for a 32-byte datagram,
    # so SansIOConnection.receive_packet over-counted bytes_received.
    data = bytes.fromhex("03080000123456789abcdef0a8f57e76448ae54f9781714e3d40cf29c99dc473")
    packet = wire.decode(data)
    assert packet.type is wire.PacketType.STATELESS_RESET
    assert wire.encoded_size(packet) == len(data) == len(wire.encode(packet)) == 32
