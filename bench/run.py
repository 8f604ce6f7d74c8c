"""`make bench`: rudp beside raw UDP, kernel TCP and aioquic, measured in the same run.

Every figure is one bounded transfer over loopback (or, for the core, in memory), and the
table prints each as a ratio to its peers so that a noisy machine still compares fairly.
Usage: python bench/run.py [--megabytes N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from peers import DEADLINE, Result

import rudp
import rudp.aio
from rudp.config import Config
from rudp.core import wire
from rudp.core.connection import SansIOConnection
from rudp.events import MessageReceived
from rudp.testing import LinkProfile, transfer

MESSAGE = 64 * 1024
PACKET_MESSAGE = rudp.Config().max_datagram_size - wire.OVERHEAD  # one datagram each
"""One full DATA packet at the default ``max_datagram_size`` (1400 - 32 bytes of overhead)."""


def rudp_core(total_bytes: int, loss: float) -> Result:
    """The sans-IO core alone: two connections over the simulator, no sockets, virtual clock."""
    messages = [os.urandom(MESSAGE)] * (total_bytes // MESSAGE)
    profile = LinkProfile(loss=loss, delay=0.001)
    cpu0 = time.process_time()
    result = transfer(messages, [], profile_ab=profile, profile_ba=profile, seed=1)
    cpu = time.process_time() - cpu0
    moved = sum(len(m) for m in result.b.received)
    return Result(f"rudp core, simulator {loss:.0%} loss", moved, cpu, cpu, "MB per CPU-second")


def step_clock(connections: tuple[SansIOConnection, ...], now: float, quiet: bool) -> float:
    """The virtual clock of an in-memory loop: on to the earliest timer when no datagram
    moved, else one 0.1 ms tick; the timers that are due fire.  Returns the new time."""
    timers = [t for t in (conn.get_timer() for conn in connections) if t is not None]
    now = min(timers) if quiet and timers else now + 0.0001
    for conn in connections:
        deadline = conn.get_timer()
        if deadline is not None and deadline <= now:
            conn.handle_timer(now)
    return now


def rudp_core_packet_rate(packets: int = 20_000) -> Result:
    """Packets per CPU-second through two ``SansIOConnection``s wired back to back in memory.

    One datagram per ``receive_datagram`` call, one-packet messages, a virtual clock, and
    ``get_timer`` read after every round as a driver does: the per-packet cost of the core
    alone (decode, dispatch, sender, receiver, encode), with no simulator and no socket.
    Both directions count (DATA one way, ACKs the other).
    """
    # "fixed": no congestion window and no pacing, so the loop measures the per-packet
    # work of the core; with zero RTT in memory a paced controller would only measure
    # how often the loop wakes up.
    config = Config(congestion_control="fixed")
    client = SansIOConnection(config, is_client=True, rng=random.Random(1))
    server = SansIOConnection(config, is_client=False, rng=random.Random(2))
    message = os.urandom(PACKET_MESSAGE)
    for _ in range(packets):
        client.send(message)
    now = 0.0
    moved = 0
    datagrams = 0
    cpu0 = time.process_time()
    client.connect(now)
    while moved < packets and not (client.is_closed or server.is_closed):
        quiet = True
        for sender, receiver in ((client, server), (server, client)):
            for datagram in sender.datagrams_to_send(now):
                receiver.receive_datagram(datagram, now)
                datagrams += 1
                quiet = False
            while (event := receiver.next_event()) is not None:
                if type(event) is MessageReceived:
                    moved += 1
        now = step_clock((client, server), now, quiet)
    cpu = time.process_time() - cpu0
    rate = datagrams / cpu if cpu else 0.0
    note = f"{rate:,.0f} packets per CPU-second, {datagrams} packets"
    return Result("rudp core, packets in memory", moved * PACKET_MESSAGE, cpu, cpu, note)


PSK = bytes(range(32))


def rudp_connection(total_bytes: int, psk: bytes | None = None) -> Result:
    """The blocking connection API over a loopback UDP socket (``psk``: sealed datagrams)."""
    block = os.urandom(MESSAGE)
    count = total_bytes // MESSAGE
    received = [0]
    with rudp.listen(("127.0.0.1", 0), psk=psk) as listener:

        def serve() -> None:
            with listener.accept(timeout=DEADLINE) as peer:
                for message in peer:
                    received[0] += len(message)

        thread = threading.Thread(target=serve)
        thread.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with rudp.connect(listener.address, psk=psk) as conn:
            for _ in range(count):
                conn.send(block)
            conn.flush(timeout=DEADLINE)
        thread.join(DEADLINE)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    name = "rudp connection API" + (", psk" if psk else "")
    return Result(name, received[0], wall, cpu, "both ends in this process")


def rudp_asyncio(total_bytes: int) -> Result:
    """The asyncio API over a loopback UDP socket."""
    block = os.urandom(MESSAGE)
    count = total_bytes // MESSAGE
    received = [0]

    async def run() -> None:
        finished = asyncio.Event()

        async def handler(conn: rudp.aio.Connection) -> None:
            async for message in conn:
                received[0] += len(message)
            finished.set()

        async with await rudp.aio.serve(handler, "127.0.0.1", 0) as server:
            conn = await rudp.aio.connect(server.address)
            for _ in range(count):
                await conn.send(block)
            await conn.close()
            await asyncio.wait_for(finished.wait(), DEADLINE)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    asyncio.run(run())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Result("rudp asyncio API", received[0], wall, cpu, "both ends in this process")


def print_table(results: list[Result], baseline: dict[str, Result]) -> None:
    names = list(baseline)
    header = f"{'transport':34} {'MB/s':>8} {'CPU s':>7}"
    header += "".join(f" {'/' + name:>12}" for name in names)
    print(header)
    print("-" * len(header))
    for result in results:
        row = f"{result.name:34} {result.mb_per_s:8.1f} {result.cpu_seconds:7.2f}"
        for name in names:
            peer = baseline[name]
            ratio = result.mb_per_s / peer.mb_per_s if peer.mb_per_s else float("nan")
            row += f" {ratio:12.3f}"
        print(row + (f"  ({result.note})" if result.note else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=20, help="payload per transfer")
    args = parser.parse_args()
    total = args.megabytes * 1_000_000
    print(f"payload per transfer: {args.megabytes} MB; loopback; python {sys.version.split()[0]}")
    peer_results = [peers.raw_udp(total), peers.kernel_tcp(total), peers.aioquic_stream(total)]
    ours = [
        rudp_connection(total),
        rudp_connection(total, PSK),
        rudp_asyncio(total),
        rudp_core(total, 0.0),
        rudp_core(total, 0.1),
        rudp_core_packet_rate(),
    ]
    baseline = {"UDP": peer_results[0], "TCP": peer_results[1], "aioquic": peer_results[2]}
    print_table(peer_results + ours, baseline)
    print("ratios: MB/s of the row divided by MB/s of the column's peer (same run).")


if __name__ == "__main__":
    main()
