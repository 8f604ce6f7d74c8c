"""Inputs the atheris harnesses in ``fuzz/`` found, replayed as plain tests.

Each test feeds the minimised crashing input (bytes as the fuzzer wrote them) to the
function that failed and checks the contract the harness asserts.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest

from rudp.apps.filetransfer import FileHeader, FileTrailer, TransferError, Verdict, receive_files
from rudp.core import wire
from rudp.errors import ConnectionClosed


def test_encoded_size_of_a_decoded_stateless_reset_is_its_length() -> None:
    # fuzz_wire.py, first run: a recorded STATELESS_RESET decodes, but encoded_size
    # reported 62 (the generic header + CRC + 16-byte payload) for a 32-byte datagram,
    # so SansIOConnection.receive_packet over-counted bytes_received.
    # (The recorded input, rebuilt for the current wire version.)
    data = wire.encode_stateless_reset(
        0x123456789ABCDEF0, bytes.fromhex("a8f57e76448ae54f9781714e3d40cf29")
    )
    packet = wire.decode(data)
    assert packet.type is wire.PacketType.STATELESS_RESET
    assert wire.encoded_size(packet) == len(data) == len(wire.encode(packet)) == 32


# --- rudp.apps.filetransfer: the two header bugs fuzz_file_header.py reported ---------------


class _Peer:
    """The sender's side of a file transfer, as ``receive_files`` sees it."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.sent: list[bytes] = []

    def recv(self, timeout: float | None = None) -> bytes:
        if not self.messages:
            raise ConnectionClosed("the sender closed")
        return self.messages.pop(0)

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("message", [b"[" * 5000, b'{"a":' * 5000])
def test_deeply_nested_json_is_a_transfer_error(message: bytes) -> None:
    # Found by fuzz_file_header.py (raw mode): json.loads raises RecursionError, which is
    # not a ValueError; 5000 bytes is far below MAX_CONTROL_MESSAGE.
    with pytest.raises(TransferError):
        FileHeader.decode_untrusted(message)
    with pytest.raises(TransferError):
        FileTrailer.decode_untrusted(message)
    with pytest.raises(TransferError):
        Verdict.decode_untrusted(message)


# The recorded input, rebuilt for file protocol version 2 (no digest in the header).
LONE_SURROGATE_HEADER = (
    b'{"type": "file", "version": 2, "name": "\\ud800", "size": 1, "chunk_size": 1024}'
)
TRAILER_OF_X = FileTrailer(hashlib.sha256(b"x").hexdigest()).encode()


def test_lone_surrogate_in_a_file_name_is_refused_not_a_crash(tmp_path: Path) -> None:
    # Found by fuzz_file_header.py (structured mode): the header decodes, safe_name returns
    # "\ud800", and tempfile.mkstemp in _receive_one raises UnicodeEncodeError, which
    # neither receive_files nor serve catches: one header kills `rudp recv`.
    peer = _Peer([LONE_SURROGATE_HEADER, b"x", TRAILER_OF_X])
    with contextlib.suppress(TransferError):
        assert list(receive_files(peer, tmp_path)) == []
    assert list(tmp_path.iterdir()) == []
    verdicts = [Verdict.decode_untrusted(message) for message in peer.sent]
    assert verdicts and not verdicts[0].ok  # refused, and the sender is told why
