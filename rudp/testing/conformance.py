"""A conformance suite every rudp driver must pass (trio's ``check_two_way_stream`` idea).

The adapter protocol
====================

A driver joins the suite by providing a *pair factory*: a callable taking
driver options (``rudp.Config`` field names plus driver-only ones such as
``linger``) and returning a context manager that yields ``(client, server)``,
two connected ``Side`` objects over real loopback UDP.  Leaving the context
closes both sides and releases every socket and thread (it must tolerate sides
the check already closed).

A ``Side`` is a small *synchronous* facade, so one suite serves blocking and
asynchronous drivers alike (an asyncio adapter runs its loop in a thread and
bridges each call with ``asyncio.run_coroutine_threadsafe``):

``send(data: bytes) -> None``
    Queue one message (may block while the driver's send buffer is full).
``recv(timeout: float) -> bytes``
    Next message.  Raises ``rudp.ConnectionClosed`` once the peer has closed
    gracefully and everything it sent has been returned; raises a
    ``TimeoutError`` if nothing arrives within ``timeout``.
``flush(timeout: float) -> None``
    Return once the peer has acknowledged every message sent so far.
``close() -> None``
    Graceful close (lingering for queued messages is allowed).

A factory may set ``supports_close = False`` (attribute on the factory) when
its API has no end-of-stream signal -- ``rudp.socket`` is datagram-shaped -- and
the close checks are then skipped for it by ``checks_for``.

Each ``check_*`` function takes the factory, runs real traffic with bounded
time (every wait has a timeout) and raises ``AssertionError`` on a violation.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import pytest

import rudp

TIMEOUT = 20.0
"""Upper bound of any single wait in a check (loopback needs milliseconds)."""


class Side(Protocol):
    """One end of a connected pair, as the suite sees it."""

    def send(self, data: bytes) -> None:
        """Queue one message."""

    def recv(self, timeout: float) -> bytes:
        """Next message, ``ConnectionClosed`` at end of stream, ``TimeoutError`` on timeout."""
        ...

    def flush(self, timeout: float) -> None:
        """Wait until every sent message is acknowledged."""

    def close(self) -> None:
        """Graceful close."""


PairFactory = Callable[..., AbstractContextManager[tuple[Side, Side]]]


def _messages(count: int, seed: int, max_size: int = 5000) -> list[bytes]:
    """Deterministic messages of varied sizes: empty, one byte, multi-fragment."""
    rng = random.Random(seed)
    out = [b"", b"x"]
    for i in range(count - 2):
        size = rng.choice([0, 1, 10, 100, 1300, 1400, max_size, rng.randrange(max_size)])
        out.append(i.to_bytes(4, "big") + rng.randbytes(size))
    return out


def _recv_all(side: Side, count: int) -> list[bytes]:
    return [side.recv(TIMEOUT) for _ in range(count)]


def check_ordered_exactly_once(make_pair: PairFactory) -> None:
    """Messages of many sizes arrive whole, in order, exactly once."""
    messages = _messages(200, seed=1)
    with make_pair() as (client, server):
        for message in messages:
            client.send(message)
        assert _recv_all(server, len(messages)) == messages
        client.flush(TIMEOUT)


def check_both_directions_at_once(make_pair: PairFactory) -> None:
    """Two threads send both ways concurrently; each direction stays ordered."""
    upstream = _messages(150, seed=2)
    downstream = _messages(150, seed=3)
    with make_pair() as (client, server):
        errors: list[BaseException] = []

        def pump(side: Side, messages: list[bytes]) -> None:
            try:
                for message in messages:
                    side.send(message)
            except BaseException as exc:  # reported below, in the test thread
                errors.append(exc)

        threads = [
            threading.Thread(target=pump, args=(client, upstream)),
            threading.Thread(target=pump, args=(server, downstream)),
        ]
        for thread in threads:
            thread.start()
        got_down = _recv_all(client, len(downstream))
        got_up = _recv_all(server, len(upstream))
        for thread in threads:
            thread.join(TIMEOUT)
        assert not errors, errors
        assert got_up == upstream
        assert got_down == downstream


def check_large_message(make_pair: PairFactory) -> None:
    """A message far larger than a datagram (the largest the defaults allow) arrives whole."""
    big = random.Random(4).randbytes(rudp.Config().max_message_size)
    with make_pair() as (client, server):
        client.send(big)
        client.send(b"after")
        assert server.recv(TIMEOUT) == big
        assert server.recv(TIMEOUT) == b"after"


def check_echo(make_pair: PairFactory) -> None:
    """Request/response round trips (a reply after each request)."""
    with make_pair() as (client, server):
        for i in range(50):
            request = b"request %d" % i
            client.send(request)
            assert server.recv(TIMEOUT) == request
            server.send(request.upper())
            assert client.recv(TIMEOUT) == request.upper()


def check_recv_times_out(make_pair: PairFactory) -> None:
    """With nothing sent, recv raises a TimeoutError and the pair keeps working."""
    with make_pair() as (client, server):
        try:
            server.recv(0.05)
        except TimeoutError:
            pass
        else:
            raise AssertionError("recv returned without a message")
        client.send(b"late")
        assert server.recv(TIMEOUT) == b"late"


def check_close_delivers_everything_then_ends(make_pair: PairFactory) -> None:
    """After the peer's close, every message it sent arrives, then ConnectionClosed."""
    messages = _messages(100, seed=5)
    with make_pair() as (client, server):
        for message in messages:
            client.send(message)
        client.close()
        assert _recv_all(server, len(messages)) == messages
        for _ in range(2):  # and it stays ended
            try:
                server.recv(TIMEOUT)
            except rudp.ConnectionClosed:
                pass
            else:
                raise AssertionError("recv returned a message after the peer closed")


def check_close_from_server(make_pair: PairFactory) -> None:
    """The accepting side may close first; the client sees the end of stream."""
    with make_pair() as (client, server):
        server.send(b"bye")
        server.close()
        assert client.recv(TIMEOUT) == b"bye"
        try:
            client.recv(TIMEOUT)
        except rudp.ConnectionClosed:
            pass
        else:
            raise AssertionError("recv returned a message after the peer closed")


CHECKS: list[Callable[[PairFactory], None]] = [
    check_ordered_exactly_once,
    check_both_directions_at_once,
    check_large_message,
    check_echo,
    check_recv_times_out,
    check_close_delivers_everything_then_ends,
    check_close_from_server,
]
"""Every check, in a stable order."""

CLOSE_CHECKS = frozenset({check_close_delivers_everything_then_ends, check_close_from_server})


def checks_for(make_pair: Any) -> list[Callable[[PairFactory], None]]:
    """The checks that apply to a factory (close checks need ``supports_close``)."""
    if getattr(make_pair, "supports_close", True):
        return list(CHECKS)
    return [check for check in CHECKS if check not in CLOSE_CHECKS]


def cases(factories: dict[str, Any]) -> list[Any]:
    """``pytest.param(factory, check)`` for every applicable check of every named factory.

    Each driver's test module parametrizes ``test_conformance(factory, check)`` with this.
    """
    return [
        pytest.param(factory, check, id=f"{name}-{check.__name__}")
        for name, factory in factories.items()
        for check in checks_for(factory)
    ]
