"""One connection of an ``Endpoint``, with its peer address (see ``rudp.core.endpoint``).

The driver mutates a connection only through its association (``send``, ``close``,
``abort``, ``next_event``), so the endpoint knows to collect its output and re-read
its timer; anything may be read from ``connection``.  Re-exported by the endpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rudp.core.migration import Migration
from rudp.core.retry import AddressBudget
from rudp.events import Event

if TYPE_CHECKING:
    from rudp.core.endpoint import Endpoint

__all__ = ["Address", "Association"]

Address = Any
"""A peer address as the driver normalised it (compared for equality only)."""


class Association:
    """One connection of an endpoint, with its peer address.

    Mutate the core only through these methods so the endpoint collects its
    output and re-reads its timer; read anything from ``connection``.
    """

    __slots__ = (
        "__weakref__",
        "_endpoint",
        "_paused",
        "_remote_id",
        "_syn_key",
        "_timer",
        "accepted",
        "address",
        "budget",
        "connection",
        "context",
        "established",
        "initiated_locally",
        "migration",
        "received",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        connection: Any,
        address: Address,
        *,
        initiated_locally: bool,
        syn_key: tuple[Address, int] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self.connection: Any = connection
        """The sans-IO core (``SansIOConnection``)."""
        self.address: Address = address
        """The peer's address; every datagram of this connection goes there."""
        self.initiated_locally = initiated_locally
        """True for ``connect()``, False for a connection created by a peer's SYN."""
        self.accepted = initiated_locally
        """Handed out by ``accept()`` (always true for local connections)."""
        self.established = False
        """A ``Connected`` event has been read for it."""
        self.received = False
        """A ``MessageReceived`` event has been read for it."""
        self.context: Any = None
        """Free for the driver (e.g. its per-connection queue)."""
        self._paused = False
        self.migration: Migration | None = None
        """The peer's new address while it is validated (``rudp.core.migration``), or None."""
        self.budget: AddressBudget | None = None
        """A server connection whose address is not validated yet: the 3x limit's count."""
        self._remote_id: int | None = None  # the peer's id, once the core learned it
        self._syn_key = syn_key
        self._timer: float | None = None

    def __repr__(self) -> str:
        return (
            f"<Association {self.address!r} "
            f"{'client' if self.initiated_locally else 'server'} "
            f"id={self.connection.local_connection_id}>"
        )

    @property
    def close_done(self) -> bool:
        """Our FIN, after all our data, is acknowledged, or the connection is over.

        The core's ``close_done``: a driver's blocking ``close()`` may return.
        """
        done: bool = self.connection.close_done
        return done

    @property
    def paused(self) -> bool:
        """While true, ``Endpoint.next_event`` skips this association (unless terminated)."""
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = value
        if not value:
            self._endpoint._eventful[self] = None

    def send(self, message: bytes) -> int:
        """Queue a message (``SansIOConnection.send``); returns its message id."""
        message_id: int = self.connection.send(message)
        self._endpoint._touch(self)
        return message_id

    def close(self, now: float, *, reading: bool = True, left_unread: bool = False) -> None:
        """Graceful close: FIN after every queued message (``SansIOConnection.close``).

        ``reading=False`` is the full close of a driver's ``close()`` (section 6.3).
        """
        self.connection.close(now, reading=reading, left_unread=left_unread)
        self._endpoint._touch(self)

    def abort(self, reason: str) -> None:
        """Abortive close: RESET to the peer, ``Failed`` locally."""
        self.connection.abort(reason)
        self._endpoint._touch(self)

    def next_event(self) -> Event | None:
        """Next event of this connection only (reading may re-open the receive window)."""
        event: Event | None = self.connection.next_event()
        if event is not None:
            self._endpoint._on_event(self, event)
        return event
