"""Run the conformance suite (tests/conformance.py) against the blocking drivers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import rudp
from rudp.testing.conformance import CHECKS, PairFactory, cases, checks_for


class ConnectionSide:
    """Adapter: ``rudp.Connection`` is already shaped like a Side."""

    def __init__(self, conn: rudp.Connection) -> None:
        self.conn = conn

    def send(self, data: bytes) -> None:
        self.conn.send(data)

    def recv(self, timeout: float) -> bytes:
        return self.conn.recv(timeout=timeout)

    def flush(self, timeout: float) -> None:
        self.conn.flush(timeout=timeout)

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def connection_pair(**options: Any) -> Iterator[tuple[ConnectionSide, ConnectionSide]]:
    """A client ``rudp.connect`` connection and the listener's accepted one."""
    with (
        rudp.listen(("127.0.0.1", 0), **options) as listener,
        rudp.connect(listener.address, **options) as client,
        listener.accept(timeout=10) as server,
    ):
        yield ConnectionSide(client), ConnectionSide(server)


class SocketSide:
    """Adapter: a ``rudp.socket`` talking to one peer."""

    def __init__(self, sock: rudp.socket, peer: Any) -> None:
        self.sock = sock
        self.peer = peer

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.peer)

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        data, address = self.sock.recvfrom(1 << 24)
        assert address == self.peer
        return data

    def flush(self, timeout: float) -> None:
        self.sock.flush(timeout)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def socket_pair(**options: Any) -> Iterator[tuple[SocketSide, SocketSide]]:
    """Two ``rudp.socket`` objects; the client's first message introduces it."""
    with rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM, **options) as server:
        server.bind(("127.0.0.1", 0))
        with rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM, **options) as client:
            client.sendto(b"hello", server.getsockname())
            server.settimeout(10)
            hello, client_address = server.recvfrom(100)
            assert hello == b"hello"
            yield SocketSide(client, server.getsockname()), SocketSide(server, client_address)


socket_pair.supports_close = False  # type: ignore[attr-defined]

FACTORIES: dict[str, Callable[..., Any]] = {
    "connection": connection_pair,
    "socket": socket_pair,
}

CASES = cases(FACTORIES)


@pytest.mark.parametrize(("factory", "check"), CASES)
def test_conformance(factory: PairFactory, check: Callable[[PairFactory], None]) -> None:
    check(factory)


def test_every_check_runs_for_connections() -> None:
    assert checks_for(connection_pair) == CHECKS
