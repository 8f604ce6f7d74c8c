"""Tests of the asyncio API (rudp.aio) over real loopback sockets.

Every test runs its own event loop with ``asyncio.run`` under an
``asyncio.timeout`` bound, on port 0.  Nothing waits on a sleep: tasks meet on
messages, events and connection state.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

import rudp.aio
from rudp.config import Config
from rudp.core import wire
from rudp.errors import (
    ConnectionClosed,
    ConnectionReset,
    LocalProtocolError,
    MessageTooLarge,
    PeerUnreachable,
    Timeout,
)
from rudp.events import FailureKind
from rudp.testing.link import LinkProfile
from rudp.testing.proxy import LossyProxy

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
FAST = {"peer_timeout": 20.0, "linger": 10.0, "close_linger": 0.2}
"""Bounds that keep a failing test short, yet generous enough for a loaded
machine (a 100-client test under tracemalloc runs ~12x slower)."""


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """Run one test body in a fresh loop, bounded, then collect garbage.

    ``gc.collect()`` inside the test makes a leaked transport or pending task
    warn here (an error under ``-W error``) rather than in some later test.
    """

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro_fn()

    try:
        return asyncio.run(bounded())
    finally:
        gc.collect()


async def echo(conn: rudp.aio.Connection) -> None:
    async for message in conn:
        await conn.send(message)


async def start(handler: Callable[[rudp.aio.Connection], Awaitable[None]], **options: Any) -> Any:
    return await rudp.aio.serve(handler, LOOPBACK, 0, **{**FAST, **options})


async def exchange(address: Any, messages: list[bytes], **options: Any) -> list[bytes]:
    """Connect, send every message while reading the echoes concurrently, close."""
    conn = await rudp.aio.connect(address, **{**FAST, **options})
    async with conn:

        async def sender() -> None:
            for message in messages:
                await conn.send(message)

        send_task = asyncio.create_task(sender())
        received = [await conn.recv() for _ in messages]
        await send_task
        await conn.flush()
    return received


# --- basic exchange ---------------------------------------------------------------


def test_echo_round_trip() -> None:
    async def main() -> None:
        # serve() is also an async context manager itself (no await needed).
        async with rudp.aio.serve(echo, LOOPBACK, 0, **FAST) as server:
            assert server.is_serving()
            host, port = server.address
            assert host == LOOPBACK and port != 0
            conn = await rudp.aio.connect(server.address, **FAST)
            await conn.send(b"hello")
            assert await conn.recv() == b"hello"
            await conn.send(b"")  # an empty message is a message
            assert await conn.recv() == b""
            assert conn.remote_address == server.address
            assert conn.local_address[0] == LOOPBACK
            await conn.close()
            assert conn.is_closed
            assert conn.stats is not None

    run(main)


def test_many_messages_arrive_in_order_exactly_once() -> None:
    rng = random.Random(1)
    messages = [i.to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 3000)) for i in range(3000)]

    async def main() -> None:
        async with await start(echo) as server:
            assert await exchange(server.address, messages) == messages

    run(main)


def test_large_messages() -> None:
    rng = random.Random(2)
    messages = [rng.randbytes(size) for size in (2**20, 1, 2**20 - 7)]  # the 1 MiB cap
    digests: list[str] = []

    async def digest(conn: rudp.aio.Connection) -> None:
        # The server answers with a digest, so each direction is checked once.
        async for message in conn:
            digests.append(hashlib.sha256(message).hexdigest())
            await conn.send(message)

    async def main() -> None:
        async with await start(digest) as server:
            echoed = await exchange(server.address, messages)
        assert [hashlib.sha256(m).digest() for m in echoed] == [
            hashlib.sha256(m).digest() for m in messages
        ]
        assert digests == [hashlib.sha256(m).hexdigest() for m in messages]

    run(main)


def test_both_directions_at_once_with_small_buffers() -> None:
    """Tiny send and receive buffers exercise both kinds of back-pressure."""
    count = 400
    server_got: list[bytes] = []

    async def talker(conn: rudp.aio.Connection) -> None:
        async def push() -> None:
            for i in range(count):
                await conn.send(b"s%d" % i + bytes(500))

        task = asyncio.create_task(push())
        async for message in conn:
            server_got.append(message)
        await task

    async def main() -> None:
        async with await start(talker, send_buffer=2000, recv_buffer=2000) as server:
            conn = await rudp.aio.connect(
                server.address, send_buffer=2000, recv_buffer=2000, **FAST
            )
            for i in range(count):
                await conn.send(b"c%d" % i + bytes(700))
            got = [await conn.recv() for _ in range(count)]
            await conn.close()
        assert got == [b"s%d" % i + bytes(500) for i in range(count)]
        assert server_got == [b"c%d" % i + bytes(700) for i in range(count)]

    run(main)


def test_unread_messages_stay_in_the_core_and_shrink_the_window() -> None:
    """Receive back-pressure: past recv_buffer the driver stops pulling messages.

    The peer has acknowledged all 20 packets (flush returned), but the handler
    has read none: the driver holds about recv_buffer bytes and the rest stay in
    the core, counted against the advertised window.  Reading drains them all.
    """
    count, size = 20, 1000

    async def main() -> None:
        accepted: asyncio.Future[rudp.aio.Connection] = asyncio.get_running_loop().create_future()
        go = asyncio.Event()
        got: list[bytes] = []

        async def slow_reader(conn: rudp.aio.Connection) -> None:
            accepted.set_result(conn)
            await go.wait()
            got.extend([await conn.recv() for _ in range(count)])

        async with await start(slow_reader, recv_buffer=2500) as server:
            conn = await rudp.aio.connect(server.address, **FAST)
            for i in range(count):
                await conn.send(bytes([i]) * size)
            await conn.flush()
            server_conn = await accepted
            held_by_core = Config().receive_window - server_conn.stats.local_window
            assert held_by_core >= count - 3  # 3 messages reach 2500 bytes in the driver
            go.set()
            await conn.close()
        assert got == [bytes([i]) * size for i in range(count)]

    run(main)


def test_ipv6_loopback() -> None:
    async def main() -> None:
        async with await rudp.aio.serve(echo, "::1", 0, **FAST) as server:
            assert server.address[0] == "::1"
            assert await exchange(server.address, [b"six", b"over", b"ipv6"]) == [
                b"six",
                b"over",
                b"ipv6",
            ]

    run(main)


# --- close semantics --------------------------------------------------------------


def test_client_close_delivers_everything_then_ends_iteration() -> None:
    received: list[bytes] = []

    async def main() -> None:
        done = asyncio.Event()

        async def collect(conn: rudp.aio.Connection) -> None:
            async for message in conn:
                received.append(message)
            # After the peer's close, recv keeps raising ConnectionClosed.
            with pytest.raises(ConnectionClosed):
                await conn.recv()
            with pytest.raises(ConnectionClosed):
                await conn.send(b"too late")
            done.set()

        async with await start(collect) as server:
            conn = await rudp.aio.connect(server.address, **FAST)
            for i in range(500):
                await conn.send(b"%d" % i)
            await conn.close()  # returns once everything is acknowledged and closed
            assert conn.is_closed
            with pytest.raises(LocalProtocolError):
                await conn.send(b"after close")
            with pytest.raises(ConnectionClosed):
                await conn.recv()
            await conn.close()  # idempotent
            await done.wait()
        assert received == [b"%d" % i for i in range(500)]

    run(main)


def test_server_handler_return_closes_gracefully() -> None:
    async def speak(conn: rudp.aio.Connection) -> None:
        for i in range(200):
            await conn.send(b"line %d" % i)
        # Returning closes the connection gracefully after the queued data.

    async def main() -> None:
        async with await start(speak) as server:
            conn = await rudp.aio.connect(server.address, **FAST)
            got = [message async for message in conn]
            assert got == [b"line %d" % i for i in range(200)]
            with pytest.raises(ConnectionClosed):
                await conn.recv()
            await conn.close()

    run(main)


def test_flush_waits_for_acknowledgement() -> None:
    """flush() returns only once the peer acknowledged every message.

    The proxy delays each direction by 20 ms, so no ack can have come back by
    the time send() has queued the last message: a flush() that returned early
    would leave messages unacknowledged and fail the stats check below.
    """
    delayed = LinkProfile(delay=0.02)

    async def main() -> None:
        seen: list[bytes] = []
        arrived = asyncio.Event()

        async def sink(conn: rudp.aio.Connection) -> None:
            async for message in conn:
                seen.append(message)
                if len(seen) == 50:
                    arrived.set()

        server = await start(sink)
        with LossyProxy(server.address, delayed, seed=1) as proxy:
            try:
                conn = await rudp.aio.connect(proxy.address, **FAST)
                for i in range(50):
                    await conn.send(b"m%d" % i)
                await conn.flush()
                stats = conn.stats
                assert stats.messages_sent == stats.messages_acked == 50
                assert stats.send_queue_bytes == 0
                # Acknowledged means deliverable at the peer: the handler gets all.
                await arrived.wait()
                assert seen == [b"m%d" % i for i in range(50)]
                await conn.close()
            finally:
                # While the proxy still relays: the server's side of the close
                # needs the client's last ack, which crosses the proxy too.
                await server.wait_closed()

    run(main)


def test_server_close_closes_open_connections() -> None:
    async def main() -> None:
        entered = asyncio.Event()
        closing = asyncio.Event()
        outcome: list[str] = []

        async def idle(conn: rudp.aio.Connection) -> None:
            entered.set()
            await closing.wait()
            try:
                await conn.send(b"after server.close()")
            except ConnectionClosed:  # not LocalProtocolError: the handler did nothing wrong
                outcome.append("closed")

        server = await start(idle)
        conn = await rudp.aio.connect(server.address, **FAST)
        await entered.wait()
        server.close()
        closing.set()
        assert not server.is_serving()
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        await conn.close()
        await server.wait_closed()
        assert outcome == ["closed"]
        # Nobody listens any more: a new client gets no handshake.
        with pytest.raises((Timeout, PeerUnreachable)):
            await rudp.aio.connect(server.address, timeout=0.5, peer_timeout=0.3)

    run(main)


# --- failures -------------------------------------------------------------------


def test_connect_to_silent_peer_raises_peer_unreachable() -> None:
    async def main() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((LOOPBACK, 0))
        silent.setblocking(False)
        with silent:
            with pytest.raises(PeerUnreachable) as caught:
                await rudp.aio.connect(
                    silent.getsockname(), peer_timeout=0.5, initial_rto=0.1, min_rto=0.05
                )
            assert caught.value.undelivered == ()
            # The silent socket really was asked: it holds our SYNs.
            syn = wire.decode(silent.recv(2048))
            assert syn.type is wire.PacketType.SYN

    run(main)


class Relay(asyncio.DatagramProtocol):
    """A UDP forwarder between one client and a server; ``cut`` turns it into a black hole."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.client: Any = None
        self.cut = False
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.cut or self.transport is None:
            return
        if addr == self.target:
            if self.client is not None:
                self.transport.sendto(data, self.client)
        else:
            self.client = addr
            self.transport.sendto(data, self.target)


