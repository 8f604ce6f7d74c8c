"""`make bench-aead`: CPU per packet with and without the pre-shared key, beside aioquic.

Both protocols are sans-IO, so each is measured the same way: a client and a server in one
process, wired back to back in memory on a virtual clock, moving one bulk transfer.  The CPU
time spent inside the calls that make and take datagrams (``datagrams_to_send`` and
``receive_datagram`` of both ends: framing, sealing, opening, parsing, acks, recovery) is
divided by the datagrams that crossed, both directions counted.  No socket, no scheduler,
and not the driving loop's idle rounds (a paced sender waits in virtual time): what remains
is the protocol's own cost per packet.

Rows:

- rudp without a key (CRC only), and with ``psk=`` (every datagram sealed with
  ChaCha20-Poly1305, section 3.7 of the spec);
- aioquic (QUIC over TLS 1.3, every packet protected as RFC 9001 says: AEAD plus header
  protection) with its default AES-128-GCM and with ChaCha20-Poly1305;
- the handshakes: rudp's Noise NNpsk0 (two X25519 key pairs, two exchanges) against aioquic's
  TLS 1.3 handshake with a P-256 certificate, CPU per connection;
- the AEAD call alone: ``cryptography``'s ChaCha20-Poly1305, seal and open of one full payload.

Usage: python bench/aead_cost.py [--megabytes N] [--handshakes N]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import _self_signed_certificate
from run import step_clock

from rudp.config import Config
from rudp.core import wire
from rudp.core.connection import SansIOConnection
from rudp.events import MessageReceived

PSK = bytes(range(32))
MESSAGE = 64 * 1024
DATAGRAM = 1400
MAX_ROUNDS = 5_000_000


@dataclass(frozen=True)
class Row:
    name: str
    cpu_seconds: float
    datagrams: int
    payload_bytes: int

    @property
    def us_per_datagram(self) -> float:
        return 1e6 * self.cpu_seconds / self.datagrams if self.datagrams else float("nan")

    @property
    def mb_per_cpu_second(self) -> float:
        return self.payload_bytes / 1e6 / self.cpu_seconds if self.cpu_seconds else 0.0


def rudp_bulk(total_bytes: int, psk: bytes | None) -> Row:
    """One bulk transfer between two in-memory rudp engines (BBR, paced, virtual clock)."""
    config = Config(psk=psk)
    client = SansIOConnection(config, is_client=True, rng=random.Random(1))
    server = SansIOConnection(config, is_client=False, rng=random.Random(2))
    block = os.urandom(MESSAGE)
    count = total_bytes // MESSAGE
    for _ in range(count):
        client.send(block)
    now, received, datagrams, cpu = 0.0, 0, 0, 0.0
    clock = time.process_time
    client.connect(now)
    for _ in range(MAX_ROUNDS):
        if received >= count or client.is_closed or server.is_closed:
            break
        quiet = True
        for sender, receiver in ((client, server), (server, client)):
            started = clock()
            out = sender.datagrams_to_send(now)
            for datagram in out:
                receiver.receive_datagram(datagram, now)
            cpu += clock() - started
            datagrams += len(out)
            quiet = quiet and not out
        while (event := server.next_event()) is not None:
            received += type(event) is MessageReceived
        while client.next_event() is not None:
            pass
        now = step_clock((client, server), now, quiet)
    name = "rudp, psk (ChaCha20-Poly1305)" if psk else "rudp, no key (CRC-32 only)"
    return Row(name, cpu, datagrams, received * MESSAGE)


def rudp_handshakes(count: int) -> Row:
    """CPU per keyed handshake: SYN, SYN_ACK and the first sealed ACK, both ends."""
    config = Config(psk=PSK)
    cpu0 = time.process_time()
    for i in range(count):
        client = SansIOConnection(config, is_client=True, rng=random.Random(2 * i))
        server = SansIOConnection(config, is_client=False, rng=random.Random(2 * i + 1))
        client.connect(0.0)
        for _ in range(4):
            for datagram in client.datagrams_to_send(0.0):
                server.receive_datagram(datagram, 0.0)
            for datagram in server.datagrams_to_send(0.0):
                client.receive_datagram(datagram, 0.0)
        assert client.is_established and server.is_established
    return Row("rudp Noise NNpsk0 handshake", time.process_time() - cpu0, count, 0)


def _aioquic_pair(cert: str, key: str, suite: object | None) -> tuple[object, object]:
    from aioquic.buffer import Buffer
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import pull_quic_header

    client_config = QuicConfiguration(is_client=True, alpn_protocols=["bench"])
    client_config.max_datagram_size = DATAGRAM
    client_config.verify_mode = 0  # ssl.CERT_NONE: a self-signed certificate
    if suite is not None:
        client_config.cipher_suites = [suite]  # type: ignore[list-item]
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
    server_config.max_datagram_size = DATAGRAM
    server_config.load_cert_chain(cert, key)
    client = QuicConnection(configuration=client_config)
    client.connect(("127.0.0.1", 4433), now=0.0)
    first = client.datagrams_to_send(now=0.0)
    header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
    server = QuicConnection(
        configuration=server_config, original_destination_connection_id=header.destination_cid
    )
    for data, _ in first:
        server.receive_datagram(data, ("127.0.0.1", 50000), now=0.0)
    return client, server


def _shuttle(client: object, server: object, now: float) -> tuple[int, float]:
    """Datagrams moved both ways, and the CPU time their send and receive calls took."""
    moved, cpu, clock = 0, 0.0, time.process_time
    for sender, receiver, source in (
        (client, server, ("127.0.0.1", 50000)),
        (server, client, ("127.0.0.1", 4433)),
    ):
        started = clock()
        out = sender.datagrams_to_send(now=now)  # type: ignore[attr-defined]
        for data, _ in out:
            receiver.receive_datagram(data, source, now=now)  # type: ignore[attr-defined]
        cpu += clock() - started
        moved += len(out)
    return moved, cpu


def aioquic_bulk(total_bytes: int, suite_name: str) -> Row:
    """One bulk stream between two in-memory aioquic connections (its default Reno)."""
    from aioquic.quic.events import StreamDataReceived
    from aioquic.tls import CipherSuite

    suite = None if suite_name == "AES-128-GCM" else CipherSuite.CHACHA20_POLY1305_SHA256
    with tempfile.TemporaryDirectory() as directory:
        cert, key = _self_signed_certificate(directory)
        client, server = _aioquic_pair(cert, key, suite)
    now, received, datagrams, cpu = 0.0, 0, 0, 0.0
    started = False
    for _ in range(MAX_ROUNDS):
        if received >= total_bytes:
            break
        moved, spent = _shuttle(client, server, now)
        datagrams += moved
        cpu += spent
        while (event := server.next_event()) is not None:  # type: ignore[attr-defined]
            if isinstance(event, StreamDataReceived):
                received += len(event.data)
        while client.next_event() is not None:  # type: ignore[attr-defined]
            pass
        if not started and client._handshake_complete:  # type: ignore[attr-defined]
            stream = client.get_next_available_stream_id()  # type: ignore[attr-defined]
            client.send_stream_data(stream, os.urandom(total_bytes), end_stream=True)  # type: ignore[attr-defined]
            started = True
        timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]  # type: ignore[attr-defined]
        now = min(timers) if not moved and timers else now + 0.0001
        for conn in (client, server):
            deadline = conn.get_timer()  # type: ignore[attr-defined]
            if deadline is not None and deadline <= now:
                conn.handle_timer(now=now)  # type: ignore[attr-defined]
    return Row(f"aioquic, TLS 1.3 {suite_name}", cpu, datagrams, received)


def aioquic_handshakes(count: int) -> Row:
    """CPU per aioquic handshake (TLS 1.3, P-256 certificate, AES-128-GCM), both ends."""
    with tempfile.TemporaryDirectory() as directory:
        cert, key = _self_signed_certificate(directory)
        cpu0 = time.process_time()
        for _ in range(count):
            client, server = _aioquic_pair(cert, key, None)
            for _ in range(8):
                _shuttle(client, server, 0.0)
            assert client._handshake_complete  # type: ignore[attr-defined]
        cpu = time.process_time() - cpu0
    return Row("aioquic TLS 1.3 handshake", cpu, count, 0)


def aead_alone(count: int = 20_000) -> Row:
    """The primitive: ChaCha20-Poly1305 seal and open of one full rudp payload."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    aead = ChaCha20Poly1305(PSK)
    payload = os.urandom(DATAGRAM - wire.OVERHEAD - wire.AEAD_TAG_SIZE)
    header = os.urandom(wire.HEADER_SIZE)
    cpu0 = time.process_time()
    for number in range(count):
        nonce = bytes(4) + number.to_bytes(8, "little")
        aead.decrypt(nonce, aead.encrypt(nonce, payload, header), header)
    cpu = time.process_time() - cpu0
    return Row("ChaCha20-Poly1305 seal + open alone", cpu, count, count * len(payload))


