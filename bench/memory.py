"""`bench/memory.py`: RSS growth of a listener under one hostile connection (loopback only).

For each face (the blocking listener that never accepts, an asyncio server whose handler
never reads, a ``rudp.socket`` that never reads) a server runs in a subprocess; this
process completes a handshake with it from a raw UDP socket, announcing the largest
datagram size, and then misbehaves in one of three ways:

* ``ooo``: maximal out-of-order fragments of a message that never starts (a hole at the
  cumulative ack), to every sequence number of a wide window;
* ``huge``: one message in progress, in order, announcing a million fragments;
* ``unread``: many whole messages, in order, that the application never reads.

Each packet is sent twice under the same sequence number: first with a 65,000-byte payload
(beyond the negotiated size: accepted before the bounds, dropped after them), then with a
full 1358-byte one (a duplicate if the first was taken).  The server's VmRSS and VmHWM
(peak) are read from /proc/self/status before and after; the figures are the growth.
Bounded: at most ``--packets`` packets per scenario, ``--settle`` seconds of waiting.

Usage: python bench/memory.py [--packets N] [--pythonpath DIR] [--faces a,b] [--scenarios x,y]
``--pythonpath /path/to/other/checkout`` measures another version of rudp (e.g. before).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rudp.core import wire  # noqa: E402  (the attacker's codec: the wire is unchanged)
from rudp.core.wire import Packet, PacketType  # noqa: E402

SERVER = r"""
import asyncio, sys, time
import rudp

def rss():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]

face = sys.argv[1]
opts = {"static_key": b"k" * 32}

endpoint = None

def report():
    print("ready", *rss(), rudp.__file__, flush=True)
    sys.stdin.readline()  # the attacker is done
    stats = [a.connection.stats for a in endpoint.associations]
    taken = sum(s.bytes_received for s in stats) // 1024
    held = sum(getattr(s, "receive_buffered", 0) for s in stats) // 1024
    print("after", *rss(), taken, held, flush=True)
    sys.stdin.readline()

if face == "listen":
    listener = rudp.listen(("127.0.0.1", 0), **opts)
    endpoint = listener._engine.endpoint
    print("port", listener.address[1], flush=True)
    report()
elif face == "socket":
    sock = rudp.socket(**opts)
    sock.bind(("127.0.0.1", 0))
    endpoint = sock._engine.endpoint
    print("port", sock.getsockname()[1], flush=True)
    report()
else:
    async def main():
        async def handler(conn):
            await asyncio.sleep(3600)  # never reads
        global endpoint
        server = await rudp.aio.serve(handler, "127.0.0.1", 0, **opts)
        endpoint = server._protocol.endpoint
        print("port", server.address[1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, report)
    asyncio.run(main())
"""

BIG = 65_000
FULL = 1400 - wire.OVERHEAD


class Attacker:
    """A scripted hostile client on a raw UDP socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(5.0)
        self.isn = random.getrandbits(31)
        self.pn = 1
        block = wire.encode_handshake(wire.Handshake(random.getrandbits(63) | 1, 65507))
        self.sock.send(wire.encode(Packet(PacketType.SYN, 0, 0, self.isn, 0, 4096, 0, (), block)))
        while True:
            answer = wire.decode(self.sock.recv(65535))
            if answer.type is PacketType.SYN_ACK:
                break
        self.server_id = wire.decode_handshake(answer.payload).source_connection_id
        self.server_ack = answer.seq + 1
        self.largest = answer.packet_number
        self.send(PacketType.ACK, self.isn + 1)
        self.sock.setblocking(False)

    def send(self, ptype: PacketType, seq: int, payload: bytes = b"", left: int = 0) -> None:
        packet = Packet(
            ptype,
            0,
            self.server_id,
            wire.wire_seq(seq),
            wire.wire_seq(self.server_ack),
            4096,
            left,
            (),
            payload,
            wire.wire_seq(self.pn),
            wire.wire_seq(self.largest),
            0,
        )
        self.pn += 1
        for _ in range(200):
            try:
                self.sock.send(wire.encode(packet))
                return
            except BlockingIOError:
                time.sleep(0.001)

    def drain(self) -> None:
        try:
            while True:
                self.sock.recv(65535)
        except (BlockingIOError, ConnectionRefusedError):
            pass

    def run(self, scenario: str, packets: int) -> None:
        big, full = b"B" * BIG, b"F" * FULL
        for k in range(packets):
            if scenario == "ooo":
                seq, left = self.isn + 2 + k, 1_000_000
            elif scenario == "huge":
                seq, left = self.isn + 1 + k, 1_000_000 - k
            else:
                seq, left = self.isn + 1 + k, 0
            self.send(PacketType.DATA, seq, big, left)
            self.send(PacketType.DATA, seq, full, left)
            if k % 16 == 15:
                time.sleep(0.002)  # let the server's socket buffer drain
                self.drain()


def measure(face: str, scenario: str, packets: int, pythonpath: str, settle: float) -> str:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, face],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=pythonpath,  # python -c puts the working directory first on sys.path
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline().split()[1])
        _, rss0, _, where = child.stdout.readline().split()
        assert where.startswith(pythonpath), where
        attacker = Attacker(port)
        started = time.monotonic()
        attacker.run(scenario, packets)
        time.sleep(settle)
        attacker.drain()
        child.stdin.write("\n")
        child.stdin.flush()
        _, rss1, hwm1, taken, held = child.stdout.readline().split()
        took = time.monotonic() - started
        grow = (int(rss1) - int(rss0)) / 1024
        peak = (int(hwm1) - int(rss0)) / 1024
        return (
            f"{face:7} {scenario:7} RSS +{grow:6.1f} MiB  peak +{peak:6.1f} MiB  "
            f"(received {int(taken) / 1024:6.1f} MiB, core holds {int(held) / 1024:4.1f} MiB, "
            f"{took:.1f} s)"
        )
    finally:
        child.kill()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=4000, help="packets per scenario")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait after")
    parser.add_argument("--pythonpath", default=str(ROOT), help="the rudp checkout to measure")
    parser.add_argument("--faces", default="listen,aio,socket")
    parser.add_argument("--scenarios", default="ooo,huge,unread")
    args = parser.parse_args()
    print(f"rudp under {args.pythonpath}: {args.packets} packets (x2) per scenario, loopback")
    for face in args.faces.split(","):
        for scenario in args.scenarios.split(","):
            print(measure(face, scenario, args.packets, args.pythonpath, args.settle), flush=True)


if __name__ == "__main__":
    main()
