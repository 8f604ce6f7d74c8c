"""Peer transports measured beside rudp in the same run: raw UDP, kernel TCP, aioquic.

Each function moves ``total_bytes`` over loopback and returns a ``Result``.
Every loop is bounded by a byte count and a wall-clock deadline.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass

CHUNK = 64 * 1024
DEADLINE = 60.0


@dataclass(frozen=True)
class Result:
    """One measured transfer."""

    name: str
    payload_bytes: int
    wall_seconds: float
    cpu_seconds: float
    note: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / 1e6 / self.wall_seconds if self.wall_seconds else 0.0


def _measure(name: str, run: callable, note: str = "") -> Result:  # type: ignore[valid-type]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    moved = run()
    return Result(name, moved, time.perf_counter() - wall0, time.process_time() - cpu0, note)


def raw_udp(total_bytes: int, datagram_size: int = 1400) -> Result:
    """Blast datagrams with no reliability at all: the ceiling, and it loses data."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = os.urandom(datagram_size)
    count = total_bytes // datagram_size
    received = [0]

    def drain() -> None:
        deadline = time.monotonic() + DEADLINE
        while received[0] < count * datagram_size and time.monotonic() < deadline:
            try:
                received[0] += len(receiver.recv(65535))
            except TimeoutError:
                return

    def run() -> int:
        thread = threading.Thread(target=drain)
        thread.start()
        address = receiver.getsockname()
        for _ in range(count):
            sender.sendto(payload, address)
        thread.join(DEADLINE)
        return received[0]

    try:
        result = _measure("raw UDP", run)
    finally:
        sender.close()
        receiver.close()
    lost = count * datagram_size - result.payload_bytes
    return Result(
        result.name,
        result.payload_bytes,
        result.wall_seconds,
        result.cpu_seconds,
        f"{lost / (count * datagram_size):.1%} lost, unreliable",
    )


def kernel_tcp(total_bytes: int) -> Result:
    """One TCP stream over loopback: the reliable reference, implemented in the kernel."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = [0]

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            while received[0] < total_bytes:
                data = connection.recv(1 << 20)
                if not data:
                    break
                received[0] += len(data)

    def run() -> int:
        thread = threading.Thread(target=serve)
        thread.start()
        block = os.urandom(CHUNK)
        with socket.create_connection(listener.getsockname()) as client:
            sent = 0
            while sent < total_bytes:
                client.sendall(block)
                sent += len(block)
        thread.join(DEADLINE)
        return received[0]

    try:
        return _measure("kernel TCP", run)
    finally:
        listener.close()


def _self_signed_certificate(directory: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def aioquic_stream(total_bytes: int) -> Result:
    """One QUIC stream with aioquic (TLS 1.3, congestion control, pure-Python core)."""
    try:
        from aioquic.asyncio import connect, serve
        from aioquic.asyncio.protocol import QuicConnectionProtocol
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.events import StreamDataReceived
    except ImportError:
        return Result("aioquic", 0, 0.0, 0.0, "not installed (pip install '.[bench]')")

    done = asyncio.Event
    state: dict[str, object] = {}

    class CountingServer(QuicConnectionProtocol):
        received = 0

        def quic_event_received(self, event: object) -> None:
            if isinstance(event, StreamDataReceived):
                CountingServer.received += len(event.data)
                if event.end_stream:
                    finished = state["finished"]
                    assert isinstance(finished, asyncio.Event)
                    finished.set()

    async def transfer(cert_path: str, key_path: str) -> int:
        state["finished"] = done()
        server_config = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
        server_config.load_cert_chain(cert_path, key_path)
        server = await serve(
            "127.0.0.1", 0, configuration=server_config, create_protocol=CountingServer
        )
        try:
            port = server._transport.get_extra_info("sockname")[1]
            client_config = QuicConfiguration(is_client=True, alpn_protocols=["bench"])
            client_config.verify_mode = ssl.CERT_NONE
            async with connect("127.0.0.1", port, configuration=client_config) as client:
                _reader, writer = await client.create_stream()
                block = os.urandom(CHUNK)
                sent = 0
                while sent < total_bytes:
                    writer.write(block)
                    sent += len(block)
                    await writer.drain()
                writer.write_eof()
                finished = state["finished"]
                assert isinstance(finished, asyncio.Event)
                await asyncio.wait_for(finished.wait(), DEADLINE)
        finally:
            server.close()
        return CountingServer.received

    with tempfile.TemporaryDirectory() as directory:
        cert_path, key_path = _self_signed_certificate(directory)
        try:
            return _measure("aioquic", lambda: asyncio.run(transfer(cert_path, key_path)))
        except Exception as exc:  # a peer's failure is reported in the table, not fatal
            return Result("aioquic", 0, 0.0, 0.0, f"failed: {exc!r}")