def syn_state(count: int = 2000) -> list[tuple[str, float]]:
    """Bytes a server ``Endpoint`` keeps per SYN (tracemalloc), by kind of SYN."""
    import gc
    import tracemalloc

    from rudp.core.endpoint import Endpoint

    def syns(psk: bytes | None, clients: int) -> list[bytes]:
        out = []
        for i in range(clients):
            client = SansIOConnection(Config(psk=psk), is_client=True, rng=random.Random(i))
            client.connect(0.0)
            out += client.datagrams_to_send(0.0)
        return out

    rows = []
    forged = syns(bytes(range(1, 33)), count)  # made with another key
    genuine_plain, genuine_keyed = syns(None, count // 10), syns(PSK, count // 10)
    for name, psk, datagrams in (
        ("forged SYN (another key), psk server", PSK, forged),
        ("genuine SYN, no key (half-open connection)", None, genuine_plain),
        ("genuine SYN, psk (half-open, Noise state)", PSK, genuine_keyed),
    ):
        server = Endpoint(
            Config(psk=psk),
            accepting=True,
            rng=random.Random(3),
            static_key=PSK,
            retry="never",
            backlog=len(datagrams),
        )
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i, datagram in enumerate(datagrams):
            server.receive_datagram(datagram, ("192.0.2.1", 1024 + i % 60000), 0.0)
        server.datagrams_to_send(0.0)
        gc.collect()  # a refused connection is a reference cycle: count only what is kept
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        rows.append((f"{name}: {len(server)} kept of {len(datagrams)}", held / len(datagrams)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=20, help="payload per transfer")
    parser.add_argument("--handshakes", type=int, default=200)
    args = parser.parse_args()
    total = args.megabytes * 1_000_000
    print(
        f"in memory, both ends in one process, {args.megabytes} MB per transfer; "
        f"python {sys.version.split()[0]}"
    )
    plain, keyed = rudp_bulk(total, None), rudp_bulk(total, PSK)
    quic_aes, quic_chacha = aioquic_bulk(total, "AES-128-GCM"), aioquic_bulk(total, "ChaCha20")
    rows = [plain, keyed, quic_aes, quic_chacha, aead_alone()]
    print(
        f"{'per datagram, both directions':40} {'us CPU':>8} {'MB/CPU-s':>9} "
        f"{'/rudp':>7} {'/aioquic':>9} {'datagrams':>10}"
    )
    for row in rows:
        print(
            f"{row.name:40} {row.us_per_datagram:8.2f} {row.mb_per_cpu_second:9.1f} "
            f"{row.us_per_datagram / plain.us_per_datagram:7.2f} "
            f"{row.us_per_datagram / quic_aes.us_per_datagram:9.2f} {row.datagrams:10d}"
        )
    print(
        f"psk adds {keyed.us_per_datagram - plain.us_per_datagram:.2f} us per datagram "
        f"({keyed.us_per_datagram / plain.us_per_datagram - 1:+.0%}); rudp with psk costs "
        f"{keyed.us_per_datagram / quic_aes.us_per_datagram:.2f}x aioquic's per datagram"
    )
    ours, theirs = rudp_handshakes(args.handshakes), aioquic_handshakes(args.handshakes)
    print(f"{'per handshake, both ends':40} {'ms CPU':>8}")
    for row in (ours, theirs):
        print(f"{row.name:40} {1e3 * row.cpu_seconds / row.datagrams:8.3f}")
    print(f"{'server state per SYN':58} {'bytes':>8}")
    for name, size in syn_state():
        print(f"{name:58} {size:8.0f}")


if __name__ == "__main__":
    main()
