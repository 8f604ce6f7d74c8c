"""A spoofed-style SYN flood against a real listener while a real client connects.

On loopback, bounded in count and time (stops by itself within ~2 minutes):

- a listener (``rudp.listen``) that echoes one message per connection;
- a legitimate client reaching it through ``rudp.testing.proxy.LossyProxy`` with
  ``--delay`` each way (50 ms: a 100 ms round trip), which connects ``--tries`` times,
  each try a ``rudp.connect`` plus one echoed message within ``--timeout`` seconds;
- a flooder sending ``--rate`` SYNs per second straight at the listener from
  ``--ports`` source ports, each SYN with a random client connection id, never
  answering anything (what a spoofer can do: it never sees the replies).  A separate
  thread drains those ports only to count the bytes the server sent to them.

Reported: successes / tries, the connect and echo time distribution, the flood's bytes
in and the server's bytes out to the flood's addresses (amplification), the server's
state (most connections it held, connections created per flood SYN) and, measured
with tracemalloc on a sans-IO ``Endpoint`` fed 5,000 spoofed SYNs, the memory one SYN
leaves behind.

Usage: python bench/syn_flood.py [--rate 2000] [--tries 20] [--timeout 5]
                                 [--retry under_load|always|never] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import socket
import statistics
import sys
import threading
import time
import tracemalloc
from typing import Any

import rudp
from rudp.core import wire
from rudp.core.endpoint import Endpoint
from rudp.core.wire import Handshake, Packet, PacketType
from rudp.errors import BadPacket
from rudp.testing.link import LinkProfile
from rudp.testing.proxy import LossyProxy

HARD_LIMIT = 115.0
"""Seconds after which no new try starts, whatever the options."""


def flood_syn(rng: random.Random) -> bytes:
    """A SYN as a spoofer sends it: random client id and ISN, never followed up."""
    block = wire.encode_handshake(Handshake(rng.getrandbits(64) | 1, 1400))
    return wire.encode(Packet(PacketType.SYN, 0, 0, rng.getrandbits(32), 0, 64, 0, (), block))


class Flooder:
    """``rate`` SYNs per second at ``target`` from ``ports`` sockets, until stopped."""

    def __init__(self, target: Any, rate: float, ports: int, seed: int) -> None:
        self.target = target
        self.rate = rate
        self.rng = random.Random(seed)
        self.socks = []
        for _ in range(ports):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.socks.append(sock)
        self.sent = self.bytes_out = 0
        self.replies = self.bytes_back = 0
        self.reply_types: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._drain, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5.0)
        time.sleep(0.2)
        self._drain_once()
        for sock in self.socks:
            sock.close()

    def _send(self) -> None:
        start = time.monotonic()
        index = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.sent < due:
                syn = flood_syn(self.rng)
                sock = self.socks[index % len(self.socks)]
                index += 1
                try:
                    sock.sendto(syn, self.target)
                except OSError:  # a full socket buffer: that SYN is lost, as on a link
                    continue
                finally:
                    self.sent += 1
                self.bytes_out += len(syn)
            time.sleep(0.002)

    def _drain_once(self) -> None:
        for sock in self.socks:
            while True:
                try:
                    data = sock.recv(65535)
                except (BlockingIOError, OSError):
                    break
                self.replies += 1
                self.bytes_back += len(data)
                try:
                    name = wire.decode(data).type.name
                except BadPacket:
                    name = "undecodable"
                self.reply_types[name] = self.reply_types.get(name, 0) + 1

    def _drain(self) -> None:
        while not self._stop.is_set():
            self._drain_once()
            time.sleep(0.01)


def echo_server(listener: rudp.Listener, stop: threading.Event) -> None:
    """Accept every connection; echo its first message on a thread of its own."""

    def serve(conn: rudp.Connection) -> None:
        try:
            conn.send(conn.recv(timeout=10.0))
            conn.close()
        except rudp.RudpError:
            pass

    while not stop.is_set():
        try:
            conn = listener.accept(timeout=0.2)
        except rudp.Timeout:
            continue
        except rudp.RudpError:
            return
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def state_per_syn(retry: str, count: int = 5000) -> tuple[int, int]:
    """Bytes and connections a sans-IO ``Endpoint`` keeps after ``count`` spoofed SYNs
    (tracemalloc; events read, as a driver reads them)."""
    rng = random.Random(1)
    endpoint = Endpoint(accepting=True, rng=random.Random(2), static_key=bytes(32), retry=retry)
    syns = [
        (flood_syn(rng), (f"198.51.{i // 256 % 256}.{i % 256}", 1000 + i)) for i in range(count)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, (syn, address) in enumerate(syns):
        endpoint.receive_datagram(syn, address, i / 2000)
        endpoint.datagrams_to_send(i / 2000)
        while endpoint.next_event() is not None:
            pass
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, len(endpoint)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="flood SYNs per second")
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per try")
    parser.add_argument("--delay", type=float, default=0.05, help="client delay each way")
    parser.add_argument("--ports", type=int, default=64, help="flood source ports")
    parser.add_argument("--retry", default="under_load", choices=("under_load", "always", "never"))
    args = parser.parse_args(argv)
    began = time.monotonic()
    key = os.urandom(32)  # not the user's key file
    listener = rudp.listen(("127.0.0.1", 0), retry=args.retry, static_key=key)
    endpoint = listener._engine.endpoint  # read under the engine's lock: the counts
    stop = threading.Event()
    server = threading.Thread(target=echo_server, args=(listener, stop), daemon=True)
    server.start()
    proxy = LossyProxy(listener.address, LinkProfile(delay=args.delay), seed=1)
    proxy.start()
    flooder = Flooder(listener.address, args.rate, args.ports, seed=7)
    max_held = [0]

    def watch() -> None:
        while not stop.is_set():
            with listener._engine.cond:
                max_held[0] = max(max_held[0], len(endpoint))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    flooder.start()
    time.sleep(1.0)  # the flood is in full swing before the first try
    connects: list[float] = []
    echoes: list[float] = []
    failures: dict[str, int] = {}
    for _ in range(args.tries):
        if time.monotonic() - began > HARD_LIMIT:
            failures["not tried (time limit)"] = failures.get("not tried (time limit)", 0) + 1
            continue
        start = time.monotonic()
        try:
            conn = rudp.connect(proxy.address, timeout=args.timeout, static_key=key)
            connected = time.monotonic() - start
            conn.send(b"ping")
            reply = conn.recv(timeout=max(0.01, args.timeout - connected))
            elapsed = time.monotonic() - start
            if reply != b"ping" or elapsed > args.timeout:
                raise rudp.Timeout("no echo in time")
            connects.append(connected)
            echoes.append(elapsed)
            conn.close()
        except rudp.RudpError as exc:
            reason = f"{type(exc).__name__}: {str(exc).split(' (')[0][:60]}"
            failures[reason] = failures.get(reason, 0) + 1
    flood_seconds = time.monotonic() - began
    flooder.stop()
    stop.set()
    with listener._engine.cond:
        stats = endpoint.stats
        held_now = len(endpoint)
    listener.close()
    proxy.stop()
    retained, left = state_per_syn(args.retry)
    ok = len(echoes)
    print(
        f"retry={args.retry}  flood {args.rate:.0f} SYN/s from {args.ports} ports, "
        f"client RTT {2 * args.delay * 1000:.0f} ms, {flood_seconds:.1f} s"
    )
    print(f"successes: {ok}/{args.tries}" + (f"  failures: {failures}" if failures else ""))
    if ok:
        p90 = percentile(connects, 0.9)
        print(
            f"connect s: min {min(connects):.3f} median {statistics.median(connects):.3f} "
            f"p90 {p90:.3f} max {max(connects):.3f}"
        )
        print(
            f"connect + echo s: min {min(echoes):.3f} median {statistics.median(echoes):.3f} "
            f"max {max(echoes):.3f}"
        )
    amplification = flooder.bytes_back / flooder.bytes_out if flooder.bytes_out else 0.0
    print(
        f"flood: {flooder.sent} SYNs, {flooder.bytes_out} B in; server sent the flood "
        f"{flooder.replies} datagrams, {flooder.bytes_back} B {flooder.reply_types}: "
        f"amplification {amplification:.3f}x"
    )
    print(
        f"server: most connections held {max_held[0]} (now {held_now}); created "
        f"{stats.connections_created} ({stats.connections_created / max(1, flooder.sent):.4f} "
        f"per flood SYN), RETRYs {stats.retries_sent}, validated {stats.addresses_validated}, "
        f"evicted {stats.half_open_evicted}, refused {stats.syn_refused}, "
        f"3x-dropped {stats.amplification_dropped}"
    )
    print(
        f"state after 5000 spoofed SYNs (sans-IO endpoint, tracemalloc): {retained} B in "
        f"{left} connections ({retained / 5000:.0f} B per SYN"
        + (f", {retained / left:.0f} B per connection)" if left else ")")
    )
    return 0 if ok >= min(args.tries, 18) else 1


if __name__ == "__main__":
    sys.exit(main())