def test_silent_peer_fails_with_undelivered_payloads_in_order() -> None:
    async def main() -> None:
        handler_error: list[BaseException] = []

        async def serve_until_failure(conn: rudp.aio.Connection) -> None:
            try:
                async for message in conn:
                    await conn.send(message)
            except PeerUnreachable as exc:
                handler_error.append(exc)

        loop = asyncio.get_running_loop()
        async with await start(serve_until_failure, peer_timeout=0.5, keepalive_interval=0.1) as s:
            transport, relay = await loop.create_datagram_endpoint(
                lambda: Relay(s.address), local_addr=(LOOPBACK, 0)
            )
            try:
                conn = await rudp.aio.connect(
                    transport.get_extra_info("sockname"), peer_timeout=0.5, linger=1.0
                )
                await conn.send(b"ping")
                assert await conn.recv() == b"ping"
                await conn.flush()
                relay.cut = True
                payloads = [b"lost %d" % i for i in range(5)]
                for payload in payloads:
                    await conn.send(payload)
                with pytest.raises(PeerUnreachable) as caught:
                    await conn.flush()
                assert list(caught.value.undelivered) == payloads
                assert type(caught.value) is PeerUnreachable  # silence, not a reset
                with pytest.raises(PeerUnreachable):
                    await conn.recv()
                with pytest.raises(PeerUnreachable):
                    await conn.send(b"more")
                with pytest.raises(PeerUnreachable):
                    await conn.close()  # something was lost: close says so
            finally:
                transport.close()
        # The server side noticed the silence too (keepalive + peer_timeout).
        assert len(handler_error) == 1

    run(main)


