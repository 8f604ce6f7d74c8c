"""An asyncio echo server on rudp (``rudp.aio.serve``).

    python examples/aio_echo_server.py          # prints its address
    python examples/aio_echo_client.py PORT

Every client gets its own ``rudp.aio.Connection``, yet they all share the one
UDP socket the server is bound to.  ``RUDP_EXAMPLE_PORT`` sets the port
(default 1060; 0 picks a free one).  Stop it with Ctrl-C.
"""

import asyncio
import contextlib
import os

import rudp.aio

PORT = int(os.environ.get("RUDP_EXAMPLE_PORT", "1060"))


async def echo(conn: rudp.aio.Connection) -> None:
    """Run once per client: send every message back until the client closes."""
    async for message in conn:  # whole messages, in order; ends at the peer's close
        await conn.send(message)
    await conn.close()  # our FIN, after the last echo


async def main() -> None:
    async with await rudp.aio.serve(echo, "127.0.0.1", PORT) as server:
        print("Serving on", server.address, flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
