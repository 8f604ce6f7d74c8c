"""Exceptions raised by rudp.

Two families, as in h11: errors about the *local* program's use of the API,
and errors about what came from the *network*.  The user-facing exceptions of
the drivers subclass the matching builtins so that code written against plain
sockets (``except socket.timeout``, ``except ConnectionError``) keeps working.

Connection failures form one family::

    ConnectionFailed(RudpError, ConnectionError)     .reason .undelivered .kind
    +-- PeerUnreachable                              silence (not a TimeoutError: see there)
    |   +-- LingerExpired                            close() ran out of ``linger`` first
    +-- ConnectionReset(.., ConnectionResetError)    the peer sent a RESET
    +-- ConnectionAborted(.., ConnectionAbortedError) ended locally
    +-- PeerProtocolError                            the peer broke the protocol
"""

from __future__ import annotations

import errno
from typing import Any

from rudp.events import FailureKind


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


class ConnectionLimitExceeded(LocalProtocolError):
    """A local endpoint limit (``Config.max_connections``) refused a new connection."""


class ConnectionClosed(RudpError, ConnectionError):
    """The connection was closed gracefully; no further messages will arrive."""


class ConnectionFailed(RudpError, ConnectionError):
    """The connection ended without completing: the base of every connection failure.

    ``reason`` says why, for people; ``kind`` (a ``rudp.events.FailureKind``)
    says it for programs, ``None`` only when the driver itself broke (a bug).
    ``undelivered`` holds the payload of every message the peer did not
    acknowledge, in send order: nothing is lost silently.  ``address`` is the
    peer's address where one API object serves many peers (``rudp.socket``).

    Which subclass a failure raises is decided by one table,
    ``rudp.drivers._common.FAILURE_EXCEPTIONS``; catch this class for "the
    connection is gone, whatever the cause".
    """

    default_kind: FailureKind | None = None
    """The ``kind`` an instance gets when none is given."""

    def __init__(
        self,
        reason: str,
        undelivered: tuple[object, ...] = (),
        kind: FailureKind | None = None,
        *,
        address: Any = None,
    ) -> None:
        super().__init__(f"{reason} ({len(undelivered)} message(s) undelivered)")
        self.reason = reason
        self.undelivered = undelivered
        self.kind = kind if kind is not None else self.default_kind
        self.address = address


class PeerUnreachable(ConnectionFailed):
    """The peer stopped answering within the give-up budget (``FailureKind.UNREACHABLE``).

    Deliberately *not* a ``TimeoutError``, although a silent peer is a kind of
    timeout: ``socket.timeout`` *is* ``TimeoutError``, so the usual retry loop
    ``except socket.timeout: retry`` (the seed programs' ``udp_remote.py``,
    ``rudp.apps.filetransfer``'s progress loop, any ``recv(timeout=...)``
    polling loop) would swallow a permanent failure as a transient timeout.
    With the blocking ``Connection``, which raises the failure again on every
    call, such a loop would spin forever instead of ending.  A failure is a
    ``ConnectionError`` (and an ``OSError``); only ``rudp.Timeout`` is a timeout.
    """

    default_kind = FailureKind.UNREACHABLE


class LingerExpired(PeerUnreachable):
    """``close()`` ran out of its ``linger`` bound before the peer acknowledged everything.

    By default (``linger=None``) a close waits until every message is
    acknowledged or the core's give-up budget ends the connection (then the
    precise ``ConnectionFailed`` subclass is raised).  An explicit ``linger``
    bounds that wait; when it runs out with messages still unacknowledged, the
    connection is reset (so nothing is delivered behind the caller's back after
    this was raised) and this error lists them in ``undelivered``, in send
    order.  It is a ``PeerUnreachable`` because, from the caller's side, the
    peer was not reachable within the time it allowed: ``except
    rudp.PeerUnreachable`` around ``close()`` covers both ways of giving up.
    ``linger`` is the bound that ran out, in seconds.
    """

    def __init__(
        self,
        reason: str,
        undelivered: tuple[object, ...] = (),
        kind: FailureKind | None = None,
        *,
        address: Any = None,
        linger: float | None = None,
    ) -> None:
        super().__init__(reason, undelivered, kind, address=address)
        self.linger = linger


class ConnectionReset(ConnectionFailed, ConnectionResetError):
    """The peer reset the connection (``FailureKind.RESET_BY_PEER``): it sent a RESET."""

    default_kind = FailureKind.RESET_BY_PEER


class ConnectionAborted(ConnectionFailed, ConnectionAbortedError):
    """The local side ended the connection before it completed.

    ``FailureKind.ABORTED`` (``abort()``, a closed socket, an evicted handshake)
    or ``FailureKind.CLOSED_BY_APPLICATION`` (closed before it could deliver
    what it queued).
    """

    default_kind = FailureKind.ABORTED


class PeerProtocolError(ConnectionFailed):
    """The peer broke the protocol (``FailureKind.PROTOCOL_ERROR``), e.g. inconsistent fragments.

    The network's counterpart of ``LocalProtocolError``.  No builtin matches
    (``ConnectionError`` via ``ConnectionFailed`` is the closest).
    """

    default_kind = FailureKind.PROTOCOL_ERROR


class BufferTooSmall(RudpError, OSError):
    """``recv``/``recvfrom`` was given a ``bufsize`` smaller than the next message.

    A UDP socket would truncate the datagram and lose the rest; rudp never drops
    data silently, so the message stays queued: call again with
    ``bufsize >= message_size``.  The ``errno`` is ``EMSGSIZE``.  ``address``
    is the sender's address when the socket serves several peers (``rudp.socket``
    raises this once per message and meanwhile returns other peers' messages).
    """

    def __init__(self, message_size: int, bufsize: int, *, address: Any = None) -> None:
        sender = "" if address is None else f" from {address!r}"
        super().__init__(
            errno.EMSGSIZE,
            f"next message{sender} is {message_size} bytes, bufsize is {bufsize}; "
            "it stays queued: call again with a larger bufsize",
        )
        self.message_size = message_size
        self.bufsize = bufsize
        self.address = address


class Timeout(RudpError, TimeoutError):
    """A blocking call ran out of time, exactly like ``socket.timeout``."""