def test_options_are_validated() -> None:
    async def main() -> None:
        with pytest.raises(TypeError):
            await rudp.aio.connect((LOOPBACK, 9), no_such_option=1)
        with pytest.raises(ValueError):
            await rudp.aio.serve(echo, LOOPBACK, 0, send_buffer=0)
        async with await start(echo, max_message_size=1000) as server:
            conn = await rudp.aio.connect(server.address, max_message_size=1000, **FAST)
            with pytest.raises(MessageTooLarge):
                await conn.send(bytes(1001))
            await conn.send(bytes(1000))
            assert await conn.recv() == bytes(1000)
            await conn.close()

    run(main)


def test_connect_times_out_with_rudp_timeout() -> None:
    async def main() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((LOOPBACK, 0))
        with silent, pytest.raises(Timeout):
            # The handshake budget (peer_timeout) is longer than the connect bound.
            await rudp.aio.connect(silent.getsockname(), timeout=0.3, peer_timeout=30.0)

    run(main)


def test_handler_exception_aborts_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def picky(conn: rudp.aio.Connection) -> None:
        async for message in conn:
            if message == b"boom":
                raise ValueError("handler bug")
            await conn.send(message)

    async def main() -> None:
        async with await start(picky) as server:
            bad = await rudp.aio.connect(server.address, **FAST)
            good = await rudp.aio.connect(server.address, **FAST)
            await bad.send(b"boom")
            with pytest.raises(ConnectionReset) as caught:
                await bad.recv()
            assert caught.value.kind is FailureKind.RESET_BY_PEER
            # The RESET may overtake the (delayed) ack of b"boom": then it counts
            # as undelivered -- conservative, never silently lost.
            assert caught.value.undelivered in ((), (b"boom",))
            assert bad.is_closed
            await good.send(b"still fine")
            assert await good.recv() == b"still fine"
            await good.close()

    with caplog.at_level(logging.ERROR, logger="rudp.aio"):
        run(main)
    assert any("handler" in record.message for record in caplog.records)


