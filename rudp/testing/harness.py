"""High-level helpers: a whole two-way transfer over a simulated network, in one call.

:func:`transfer` is the building block of rudp's own property tests, and is
public so that users can write theirs::

    from hypothesis import given, strategies as st
    from rudp.testing import LinkProfile, transfer

    @given(st.lists(st.binary()), st.integers(0, 2**32))
    def test_my_messages_survive(messages, seed):
        result = transfer(messages, [], profile_ab=LinkProfile.lossy(0.3), seed=seed)
        result.assert_complete(messages, [])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from rudp.config import Config
from rudp.events import (
    Closed,
    Connected,
    Event,
    Failed,
    MessageAcknowledged,
    MessageReceived,
    PeerClosed,
)
from rudp.testing.link import LinkProfile, LinkStats
from rudp.testing.simulator import Simulator, derive_rng

if TYPE_CHECKING:
    from rudp.core.connection import SansIOConnection

__all__ = ["SideResult", "TransferResult", "make_pair", "transfer"]

CloseMode = Literal["client", "server", "both", "none"]


@dataclass
class SideResult:
    """What one side (client or server) of a :func:`transfer` saw."""

    received: list[bytes] = field(default_factory=list)
    """Payloads of its ``MessageReceived`` events, in order."""
    acknowledged: list[int] = field(default_factory=list)
    """Ids from its ``MessageAcknowledged`` events, in order."""
    connected: bool = False
    """Whether it reported ``Connected``."""
    failed: Failed | None = None
    """Its ``Failed`` event, if the connection failed."""
    failed_at: float | None = None
    """Virtual time of the ``Failed`` event."""
    peer_closed: bool = False
    """Whether it reported ``PeerClosed``."""
    closed: bool = False
    """Whether it reported ``Closed``."""
    events: list[Event] = field(default_factory=list)
    """Every event except ``MessageReceived`` (whose data is in ``received``), in order."""
    stats: Any = None
    """The connection's ``stats`` snapshot when the run ended."""


@dataclass
class TransferResult:
    """The outcome of :func:`transfer`.  ``a`` is the client, ``b`` the server."""

    seed: int
    """The seed of the run: pass it back to :func:`transfer` to replay it exactly."""
    a: SideResult
    """The client's view."""
    b: SideResult
    """The server's view."""
    completed_at: float | None
    """Virtual time when every message was delivered and acknowledged (``None`` if never)."""
    duration: float
    """Virtual time when the run ended (after the close, if one was requested)."""
    steps: int
    """Simulator clock jumps."""
    link_ab: LinkStats
    """Counters of the client-to-server path."""
    link_ba: LinkStats
    """Counters of the server-to-client path."""

    @property
    def failures(self) -> dict[str, Failed]:
        """``Failed`` events by side (``"a"``/``"b"``); empty when nothing failed."""
        return {
            side: result.failed
            for side, result in (("a", self.a), ("b", self.b))
            if result.failed is not None
        }

    @property
    def complete(self) -> bool:
        """Every message was delivered and acknowledged in both directions."""
        return self.completed_at is not None

    def assert_complete(
        self,
        messages_a_to_b: Sequence[bytes],
        messages_b_to_a: Sequence[bytes],
        *,
        closed: bool = True,
    ) -> None:
        """Raise ``AssertionError`` unless the transfer was perfect.

        Perfect means: each side received exactly the other's messages, in order,
        once each; each side saw every one of its messages acknowledged, in send
        order; nothing failed; and (with ``closed``) both sides ended ``Closed``.
        """
        context = f"(seed={self.seed})"
        assert not self.failures, f"connection failed {context}: {self.failures}"
        for name, receiver, sent in (
            ("b", self.b, messages_a_to_b),
            ("a", self.a, messages_b_to_a),
        ):
            if receiver.received != list(sent):
                raise AssertionError(
                    f"side {name} received {_summary(receiver.received)}, "
                    f"expected {_summary(sent)} {context}"
                )
        for name, sender, sent in (("a", self.a, messages_a_to_b), ("b", self.b, messages_b_to_a)):
            assert sender.acknowledged == list(range(len(sent))), (
                f"side {name} acknowledged {sender.acknowledged[:20]}..., "
                f"expected 0..{len(sent) - 1} {context}"
            )
        if closed:
            assert self.a.closed and self.b.closed, (
                f"not closed cleanly: a={self.a.events[-3:]} b={self.b.events[-3:]} {context}"
            )


def _summary(messages: Sequence[bytes]) -> str:
    sizes = [len(m) for m in messages]
    shown = ", ".join(map(str, sizes[:8])) + (", ..." if len(sizes) > 8 else "")
    return f"{len(sizes)} message(s) of sizes [{shown}]"


