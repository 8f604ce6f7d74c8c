"""A client and a server wired back to back, stepped by hand (h11's ``ConnectionPair`` idea).

Where :class:`~rudp.testing.Simulator` models a network, :class:`ConnectionPair`
has none: datagrams go straight from one side to the other, with no delay,
whenever the pair exchanges them, and time moves only when the pair fires a
timer.  Tests that want one datagram lost, duplicated or altered say so with a
``drop`` or ``intercept`` hook; everything each side sent is kept in
:attr:`ConnectionPair.sent`, and every event each side reported in
:attr:`ConnectionPair.events`.

Typical use::

    pair = ConnectionPair()
    pair.handshake()
    pair.client.send(b"hello")
    assert pair.run(stop=lambda: pair.acknowledged("client") == [0])
    assert pair.received("server") == [b"hello"]

    lossy = ConnectionPair(drop=lambda sender, datagram: sender == "server")
    lossy.client.connect(lossy.now)
    lossy.run(until=60)                      # every reply is lost: the client gives up
    assert lossy.lifecycle("client") == ["Failed"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rudp.config import Config
from rudp.core import wire
from rudp.events import Event, MessageAcknowledged, MessageReceived
from rudp.testing.harness import make_pair

if TYPE_CHECKING:
    from rudp.core.connection import SansIOConnection

__all__ = ["ConnectionPair", "Drop", "Intercept"]

Intercept = Callable[[str, bytes], Iterable[bytes]]
"""``intercept(sender, datagram) -> datagrams to deliver``; ``sender`` is "client" or "server"."""

Drop = Callable[[str, bytes], bool]
"""``drop(sender, datagram) -> True to lose the datagram``; ``sender`` is "client" or "server"."""

_MAX_ROUNDS = 1000
"""Exchange rounds allowed at one instant before the pair calls it a livelock."""


class ConnectionPair:
    """A client and a server ``SansIOConnection`` joined by an instant wire.

    The pair plays both the network and both applications:

    - :meth:`pump` exchanges datagrams until both sides are quiet at the
      current instant; :meth:`run` also fires timers, jumping the clock from
      one deadline to the next, until a condition holds or a time is reached;
      :meth:`advance` moves the clock by a duration; :meth:`deliver` hands one
      side's pending datagrams to the other once, without the replies.
    - ``drop`` and ``intercept`` decide what happens to each datagram in
      flight; :attr:`sent` logs every datagram before they do.
    - :meth:`pump`, :meth:`run`, :meth:`advance` and :meth:`handshake` read
      every event of both sides into :attr:`events`, like an application that
      reads promptly (which matters: reading is what reopens the receive window).
      :meth:`deliver`, and calls on :attr:`client` / :attr:`server` made by
      the test itself, leave events pending until :meth:`collect_events`.

    Both connections' random generators derive from ``seed``
    (:func:`~rudp.testing.make_pair`).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        seed: int = 0,
        server_config: Config | None = None,
        client_initial_sequence: int | None = None,
        server_initial_sequence: int | None = None,
        now: float = 0.0,
        drop: Drop | None = None,
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
        """The pair's clock, in seconds.  The pair moves it only forward, to fire a
        timer (or in :meth:`advance`); a test may set it to anything."""
        self.drop = drop
        """``drop(sender, datagram) -> bool``: True loses the datagram.  Asked first."""
        self.intercept = intercept
        """``intercept(sender, datagram) -> datagrams to deliver`` for each datagram
        ``drop`` kept: nothing to lose it, two copies to duplicate it, other bytes
        to corrupt it."""
        self.sent: list[tuple[str, bytes]] = []
        """``(sender, datagram)`` for every datagram either side sent, in order,
        as sent (before ``drop`` and ``intercept``; lost ones included)."""
        self.events: dict[str, list[Event]] = {"client": [], "server": []}
        """Every event each side reported (``"client"`` / ``"server"``), in order."""

    # --- the two sides ----------------------------------------------------------

    def other(self, conn: SansIOConnection) -> SansIOConnection:
        """The peer of ``conn``."""
        return self.server if conn is self.client else self.client

    def both_closed(self) -> bool:
        """Both connections are terminal (``is_closed``)."""
        return self.client.is_closed and self.server.is_closed

    # --- moving datagrams ---------------------------------------------------------

    def deliver(self, sender: str) -> int:
        """Hand ``sender``'s pending datagrams to the other side once; returns how many arrived.

        ``sender`` is ``"client"`` or ``"server"``.  The datagrams are logged and
        go through ``drop`` and ``intercept``; the receiver's replies stay
        queued, and neither side's events are read.
        """
        if sender == "client":
            src, dst = self.client, self.server
        elif sender == "server":
            src, dst = self.server, self.client
        else:
            raise ValueError(f"sender must be 'client' or 'server', not {sender!r}")
        now = self.now
        delivered = 0
        for datagram in src.datagrams_to_send(now):
            self.sent.append((sender, datagram))
            if self.drop is not None and self.drop(sender, datagram):
                continue
            outgoing = [datagram] if self.intercept is None else self.intercept(sender, datagram)
            for data in outgoing:
                dst.receive_datagram(data, now)
                delivered += 1
        return delivered

    def collect_events(self) -> None:
        """Read every pending event of both sides into :attr:`events`."""
        for side, conn in (("client", self.client), ("server", self.server)):
            events = self.events[side]
            while (event := conn.next_event()) is not None:
                events.append(event)

    def _round(self) -> tuple[int, int]:
        """One exchange each way, then read events: (datagrams sent, datagrams delivered)."""
        before = len(self.sent)
        delivered = self.deliver("client") + self.deliver("server")
        self.collect_events()
        return len(self.sent) - before, delivered

    def pump(self, *, max_rounds: int = _MAX_ROUNDS) -> int:
        """Exchange datagrams until neither side has anything to send; returns how many arrived.

        Time does not move, so acks held back by ``max_ack_delay`` stay held
        until a timer fires (:meth:`run`, :meth:`advance`).  Raises
        ``RuntimeError`` after ``max_rounds`` exchanges that still produce
        output (a livelock at one instant).
        """
        delivered = 0
        for _ in range(max_rounds):
            sent, arrived = self._round()
            delivered += arrived
            if not sent:
                return delivered
        raise RuntimeError(f"still exchanging datagrams after {max_rounds} rounds at t={self.now}")

    # --- moving time ----------------------------------------------------------------

    def run(
        self,
        *,
        until: float | None = None,
        stop: Callable[[], bool] | None = None,
        max_steps: int = 100_000,
    ) -> bool:
        """Exchange datagrams and fire timers in deadline order; ``True`` if ``stop()`` held.

        Stops as soon as ``stop()`` holds (checked after every exchange round),
        or when nothing is scheduled any more, or when the next timer lies
        after the absolute time ``until`` (``None``: no limit).  The clock is
        left at the last timer fired: unlike :meth:`advance` it does not jump
        to ``until``.  Raises ``RuntimeError`` after ``max_steps`` timer
        firings, or on a livelock at one instant.
        """
        for _ in range(max_steps):
            for _ in range(_MAX_ROUNDS):
                sent, _ = self._round()
                if stop is not None and stop():
                    return True
                if not sent:
                    break
            else:
                raise RuntimeError(
                    f"still exchanging datagrams after {_MAX_ROUNDS} rounds at t={self.now}"
                )
            timers = [
                t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None
            ]
            if not timers or (until is not None and min(timers) > until):
                return False
            self.now = max(self.now, min(timers))
            for conn in (self.client, self.server):
                timer = conn.get_timer()
                if timer is not None and timer <= self.now:
                    conn.handle_timer(self.now)
        raise RuntimeError(f"more than {max_steps} timer steps (now t={self.now})")

    def advance(self, seconds: float, *, max_steps: int = 100_000) -> None:
        """Move the clock forward by ``seconds``, firing each due timer in order and pumping.

        The clock ends at exactly ``now + seconds``.
        """
        end = self.now + seconds
        self.run(until=end, max_steps=max_steps)
        self.now = max(self.now, end)

    def handshake(self) -> None:
        """Connect the client and run until both sides are established, then pump.

        Lost handshake packets are retransmitted as usual, so this works through
        a ``drop`` rule too.  Raises ``RuntimeError`` if the handshake cannot
        complete.
        """
        self.client.connect(self.now)
        if not self.run(stop=lambda: self.client.is_established and self.server.is_established):
            raise RuntimeError(f"the handshake did not complete (now t={self.now})")
        self.pump()

    # --- what each side saw ---------------------------------------------------------

    def received(self, side: str) -> list[bytes]:
        """Payloads of ``side``'s ``MessageReceived`` events so far, in order."""
        return [e.data for e in self.events[side] if isinstance(e, MessageReceived)]

    def acknowledged(self, side: str) -> list[int]:
        """Ids of ``side``'s ``MessageAcknowledged`` events so far, in order."""
        return [e.message_id for e in self.events[side] if isinstance(e, MessageAcknowledged)]

    def lifecycle(self, side: str) -> list[str]:
        """Class names of ``side``'s events other than messages and acks, in order.

        For a clean run: ``["Connected", "PeerClosed", "Closed"]``.
        """
        return [
            type(e).__name__
            for e in self.events[side]
            if not isinstance(e, MessageReceived | MessageAcknowledged)
        ]

    def packets(self, since: int = 0) -> list[tuple[str, wire.Packet]]:
        """``(sender, decoded packet)`` for ``sent[since:]``."""
        return [(sender, wire.decode(datagram)) for sender, datagram in self.sent[since:]]