def test_lossy_network_still_delivers_everything() -> None:
    """Loss, duplication, reordering and corruption on a real-socket proxy.

    The driver's timers (RTO, delayed acks) carry the recovery here; the
    retransmission counters prove the network really lost packets.
    """
    profile = LinkProfile(
        loss=0.1, duplicate=0.05, reorder=0.1, corrupt=0.02, delay=0.001, jitter=0.002
    )
    messages = [b"%d:" % i + bytes(i % 3000) for i in range(300)]
    # The default close_linger (TIME_WAIT) outlasts several RTOs, so a lost
    # final ACK is repaired instead of leaving the server waiting out linger.
    fast_rto = {"min_rto": 0.02, "initial_rto": 0.1, "max_rto": 0.5, "close_linger": 2.0}

    async def main() -> None:
        server = await start(echo, **fast_rto)
        with LossyProxy(server.address, profile, seed=5) as proxy:
            try:
                options = {**FAST, **fast_rto}
                conns = [await rudp.aio.connect(proxy.address, **options) for _ in range(3)]

                async def use(conn: rudp.aio.Connection) -> list[bytes]:
                    async def push() -> None:
                        for message in messages:
                            await conn.send(message)

                    task = asyncio.create_task(push())
                    got = [await conn.recv() for _ in messages]
                    await task
                    await conn.close()
                    return got

                results = await asyncio.gather(*(use(conn) for conn in conns))
                assert all(result == messages for result in results)
                assert sum(conn.stats.retransmissions for conn in conns) > 0
            finally:
                # While the proxy still relays: the server's last FIN may need
                # a retransmission (its ack lost) to finish cleanly.
                await server.wait_closed()

    run(main, timeout=90.0)


