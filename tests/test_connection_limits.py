"""Connection caps on real sockets (spec section 13.4): a listener at ``max_connections``
refuses the next client at once, with an error that says why, on every face, with a
pre-shared key as without (the keyed refusal carries its answer tag, section 6.8.1)."""

from __future__ import annotations

import asyncio

import pytest

import rudp
import rudp.aio
from rudp.errors import ConnectionReset

REFUSED = "connection refused by peer"
PSK = bytes(range(32))
KEYS = pytest.mark.parametrize("psk", [None, PSK], ids=["unkeyed", "psk"])


@KEYS
def test_blocking_listener_refuses_beyond_max_connections(psk: bytes | None) -> None:
    # timeout=5 is far below peer_timeout (30 s): only a believed refusal ends it in time.
    with (
        rudp.listen(("127.0.0.1", 0), max_connections=1, psk=psk) as listener,
        rudp.connect(listener.address, timeout=5, psk=psk) as first,
    ):
        with pytest.raises(ConnectionReset, match=REFUSED) as refused:
            rudp.connect(listener.address, timeout=5, psk=psk)
        assert "max_connections" in str(refused.value)
        first.send(b"still served")
        with listener.accept(timeout=5) as peer:
            assert peer.recv(timeout=5) == b"still served"


@KEYS
def test_asyncio_server_refuses_beyond_max_connections(psk: bytes | None) -> None:
    async def main() -> None:
        served = asyncio.Event()

        async def handler(conn: rudp.aio.Connection) -> None:
            assert await conn.recv() == b"still served"
            served.set()

        # close_linger: the server's TIME-WAIT after the last FIN, not what is tested here.
        async with await rudp.aio.serve(
            handler, "127.0.0.1", 0, max_connections=1, psk=psk, close_linger=0.5
        ) as server:
            first = await rudp.aio.connect(server.address, psk=psk)
            with pytest.raises(ConnectionReset, match=REFUSED):
                await asyncio.wait_for(rudp.aio.connect(server.address, psk=psk), 5)
            await first.send(b"still served")
            await asyncio.wait_for(served.wait(), 5)
            await first.close()

    asyncio.run(main())
