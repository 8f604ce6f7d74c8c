"""Packet protection after a pre-shared-key handshake (specs/protocol.md section 3.7).

``PacketProtection`` holds one connection's two transport keys (Noise's ``Split``, one
per direction): ``encrypt`` is what the encoders of ``rudp.core.wire`` seal with as they
lay a datagram out, and ``open`` takes every sealed one received.  A datagram is taken
only if its packet number is new to the replay window *and* its tag verifies; the window
moves only after the tag verified, so a forgery cannot push genuine packets out of it
(RFC 4303 section 3.4.3, RFC 6479; WireGuard does the same with its counter).
"""

from __future__ import annotations

from rudp.core.noise import CipherState
from rudp.core.seqnum import expand_seq
from rudp.core.wire import Packet
from rudp.core.wire_sealed import associated_data, opened
from rudp.errors import BadPacket

REPLAY_WINDOW = 4096
"""Packet numbers below the largest authenticated one that are still taken once (section
3.7-3).  Older ones are dropped as replays: reordering that deep is a loss to recovery."""
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
_LOW_32 = 0xFFFFFFFF


class ReplayWindow:
    """Which of the last ``REPLAY_WINDOW`` packet numbers were already taken."""

    __slots__ = ("_seen", "largest")

    def __init__(self) -> None:
        self.largest = -1
        """The largest packet number taken (-1: none yet)."""
        self._seen = 0  # bit i: largest - i was taken

    def is_fresh(self, number: int) -> bool:
        """``number`` was not taken and is not too old to tell."""
        offset = self.largest - number
        if offset < 0:
            return True
        return offset < REPLAY_WINDOW and not (self._seen >> offset) & 1

    def mark(self, number: int) -> None:
        """``number`` was taken (only after its tag verified)."""
        shift = number - self.largest
        if shift > 0:
            # A jump past the whole window forgets it (and never builds a huge integer).
            self._seen = ((self._seen << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.largest = number
        else:
            self._seen |= 1 << -shift


class PacketProtection:
    """Seals what a connection sends and opens what it receives, after its handshake."""

    __slots__ = ("_decrypt", "encrypt", "failures", "opened", "replays", "window")

    def __init__(self, send: CipherState, receive: CipherState) -> None:
        self.encrypt = send.encrypt_at
        """The ``wire.Seal`` the encoders take: they seal as they lay a datagram out."""
        self._decrypt = receive.decrypt_at
        self.window = ReplayWindow()
        self.opened = 0
        """Datagrams that authenticated."""
        self.failures = 0
        """Datagrams whose tag (or inner layout) did not verify: forged or corrupted."""
        self.replays = 0
        """Datagrams dropped by the replay window."""

    def open(self, packet: Packet) -> Packet | None:
        """The packet with its plaintext, or None if it is a replay or not authentic."""
        window = self.window
        largest = window.largest
        low = packet.packet_number
        if largest >= 0 and low == (largest + 1) & _LOW_32:
            number = largest + 1  # the next one, the common case: no expansion to do
        else:
            number = expand_seq(low, max(largest, 0))
        if number <= largest and not window.is_fresh(number):
            self.replays += 1
            return None
        try:
            plaintext = self._decrypt(number, associated_data(packet), packet.payload)
            inner = opened(packet, plaintext)
        except BadPacket:
            self.failures += 1
            return None
        window.mark(number)
        self.opened += 1
        return inner