# --- many connections on one socket --------------------------------------------------


def test_hundred_concurrent_clients_share_one_server_socket() -> None:
    clients = 100

    async def main() -> None:
        async with await start(echo) as server:

            async def client(n: int) -> None:
                messages = [b"client %d message %d " % (n, i) + bytes(n * 10) for i in range(20)]
                assert await exchange(server.address, messages) == messages

            await asyncio.gather(*(client(n) for n in range(clients)))
            stats = server.endpoint_stats
            assert stats.connections_created == clients
            assert stats.bad_datagrams == 0

    run(main, timeout=90.0)


def test_garbage_datagrams_disturb_no_transfer() -> None:
    rng = random.Random(3)

    def garbage() -> bytes:
        kind = rng.randrange(4)
        if kind == 0:  # random bytes of random length
            return rng.randbytes(rng.randrange(0, 1500))
        if kind == 1:  # a valid-looking header with a broken checksum
            data = bytearray(
                wire.encode(
                    wire.Packet(wire.PacketType.DATA, 0, rng.getrandbits(64), 1, 1, 10, 0, (), b"x")
                )
            )
            data[-1] ^= 0xFF
            return bytes(data)
        # a well-formed packet for a connection id that does not exist
        ptype = rng.choice([wire.PacketType.DATA, wire.PacketType.ACK, wire.PacketType.FIN])
        payload = rng.randbytes(100) if ptype is wire.PacketType.DATA else b""
        return wire.encode(
            wire.Packet(
                ptype,
                0,
                rng.getrandbits(64) | 1,
                rng.getrandbits(32),
                rng.getrandbits(32),
                100,
                0,
                (),
                payload,
            )
        )

    async def main() -> None:
        async with await start(echo) as server:
            sprayer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sprayer.setblocking(False)
            stop = asyncio.Event()

            async def spray() -> int:
                sent = 0
                while not stop.is_set() and sent < 200_000:
                    for _ in range(50):
                        try:
                            sprayer.sendto(garbage(), server.address)
                        except BlockingIOError:
                            break
                        sent += 1
                    await asyncio.sleep(0)  # yield to the transfers (not synchronisation)
                return sent

            with sprayer:
                spray_task = asyncio.create_task(spray())
                messages = [b"%d:" % i + bytes(i % 2000) for i in range(800)]
                try:
                    results = await asyncio.gather(
                        *(exchange(server.address, messages) for _ in range(4))
                    )
                finally:
                    stop.set()
                    sent = await spray_task
            assert all(result == messages for result in results)
            assert sent > 0
            stats = server.endpoint_stats
            assert stats.bad_datagrams > 0
            assert stats.unknown_connection > 0

    run(main)
