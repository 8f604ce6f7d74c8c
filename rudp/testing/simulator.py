"""A deterministic, virtual-time network simulator for two sans-IO peers.

:class:`Simulator` joins two peers (anything with the sans-IO surface of
:class:`rudp.core.connection.SansIOConnection`, spelled out by
:class:`SimulatedPeer`) with one :class:`~rudp.testing.link.Link` per
direction.  Time is virtual: like trio's ``MockClock`` with autojump, the
clock leaps straight to the next deadline, the earliest of both peers'
``get_timer()`` and both links' ``next_arrival()``.  Hours of retransmission
backoff therefore cost milliseconds of wall time, and nothing sleeps.

Every random choice is drawn from generators derived from one integer seed
(:func:`derive_rng`), so a failing seed replays the exact same run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from rudp.events import Event
from rudp.testing.link import Link, LinkProfile

__all__ = ["SimulatedPeer", "Simulator", "derive_rng"]


class SimulatedPeer(Protocol):
    """What the simulator drives: the sans-IO surface of one connection.

    ``SansIOConnection`` has it; so can a test's own fake or a wrapper around a
    connection.  (Not to be confused with ``rudp.Endpoint``, the multiplexer
    the drivers put between a socket and many connections.)
    """

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Every datagram ready to go out at ``now``."""
        ...

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Take one datagram from the network; must never raise for bad input."""
        ...

    def get_timer(self) -> float | None:
        """The absolute time at which ``handle_timer`` wants to run, or ``None``."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``."""
        ...

    def next_event(self) -> Event | None:
        """The next pending event, or ``None``."""
        ...


def derive_rng(seed: int, name: str) -> random.Random:
    """An independent generator for one component of a seeded run.

    Seeding with a string hashes it (SHA-512), so streams named differently are
    unrelated and a component's draws do not shift when another draws more.
    """
    return random.Random(f"rudp.testing/{seed}/{name}")


class Simulator:
    """Two peers, two impaired links and a virtual clock.

    ``a`` sends through ``link_ab`` to ``b``; ``b`` answers through ``link_ba``.
    Events each peer reports are collected in ``events["a"]`` and
    ``events["b"]`` (and passed to ``on_event`` if given), in order.

    Typical use::

        sim = Simulator(client, server, profile_ab=LinkProfile.lossy(0.1), seed=seed)
        client.connect(sim.now)
        assert sim.run_until(lambda: server.is_established, max_time=60)
    """

    def __init__(
        self,
        a: SimulatedPeer,
        b: SimulatedPeer,
        *,
        profile_ab: LinkProfile | None = None,
        profile_ba: LinkProfile | None = None,
        seed: int = 0,
        start_time: float = 0.0,
        on_event: Callable[[str, Event], None] | None = None,
    ) -> None:
        self.a = a
        """The first peer (by convention the client)."""
        self.b = b
        """The second peer (by convention the server)."""
        self.seed = seed
        """The seed every generator of this run derives from."""
        self.now = start_time
        """The virtual clock, in seconds."""
        self.steps = 0
        """Clock jumps taken so far."""
        self.link_ab = Link(profile_ab or LinkProfile(), derive_rng(seed, "link-ab"))
        """The path from ``a`` to ``b``."""
        self.link_ba = Link(profile_ba or LinkProfile(), derive_rng(seed, "link-ba"))
        """The path from ``b`` to ``a``."""
        self.events: dict[str, list[Event]] = {"a": [], "b": []}
        """Every event each side reported, in order."""
        self.on_event = on_event
        """Called as ``on_event(side, event)`` for each event, side ``"a"`` or ``"b"``."""

    # --- driving --------------------------------------------------------------

    def flush(self) -> None:
        """Move both peers' pending output onto the links and collect their events."""
        now = self.now
        for peer, link, side in ((self.a, self.link_ab, "a"), (self.b, self.link_ba, "b")):
            send = link.send
            for datagram in peer.datagrams_to_send(now):
                send(datagram, now)
            self._collect(peer, side)

    def _collect(self, peer: SimulatedPeer, side: str) -> None:
        events = self.events[side]
        hook = self.on_event
        event = peer.next_event()
        while event is not None:
            events.append(event)
            if hook is not None:
                hook(side, event)
            event = peer.next_event()

    def next_deadline(self) -> float | None:
        """The earliest moment anything happens: a timer or an arrival; ``None`` if idle."""
        candidates = [
            t
            for t in (
                self.a.get_timer(),
                self.b.get_timer(),
                self.link_ab.next_arrival(),
                self.link_ba.next_arrival(),
            )
            if t is not None
        ]
        return min(candidates) if candidates else None

    def step(self) -> bool:
        """Jump to the next deadline and process it.  ``False`` if nothing is scheduled.

        At the new time: arrivals in both directions are handed over, then due
        timers fire, then output goes onto the links.  The clock never runs
        backwards: a deadline already in the past runs at the current time.
        """
        self.flush()
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self._advance(deadline)
        return True

    def _advance(self, deadline: float) -> None:
        if deadline > self.now:
            self.now = deadline
        now = self.now
        a, b = self.a, self.b
        for datagram in self.link_ab.deliver(now):
            b.receive_datagram(datagram, now)
        for datagram in self.link_ba.deliver(now):
            a.receive_datagram(datagram, now)
        timer = a.get_timer()
        if timer is not None and timer <= now:
            a.handle_timer(now)
        timer = b.get_timer()
        if timer is not None and timer <= now:
            b.handle_timer(now)
        self.steps += 1
        self.flush()

    def run_until(
        self,
        predicate: Callable[[], bool],
        *,
        max_time: float = 3600.0,
        max_steps: int = 1_000_000,
    ) -> bool:
        """Run until ``predicate()`` holds; ``True`` if it did.

        Returns ``False`` (leaving the clock where it stopped) when the next
        deadline lies more than ``max_time`` virtual seconds after the call,
        after ``max_steps`` clock jumps, or when nothing at all is scheduled.
        The bounds are hard, so a livelocked peer cannot hang a test.
        """
        self.flush()
        horizon = self.now + max_time
        last_step = self.steps + max_steps
        while not predicate():
            if self.steps >= last_step:
                return False
            deadline = self.next_deadline()
            if deadline is None or deadline > horizon:
                return False
            self._advance(deadline)
        return True

    def run_for(self, duration: float, *, max_steps: int = 1_000_000) -> None:
        """Process everything due in the next ``duration`` seconds, then set the clock to its end.

        Raises ``RuntimeError`` if that takes more than ``max_steps`` jumps.
        """
        end = self.now + duration
        if not self.run_until(lambda: False, max_time=duration, max_steps=max_steps):
            deadline = self.next_deadline()
            if deadline is not None and deadline <= end:
                raise RuntimeError(f"more than {max_steps} steps within {duration} s")
        self.now = max(self.now, end)

    def idle(self) -> bool:
        """True when nothing is scheduled: no timer on either side, nothing in flight."""
        self.flush()
        return self.next_deadline() is None

    def __repr__(self) -> str:
        return (
            f"<Simulator seed={self.seed} now={self.now:.6f} steps={self.steps} "
            f"in_flight={len(self.link_ab)}/{len(self.link_ba)}>"
        )
