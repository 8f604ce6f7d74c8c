"""Connection caps on real sockets (spec section 13.4): a listener at ``max_connections``
refuses the next client at once, with an error that says why, on every face."""

from __future__ import annotations

import asyncio

import pytest

import rudp
import rudp.aio
from rudp.errors import ConnectionReset

REFUSED = "connection refused by peer"


def test_blocking_listener_refuses_beyond_max_connections() -> None:
    with (
        rudp.listen(("127.0.0.1", 0), max_connections=1) as listener,
        rudp.connect(listener.address, timeout=5) as first,
    ):
        with pytest.raises(ConnectionReset, match=REFUSED) as refused:
            rudp.connect(listener.address, timeout=5)
        assert "max_connections" in str(refused.value)
        first.send(b"still served")
        with listener.accept(timeout=5) as peer:
            assert peer.recv(timeout=5) == b"still served"


def test_asyncio_server_refuses_beyond_max_connections() -> None:
    async def main() -> None:
        served = asyncio.Event()

        async def handler(conn: rudp.aio.Connection) -> None:
            assert await conn.recv() == b"still served"
            served.set()

        async with await rudp.aio.serve(handler, "127.0.0.1", 0, max_connections=1) as server:
            first = await rudp.aio.connect(server.address)
            with pytest.raises(ConnectionReset, match=REFUSED):
                await asyncio.wait_for(rudp.aio.connect(server.address), 5)
            await first.send(b"still served")
            await asyncio.wait_for(served.wait(), 5)
            await first.close()

    asyncio.run(main())
