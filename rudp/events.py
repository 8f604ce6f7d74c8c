"""Events a sans-IO connection reports through ``next_event()``.

Every event is a frozen, slotted dataclass under one base class (the h11
pattern), so drivers can ``match`` on them and tests can compare them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FailureKind(enum.Enum):
    """Why a connection failed: the machine-readable half of ``Failed``.

    Drivers map a kind to an exception with one table (``rudp.drivers._common``);
    nothing parses ``Failed.reason``, which is for people.
    """

    UNREACHABLE = "unreachable"
    """The peer stopped answering within the give-up budget or ``peer_timeout``."""
    RESET_BY_PEER = "reset by peer"
    """The peer sent a RESET (specs/protocol.md section 6.4)."""
    PROTOCOL_ERROR = "protocol error"
    """The peer broke the protocol (for example inconsistent fragments)."""
    ABORTED = "aborted locally"
    """The local program called ``abort()``."""
    CLOSED_BY_APPLICATION = "closed by application"
    """The local program closed before the connection could deliver what it queued."""


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The handshake finished; messages now flow."""


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A whole message arrived, in order, exactly once."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageAcknowledged(Event):
    """The peer has every packet of this message and of every message sent before it.

    Reported in send order: the message is deliverable at the peer, not merely
    received out of order.
    """

    message_id: int


@dataclass(frozen=True, slots=True)
class PeerClosed(Event):
    """The peer closed gracefully: every message it sent has been reported before this."""


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The connection ended cleanly: both sides closed and every message was acknowledged."""


@dataclass(frozen=True, slots=True)
class Failed(Event):
    """The connection ended without completing.

    ``undelivered`` holds the id of every message that was never acknowledged,
    in send order, so no message is lost silently.  ``kind`` says why, for
    programs; ``reason`` says it for people.
    """

    reason: str
    undelivered: tuple[int, ...]
    kind: FailureKind
