"""Exceptions raised by rudp.

Two families, as in h11: errors about the *local* program's use of the API,
and errors about what came from the *network*.  The user-facing exceptions of
the drivers subclass the matching builtins so that code written against plain
sockets (``except socket.timeout``, ``except ConnectionError``) keeps working.
"""

from __future__ import annotations

import errno


class RudpError(Exception):
    """Base class of every rudp exception."""


class BadPacket(RudpError):
    """A datagram failed validation (length, checksum, version, type or field check).

    This is the only exception a decoder of untrusted bytes may raise.  The
    connection drops such a datagram and counts it; it never reaches a driver.
    """


class LocalProtocolError(RudpError):
    """The local program used the API in a way the current state forbids.

    For example ``send()`` after ``close()``, or a message larger than
    ``Config.max_message_size``.
    """


class MessageTooLarge(LocalProtocolError, ValueError):
    """A message is larger than the configured ``max_message_size``."""


class ConnectionClosed(RudpError, ConnectionError):
    """The connection was closed gracefully; no further messages will arrive."""


class PeerUnreachable(RudpError, ConnectionError):
    """The peer stopped answering within the give-up budget.

    ``undelivered`` lists the ids of every message that was not acknowledged,
    in send order (for the socket API, the payloads themselves: see its docs).
    """

    def __init__(self, reason: str, undelivered: tuple[object, ...] = ()) -> None:
        super().__init__(f"{reason} ({len(undelivered)} message(s) undelivered)")
        self.reason = reason
        self.undelivered = undelivered


class ConnectionFailed(PeerUnreachable):
    """The connection failed for a reason other than silence (reset, protocol violation)."""


class BufferTooSmall(RudpError, OSError):
    """``recv``/``recvfrom`` was given a ``bufsize`` smaller than the next message.

    A UDP socket would truncate the datagram and lose the rest; rudp never drops
    data silently, so the message stays queued: call again with
    ``bufsize >= message_size``.  The ``errno`` is ``EMSGSIZE``.
    """

    def __init__(self, message_size: int, bufsize: int) -> None:
        super().__init__(
            errno.EMSGSIZE,
            f"next message is {message_size} bytes, bufsize is {bufsize}; "
            "it stays queued: call again with a larger bufsize",
        )
        self.message_size = message_size
        self.bufsize = bufsize


class Timeout(RudpError, TimeoutError):
    """A blocking call ran out of time, exactly like ``socket.timeout``."""
