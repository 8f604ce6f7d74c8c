"""Half-close: ``Connection.shutdown()`` and ``await conn.write_eof()``.

The side that shuts down sends its FIN after every queued message and goes on
reading the peer's messages until the peer's own FIN ends the iteration.  The
two-way pattern runs through the real-socket lossy proxy (20% loss, 5%
duplication, 10% reordering, 2% corruption each way): both sides send, shut
down and read to the end, and every message must arrive exactly once and in
order in both directions.  Loopback, port 0, every wait bounded.

Why the tests meet at a barrier before shutting down: the core has no
half-closed state on the side that *receives* a FIN (specs/protocol.md section
6.3) -- delivering the peer's FIN closes its own direction too -- so a side
must have queued everything it sends before the other side's FIN can arrive.
The barrier says "both have queued their messages", nothing about timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import rudp
import rudp.aio
from rudp.testing import LinkProfile
from rudp.testing.proxy import LossyProxy

LOSSY = LinkProfile(loss=0.2, duplicate=0.05, reorder=0.1, corrupt=0.02, delay=0.001)
"""The issue's network: 20% loss, 5% duplication, 10% reordering, 2% corruption."""

FAST_RTO = {"min_rto": 0.02, "initial_rto": 0.1, "max_rto": 0.5}
"""A quick RTO keeps the lossy runs short; the budget (peer_timeout) stays the default."""

WAIT = 60.0


def messages(side: str, count: int = 160) -> list[bytes]:
    """Mixed sizes: empty, sub-datagram and multi-fragment messages, tagged by side."""
    return [
        b"%s%04d|" % (side.encode(), i) + bytes([i % 251]) * (i * 53 % 3500) for i in range(count)
    ]


@pytest.fixture
def proxy_for() -> Iterator[list[LossyProxy]]:
    started: list[LossyProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def start_proxy(started: list[LossyProxy], upstream: tuple[str, int], seed: int) -> LossyProxy:
    proxy = LossyProxy(upstream, LOSSY, seed=seed)
    proxy.start()
    started.append(proxy)
    return proxy


def assert_lossy(proxy: LossyProxy) -> None:
    for direction in (proxy.stats.to_server, proxy.stats.to_client):
        assert direction.link["dropped_loss"] > 0


# --- the connection API ------------------------------------------------------------


def test_connection_shutdown_both_ways_through_a_lossy_proxy(proxy_for: list[LossyProxy]) -> None:
    client_sends, server_sends = messages("c"), messages("s")
    queued = threading.Barrier(2, timeout=WAIT)
    got: dict[str, list[bytes]] = {}
    errors: list[BaseException] = []

    def side(conn: rudp.Connection, name: str, outgoing: list[bytes]) -> None:
        try:
            for message in outgoing:
                conn.send(message)
            queued.wait()
            conn.shutdown()
            with pytest.raises(rudp.LocalProtocolError):
                conn.send(b"after shutdown")
            got[name] = list(conn)  # until the peer's FIN
            conn.close()  # everything acknowledged both ways: returns normally
        except BaseException as exc:
            errors.append(exc)
            queued.abort()

    with rudp.listen(("127.0.0.1", 0), **FAST_RTO) as listener:
        proxy = start_proxy(proxy_for, listener.address, seed=21)
        client = rudp.connect(proxy.address, timeout=WAIT, **FAST_RTO)
        server = listener.accept(timeout=WAIT)
        threads = [
            threading.Thread(target=side, args=(client, "client", client_sends)),
            threading.Thread(target=side, args=(server, "server", server_sends)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert got["server"] == client_sends
    assert got["client"] == server_sends
    assert client.stats.retransmissions > 0 and server.stats.retransmissions > 0
    assert_lossy(proxy)


def test_shutdown_keeps_receiving_until_the_peer_closes() -> None:
    with (
        rudp.listen(("127.0.0.1", 0)) as listener,
        rudp.connect(listener.address) as client,
        listener.accept(timeout=WAIT) as server,
    ):
        client.send(b"question")
        client.shutdown()
        client.shutdown()  # idempotent
        assert server.recv(timeout=WAIT) == b"question"
        # The server already has the client's FIN queued behind the question.
        with pytest.raises(rudp.ConnectionClosed):
            server.recv(timeout=WAIT)
        with pytest.raises(rudp.ConnectionClosed):  # its direction closed with the FIN
            server.send(b"too late")
        assert list(client) == []  # the server's FIN followed: iteration ends
        client.flush(timeout=WAIT)  # flush still works after shutdown
    with pytest.raises(rudp.LocalProtocolError):
        client.shutdown()  # after close()


def test_the_peer_answers_what_it_queued_before_reading_the_fin() -> None:
    """Request/response with a half-close: the answer sent first still arrives after our FIN."""
    with (
        rudp.listen(("127.0.0.1", 0)) as listener,
        rudp.connect(listener.address) as client,
        listener.accept(timeout=WAIT) as server,
    ):
        server.send(b"banner")  # queued before the client's FIN can arrive
        client.send(b"request")
        client.shutdown()
        assert client.recv(timeout=WAIT) == b"banner"
        assert list(server) == [b"request"]
        assert list(client) == []


# --- asyncio ---------------------------------------------------------------------------


def test_asyncio_write_eof_both_ways_through_a_lossy_proxy(proxy_for: list[LossyProxy]) -> None:
    client_sends, server_sends = messages("c"), messages("s")
    got: dict[str, list[bytes]] = {}

    async def main() -> None:
        queued = asyncio.Barrier(2)

        async def side(conn: rudp.aio.Connection, name: str, outgoing: list[bytes]) -> None:
            for message in outgoing:
                await conn.send(message)
            await queued.wait()
            assert conn.can_write_eof()
            await conn.write_eof()
            with pytest.raises(rudp.LocalProtocolError):
                await conn.send(b"after write_eof")
            got[name] = [message async for message in conn]
            await conn.close()

        async def handler(conn: rudp.aio.Connection) -> None:
            await side(conn, "server", server_sends)

        async with await rudp.aio.serve(handler, "127.0.0.1", 0, **FAST_RTO) as server:
            proxy = start_proxy(proxy_for, server.address, seed=22)
            conn = await rudp.aio.connect(proxy.address, **FAST_RTO)
            await side(conn, "client", client_sends)
            assert conn.stats.retransmissions > 0
            assert conn.is_closed

    async def bounded() -> None:
        async with asyncio.timeout(WAIT):
            await main()

    asyncio.run(bounded())
    assert got["server"] == client_sends
    assert got["client"] == server_sends
    assert_lossy(proxy_for[0])


def test_write_eof_is_idempotent_and_refused_after_close() -> None:
    received: list[bytes] = []

    async def main() -> None:
        async def greet_then_read(conn: rudp.aio.Connection) -> None:
            await conn.send(b"hello")  # queued before the client's FIN can arrive
            received.extend([message async for message in conn])

        async with await rudp.aio.serve(greet_then_read, "127.0.0.1", 0) as server:
            conn = await rudp.aio.connect(server.address)
            await conn.send(b"ping")
            await conn.write_eof()
            await conn.write_eof()
            assert [message async for message in conn] == [b"hello"]
            await conn.close()
            with pytest.raises(rudp.LocalProtocolError):
                await conn.write_eof()

    asyncio.run(asyncio.wait_for(main(), WAIT))
    assert received == [b"ping"]
