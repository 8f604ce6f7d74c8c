"""Every public API through the real-socket lossy proxy at 20% loss (issue 3, deliverable 9).

The proxy drops 20% of datagrams in each direction and also duplicates,
reorders and corrupts some, so every recovery path of the core runs under the
real drivers.  Each test checks delivery exactly: every message, in order, once,
both ways, and that the network really did lose packets.  Loopback only, port 0,
every wait bounded.
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

HOSTILE = LinkProfile(
    loss=0.2, duplicate=0.02, reorder=0.05, corrupt=0.01, delay=0.001, jitter=0.0005
)
"""20% loss each way, with duplication, reordering and corruption."""

MESSAGES = [b"%04d|" % i + bytes([i % 251]) * (i * 37 % 4000) for i in range(120)] + [b""]
"""Mixed sizes: empty, sub-datagram and multi-fragment messages."""

WAIT = 60.0


@pytest.fixture
def proxy_to() -> Iterator[list[LossyProxy]]:
    """Starts proxies on demand and always stops them."""
    started: list[LossyProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def start_proxy(started: list[LossyProxy], upstream: tuple[str, int], seed: int) -> LossyProxy:
    proxy = LossyProxy(upstream, HOSTILE, seed=seed)
    proxy.start()
    started.append(proxy)
    return proxy


def assert_network_was_hostile(proxy: LossyProxy) -> None:
    stats = proxy.stats
    for direction in (stats.to_server, stats.to_client):
        assert direction.link["dropped_loss"] > 0
        assert direction.forwarded < direction.received + direction.link["duplicated"]


def test_socket_api_through_twenty_percent_loss(proxy_to: list[LossyProxy]) -> None:
    with rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        proxy = start_proxy(proxy_to, server.getsockname(), seed=11)
        received: list[bytes] = []

        def echo() -> None:
            server.settimeout(WAIT)
            for _ in MESSAGES:
                data, address = server.recvfrom(65535)
                received.append(data)
                server.sendto(data, address)

        thread = threading.Thread(target=echo)
        thread.start()
        with rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM) as client:
            client.settimeout(WAIT)
            for message in MESSAGES:
                client.sendto(message, proxy.address)
            echoed = [client.recvfrom(65535)[0] for _ in MESSAGES]
            thread.join(WAIT)
            assert not thread.is_alive()
            assert received == MESSAGES
            assert echoed == MESSAGES
            client.flush(WAIT)
    assert_network_was_hostile(proxy)


def test_connection_api_through_twenty_percent_loss(proxy_to: list[LossyProxy]) -> None:
    with rudp.listen(("127.0.0.1", 0)) as listener:
        proxy = start_proxy(proxy_to, listener.address, seed=12)
        received: list[bytes] = []

        def echo() -> None:
            with listener.accept(timeout=WAIT) as peer:
                for message in peer:
                    received.append(message)
                    peer.send(message)
                peer.flush(timeout=WAIT)

        thread = threading.Thread(target=echo)
        thread.start()
        with rudp.connect(proxy.address, timeout=WAIT) as conn:
            for message in MESSAGES:
                conn.send(message)
            echoed = [conn.recv(timeout=WAIT) for _ in MESSAGES]
            conn.flush(timeout=WAIT)
            assert conn.stats.retransmissions > 0
        thread.join(WAIT)
        assert not thread.is_alive()
    assert received == MESSAGES
    assert echoed == MESSAGES
    assert_network_was_hostile(proxy)


def test_asyncio_api_through_twenty_percent_loss(proxy_to: list[LossyProxy]) -> None:
    received: list[bytes] = []

    async def echo(conn: rudp.aio.Connection) -> None:
        async for message in conn:
            received.append(message)
            await conn.send(message)

    async def main() -> list[bytes]:
        async with await rudp.aio.serve(echo, "127.0.0.1", 0) as server:
            proxy = start_proxy(proxy_to, server.address, seed=13)
            conn = await rudp.aio.connect(proxy.address)
            for message in MESSAGES:
                await conn.send(message)
            echoed = [await conn.recv() for _ in MESSAGES]
            assert conn.stats.retransmissions > 0
            await conn.close()
            return echoed

    async def bounded() -> list[bytes]:
        async with asyncio.timeout(WAIT):
            return await main()

    echoed = asyncio.run(bounded())
    assert received == MESSAGES
    assert echoed == MESSAGES
    assert_network_was_hostile(proxy_to[0])
