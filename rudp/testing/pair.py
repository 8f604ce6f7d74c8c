"""A client and a server wired back to back, stepped by hand (h11's ``ConnectionPair`` idea).

Where :class:`~rudp.testing.Simulator` models a network, :class:`ConnectionPair`
has none: datagrams go straight from one side to the other when you call
:meth:`ConnectionPair.pump`, and time moves only when you call
:meth:`ConnectionPair.advance`.  An optional ``intercept`` hook sees every
datagram in flight and returns what to deliver instead (nothing to drop it,
two copies to duplicate it, altered bytes to corrupt it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rudp.config import Config
from rudp.events import Event
from rudp.testing.harness import make_pair

if TYPE_CHECKING:
    from rudp.core.connection import SansIOConnection

__all__ = ["ConnectionPair"]

Intercept = Callable[[str, bytes], Iterable[bytes]]


class ConnectionPair:
    """A client and a server ``SansIOConnection`` joined by a perfect, instant wire."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        seed: int = 0,
        server_config: Config | None = None,
        client_initial_sequence: int | None = None,
        server_initial_sequence: int | None = None,
        now: float = 0.0,
        intercept: Intercept | None = None,
    ) -> None:
        self.client, self.server = make_pair(
            config,
            seed=seed,
            server_config=server_config,
            client_initial_sequence=client_initial_sequence,
            server_initial_sequence=server_initial_sequence,
        )
        self.now = now
        """The pair's clock; moves only in :meth:`advance`."""
        self.intercept = intercept
        """``intercept(sender, datagram) -> datagrams to deliver``; sender is "client"/"server"."""

    def other(self, conn: SansIOConnection) -> SansIOConnection:
        """The peer of ``conn``."""
        return self.server if conn is self.client else self.client

    def pump(self, *, max_rounds: int = 1000) -> int:
        """Exchange datagrams until neither side has anything to send; returns how many moved.

        Time does not move, so acks held back by ``max_ack_delay`` stay held
        until :meth:`advance`.  Raises ``RuntimeError`` after ``max_rounds``
        exchanges that still produce output (a livelock at one instant).
        """
        moved = 0
        for _ in range(max_rounds):
            progressed = False
            for name, sender, receiver in (
                ("client", self.client, self.server),
                ("server", self.server, self.client),
            ):
                for datagram in sender.datagrams_to_send(self.now):
                    progressed = True
                    outgoing = (
                        [datagram] if self.intercept is None else self.intercept(name, datagram)
                    )
                    for data in outgoing:
                        receiver.receive_datagram(data, self.now)
                        moved += 1
            if not progressed:
                return moved
        raise RuntimeError(f"still exchanging datagrams after {max_rounds} rounds at t={self.now}")

    def handshake(self) -> None:
        """Connect the client and pump until both sides are established."""
        self.client.connect(self.now)
        self.pump()

    def advance(self, seconds: float, *, max_steps: int = 100_000) -> None:
        """Move the clock forward by ``seconds``, firing each due timer in order and pumping."""
        end = self.now + seconds
        for _ in range(max_steps):
            self.pump()
            timers = [
                t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None
            ]
            if not timers or min(timers) > end:
                self.now = end
                return
            self.now = max(self.now, min(timers))
            for conn in (self.client, self.server):
                timer = conn.get_timer()
                if timer is not None and timer <= self.now:
                    conn.handle_timer(self.now)
        raise RuntimeError(f"more than {max_steps} timer steps within {seconds} s")

    @staticmethod
    def events(conn: SansIOConnection) -> list[Event]:
        """Drain and return every pending event of ``conn``."""
        out = []
        event = conn.next_event()
        while event is not None:
            out.append(event)
            event = conn.next_event()
        return out
