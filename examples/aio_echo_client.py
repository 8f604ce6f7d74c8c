"""An asyncio echo client on rudp (``rudp.aio.connect``).

    python examples/aio_echo_client.py [PORT]

Sends a few messages to ``aio_echo_server.py`` on 127.0.0.1 and checks that
each comes back, in order.  ``send`` only queues (it waits just when the send
buffer is full), so all messages go out back to back; replies are read with
``recv``.
"""

import asyncio
import os
import sys

import rudp.aio

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("RUDP_EXAMPLE_PORT", "1060"))
MESSAGES = [b"hello", b"", b"x" * 100_000, "caf\u00e9".encode()]  # empty and big ones too


async def main() -> None:
    conn = await rudp.aio.connect(("127.0.0.1", PORT))  # returns once the handshake is done
    for message in MESSAGES:
        await conn.send(message)
    for message in MESSAGES:
        reply = await conn.recv()  # exactly once, in order
        if reply != message:
            raise SystemExit(f"echo mismatch: sent {len(message)} bytes, got {len(reply)}")
        print(f"echoed {len(reply)} bytes")
    await conn.close()  # graceful: waits for our messages to be acknowledged
    print("all", len(MESSAGES), "messages echoed in order")


if __name__ == "__main__":
    asyncio.run(main())
