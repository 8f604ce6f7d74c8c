"""How long a peer takes to learn that the other side closed while it was still sending.

The connection-life scenario, on loopback through ``rudp.testing.proxy.LossyProxy``
(20% loss, 5% duplication, 10% reordering, 2% corruption): the client sends 160
messages and flushes; the server reads them, then starts sending 3,000 more; the
client keeps reading in a thread and calls ``close()`` (a full close, RFC 1122
section 4.2.2.13).  Printed: what the client's close did, how many messages it read,
how the server's ``flush()`` ended and how long after the close.  Before prompt
resets the server heard nothing for ``peer_timeout`` (30 s).

    python bench/two_way_close.py [--seeds 1,2,3]

Every wait is bounded; a run ends within about a minute even if something hangs.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time

import rudp
from rudp.testing import LinkProfile
from rudp.testing.proxy import LossyProxy

LOSSY = LinkProfile(loss=0.2, duplicate=0.05, reorder=0.1, corrupt=0.02, delay=0.001)
WAIT = 30.0


def run(seed: int) -> str:
    """One run; a line of results."""
    with rudp.listen(("127.0.0.1", 0)) as listener:
        proxy = LossyProxy(listener.address, LOSSY, seed=seed)
        proxy.start()
        try:
            client = rudp.connect(proxy.address, timeout=WAIT)
            server = listener.accept(timeout=WAIT)
            for i in range(160):
                client.send(b"c%d" % i)
            client.flush(timeout=WAIT)
            for _ in range(160):
                server.recv(timeout=WAIT)
            outcome: dict[str, object] = {}
            started = threading.Event()

            def serve() -> None:
                try:
                    try:
                        for i in range(3000):
                            server.send(b"s%d" % i * 200)
                            started.set()
                    except rudp.ConnectionClosed:
                        pass  # the client's FIN came first; our acks still tell the story
                    started.set()
                    server.flush(timeout=WAIT)
                    outcome["server"] = "flushed: every message acknowledged"
                except rudp.ConnectionFailed as exc:
                    outcome["server"] = f"{type(exc).__name__}, {len(exc.undelivered)} undelivered"
                outcome["at"] = time.monotonic()

            got: list[bytes] = []

            def read() -> None:
                with contextlib.suppress(rudp.ConnectionFailed, rudp.ConnectionClosed):
                    for message in client:
                        got.append(message)

            sender = threading.Thread(target=serve)
            reader = threading.Thread(target=read, daemon=True)
            sender.start()
            reader.start()
            started.wait(WAIT)
            closed_at = time.monotonic()
            try:
                client.close()
                closing = "close() returned"
            except rudp.ConnectionFailed as exc:
                closing = f"close() raised {type(exc).__name__}"
            sender.join(2 * WAIT)
            learned = float(outcome.get("at", float("nan"))) - closed_at  # type: ignore[arg-type]
            with contextlib.suppress(rudp.ConnectionFailed):
                server.close()
            return (
                f"seed {seed}: client {closing}, read {len(got)}; server {outcome.get('server')}, "
                f"{learned * 1000:.1f} ms after the client's close"
            )
        finally:
            proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4", help="proxy seeds, comma-separated")
    args = parser.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        print(run(seed), flush=True)


if __name__ == "__main__":
    main()
