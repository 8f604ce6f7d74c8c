"""Events a sans-IO connection reports through ``next_event()``.

Every event is a frozen, slotted dataclass under one base class (the h11
pattern), so drivers can ``match`` on them and tests can compare them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    in send order, so no message is lost silently.
    """

    reason: str
    undelivered: tuple[int, ...]