def make_pair(
    config: Config | None = None,
    *,
    seed: int = 0,
    server_config: Config | None = None,
    client_initial_sequence: int | None = None,
    server_initial_sequence: int | None = None,
) -> tuple[SansIOConnection, SansIOConnection]:
    """A client and a server ``SansIOConnection`` whose generators derive from ``seed``."""
    from rudp.core.connection import SansIOConnection

    client = SansIOConnection(
        config,
        is_client=True,
        rng=derive_rng(seed, "client"),
        initial_sequence=client_initial_sequence,
    )
    server = SansIOConnection(
        server_config if server_config is not None else config,
        is_client=False,
        rng=derive_rng(seed, "server"),
        initial_sequence=server_initial_sequence,
    )
    return client, server


class _Tracker:
    """Sorts the events of one side into a :class:`SideResult` as they happen."""

    def __init__(self, simulator: Simulator) -> None:
        self._sim = simulator
        self.sides = {"a": SideResult(), "b": SideResult()}

    def __call__(self, side: str, event: Event) -> None:
        result = self.sides[side]
        if type(event) is MessageReceived:
            result.received.append(event.data)
            return
        result.events.append(event)
        if type(event) is MessageAcknowledged:
            result.acknowledged.append(event.message_id)
        elif isinstance(event, Connected):
            result.connected = True
        elif isinstance(event, Failed):
            result.failed = event
            result.failed_at = self._sim.now
        elif isinstance(event, Closed):
            result.closed = True
        elif isinstance(event, PeerClosed):
            result.peer_closed = True


def transfer(
    messages_a_to_b: Sequence[bytes] = (),
    messages_b_to_a: Sequence[bytes] = (),
    *,
    profile_ab: LinkProfile | None = None,
    profile_ba: LinkProfile | None = None,
    seed: int = 0,
    config: Config | None = None,
    server_config: Config | None = None,
    close: CloseMode = "both",
    client_initial_sequence: int | None = None,
    server_initial_sequence: int | None = None,
    max_time: float = 24 * 3600.0,
    max_steps: int = 5_000_000,
) -> TransferResult:
    """Connect a client (``a``) to a server (``b``) and exchange messages both ways at once.

    The client connects at time 0 and both sides queue all their messages at
    once (sending before ``Connected`` is allowed).  The simulator runs until
    both sides are connected and every message is delivered and acknowledged
    in both directions, or both sides are terminal (failed or closed).  Then,
    if nothing failed, ``close`` says who calls ``close()``: the client, the
    server, both at the same moment, or nobody; the run continues until both
    sides report ``Closed``.
    ``profile_ba`` defaults to ``profile_ab`` (a symmetric path).

    The whole run is determined by ``seed`` (links and both connections' random
    generators derive from it).  ``max_time`` (virtual seconds) and
    ``max_steps`` bound the run; a run that hits them is returned incomplete
    rather than raising, so tests can report what happened.
    """
    client, server = make_pair(
        config,
        seed=seed,
        server_config=server_config,
        client_initial_sequence=client_initial_sequence,
        server_initial_sequence=server_initial_sequence,
    )
    sim = Simulator(
        client,
        server,
        profile_ab=profile_ab,
        profile_ba=profile_ba if profile_ba is not None else profile_ab,
        seed=seed,
    )
    tracker = _Tracker(sim)
    sim.on_event = tracker
    a, b = tracker.sides["a"], tracker.sides["b"]
    want_a, want_b = len(messages_b_to_a), len(messages_a_to_b)

    client.connect(sim.now)
    for message in messages_a_to_b:
        client.send(message)
    for message in messages_b_to_a:
        server.send(message)

    def done() -> bool:
        return (
            a.connected
            and b.connected
            and len(b.received) >= want_b
            and len(a.received) >= want_a
            and len(a.acknowledged) >= want_b
            and len(b.acknowledged) >= want_a
        ) or (client.is_closed and server.is_closed)

    start_steps = sim.steps
    sim.run_until(done, max_time=max_time, max_steps=max_steps)
    completed_at = sim.now if done() and not (a.failed or b.failed) else None
    if completed_at is not None and close != "none":
        if close in ("client", "both"):
            client.close(sim.now)
        if close in ("server", "both"):
            server.close(sim.now)
        remaining_steps = max_steps - (sim.steps - start_steps)
        sim.run_until(
            lambda: client.is_closed and server.is_closed,
            max_time=max_time - sim.now,
            max_steps=max(0, remaining_steps),
        )
    elif completed_at is None:
        # One side failed (or the bounds were hit): let the other side reach its own end.
        sim.run_until(
            lambda: client.is_closed and server.is_closed,
            max_time=max(0.0, max_time - sim.now),
            max_steps=max(0, max_steps - (sim.steps - start_steps)),
        )
    a.stats = client.stats
    b.stats = server.stats
    return TransferResult(
        seed=seed,
        a=a,
        b=b,
        completed_at=completed_at,
        duration=sim.now,
        steps=sim.steps,
        link_ab=sim.link_ab.stats,
        link_ba=sim.link_ba.stats,
    )
