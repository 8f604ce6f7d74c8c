"""``rudp.listen`` / ``rudp.connect`` over real loopback sockets."""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import rudp

WAIT = 10.0  # generous bound for any blocking call on loopback


class Relay:
    """A UDP relay between one client and a server that can turn into a black hole.

    The client talks to ``relay.address``; datagrams go to ``server`` and back.
    Setting ``blackhole`` drops everything from then on: a peer that went silent.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.blackhole = threading.Event()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self.address = self._sock.getsockname()
        self._client: Any = None
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                selector.select(0.05)
                for _ in range(1000):
                    try:
                        data, address = self._sock.recvfrom(65536)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    if self.blackhole.is_set():
                        continue
                    if address == self.server:
                        if self._client is not None:
                            self._sock.sendto(data, self._client)
                    else:
                        self._client = address
                        self._sock.sendto(data, self.server)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self._sock.close()


@contextlib.contextmanager
def relayed_pair(**options: Any) -> Iterator[tuple[rudp.Connection, rudp.Connection, Relay]]:
    with rudp.listen(("127.0.0.1", 0), **options) as listener:
        relay = Relay(listener.address)
        try:
            with (
                rudp.connect(relay.address, **options) as client,
                listener.accept(timeout=WAIT) as server,
            ):
                yield client, server, relay
        finally:
            relay.close()


@pytest.fixture
def pair() -> Iterator[tuple[rudp.Connection, rudp.Connection]]:
    with (
        rudp.listen(("127.0.0.1", 0)) as listener,
        rudp.connect(listener.address) as client,
        listener.accept(timeout=WAIT) as server,
    ):
        yield client, server


# --- opening -----------------------------------------------------------------------


def test_listen_reports_the_bound_port_and_accept_times_out() -> None:
    with rudp.listen(("127.0.0.1", 0)) as listener:
        host, port = listener.address
        assert host == "127.0.0.1" and port != 0
        assert "Listener" in repr(listener)
        with pytest.raises(rudp.Timeout):
            listener.accept(timeout=0.05)
    with pytest.raises(rudp.LocalProtocolError):
        listener.accept(timeout=0.05)


def test_connect_to_a_silent_address_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(rudp.Timeout):
            rudp.connect(silent.getsockname(), timeout=0.2)
        with pytest.raises(rudp.PeerUnreachable) as info:
            rudp.connect(silent.getsockname(), timeout=WAIT, peer_timeout=0.5)
        assert info.value.undelivered == ()


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TypeError, match="bogus"):
        rudp.listen(("127.0.0.1", 0), bogus=True)


def test_ipv6() -> None:
    with (
        rudp.listen(("::1", 0)) as listener,
        rudp.connect(("::1", listener.address[1])) as client,
        listener.accept(timeout=WAIT) as server,
    ):
        client.send(b"over six")
        assert server.recv(timeout=WAIT) == b"over six"
        assert server.peer_address[0] == "::1"
        assert client.local_address[1] == server.peer_address[1]


# --- messages ---------------------------------------------------------------------


def test_send_recv_flush_stats(pair: tuple[rudp.Connection, rudp.Connection]) -> None:
    client, server = pair
    messages = [b"m%d" % i * (i % 50) for i in range(400)]
    for message in messages:
        client.send(message)
    client.flush(timeout=WAIT)
    stats = client.stats
    assert stats.messages_sent == 400 and stats.messages_acked == 400
    assert [server.recv(timeout=WAIT) for _ in messages] == messages
    assert server.stats.messages_delivered == 400
    assert "Connection" in repr(client)


def test_recv_timeout(pair: tuple[rudp.Connection, rudp.Connection]) -> None:
    _, server = pair
    with pytest.raises(TimeoutError):
        server.recv(timeout=0.05)


def test_iteration_ends_when_the_peer_closes(pair: tuple[rudp.Connection, rudp.Connection]) -> None:
    client, server = pair
    for i in range(100):
        client.send(b"%d" % i)
    client.close()
    assert list(server) == [b"%d" % i for i in range(100)]
    with pytest.raises(rudp.ConnectionClosed):
        server.recv(timeout=WAIT)
    with pytest.raises(rudp.ConnectionClosed):
        server.send(b"too late")
    with pytest.raises(rudp.LocalProtocolError):
        client.send(b"after my own close")


def test_reader_and_writer_threads_on_one_connection(
    pair: tuple[rudp.Connection, rudp.Connection],
) -> None:
    client, server = pair
    count = 2000

    def echo() -> None:
        for message in server:
            server.send(message)

    echo_thread = threading.Thread(target=echo)
    echo_thread.start()
    received: list[bytes] = []

    def reader() -> None:
        for _ in range(count):
            received.append(client.recv(timeout=WAIT))

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    for i in range(count):  # this thread writes while the reader thread reads
        client.send(b"%d" % i)
    reader_thread.join(WAIT)
    client.close()
    echo_thread.join(WAIT)
    assert not reader_thread.is_alive() and not echo_thread.is_alive()
    assert received == [b"%d" % i for i in range(count)]


def test_many_clients_share_one_listener() -> None:
    with rudp.listen(("127.0.0.1", 0)) as listener:
        clients = [rudp.connect(listener.address) for _ in range(5)]
        try:
            servers = [listener.accept(timeout=WAIT) for _ in clients]
            for n, client in enumerate(clients):
                client.send(b"client %d" % n)
            got = sorted(server.recv(timeout=WAIT) for server in servers)
            assert got == sorted(b"client %d" % n for n in range(5))
            for server in servers:
                server.close()
        finally:
            for client in clients:
                client.close()


def test_garbage_sprayed_at_a_listener_does_not_disturb_a_transfer() -> None:
    rng = random.Random(7)
    messages = [rng.randbytes(rng.randrange(4000)) for _ in range(300)]
    with rudp.listen(("127.0.0.1", 0)) as listener:
        stop = threading.Event()

        def spray() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for _ in range(5000):
                    if stop.is_set():
                        return
                    sock.sendto(rng.randbytes(rng.randrange(1, 300)), listener.address)

        sprayer = threading.Thread(target=spray)
        sprayer.start()
        try:
            with (
                rudp.connect(listener.address) as client,
                listener.accept(timeout=WAIT) as server,
            ):
                for message in messages:
                    client.send(message)
                assert [server.recv(timeout=WAIT) for _ in messages] == messages
        finally:
            stop.set()
            sprayer.join(WAIT)


# --- back-pressure and failures ------------------------------------------------------


def test_send_blocks_only_while_the_send_buffer_is_full() -> None:
    with relayed_pair(send_buffer=10_000, linger=0.1) as (client, _server, relay):
        client.send(b"a" * 6000)  # accepted: nothing queued yet
        client.flush(timeout=WAIT)
        relay.blackhole.set()
        client.send(b"b" * 6000)  # accepted: queue empty
        with pytest.raises(rudp.Timeout):  # 12000 > 10000 and nothing gets acked
            client.send(b"c" * 6000, timeout=0.2)
        with pytest.raises(rudp.LingerExpired) as info:  # close says what never got through
            client.close()
        assert info.value.undelivered == (b"b" * 6000,)


def test_silent_peer_raises_peer_unreachable_with_undelivered() -> None:
    with relayed_pair(peer_timeout=1.0, linger=0) as (client, server, relay):
        client.send(b"delivered")
        assert server.recv(timeout=WAIT) == b"delivered"
        client.flush(timeout=WAIT)
        relay.blackhole.set()
        client.send(b"lost 1")
        client.send(b"lost 2")
        with pytest.raises(rudp.PeerUnreachable) as info:
            client.flush(timeout=WAIT)
        assert info.value.undelivered == (b"lost 1", b"lost 2")
        with pytest.raises(rudp.PeerUnreachable):  # and again on every call
            client.recv(timeout=WAIT)
        with pytest.raises(rudp.PeerUnreachable):
            client.send(b"more")
        with pytest.raises(rudp.PeerUnreachable) as info:  # close() reports the loss too
            client.close()
        assert info.value.undelivered == (b"lost 1", b"lost 2")
        client.close()  # and only once


def test_blocked_recv_wakes_with_peer_unreachable() -> None:
    with relayed_pair(peer_timeout=1.0, keepalive_interval=0.2, linger=0) as (client, _, relay):
        relay.blackhole.set()
        with pytest.raises(rudp.PeerUnreachable) as info:
            client.recv(timeout=WAIT)  # idle: the keepalive notices the silence
        assert info.value.undelivered == ()


def test_a_timeout_polling_loop_ends_when_the_peer_becomes_unreachable() -> None:
    """``except TimeoutError: continue`` around ``recv`` (the seeds' retry idiom) sees the end.

    ``PeerUnreachable`` is deliberately not a ``TimeoutError`` (rudp/errors.py):
    were it one, this loop would swallow it on every call until the bound below.
    """
    with relayed_pair(peer_timeout=1.0, keepalive_interval=0.2, linger=0) as (client, _, relay):
        relay.blackhole.set()
        deadline = time.monotonic() + WAIT
        with pytest.raises(rudp.PeerUnreachable):
            while time.monotonic() < deadline:
                try:
                    client.recv(timeout=0.05)
                except TimeoutError:
                    continue


def test_a_reset_raises_connection_reset() -> None:
    """A listener closed before accepting resets the connection: not "unreachable"."""
    listener = rudp.listen(("127.0.0.1", 0))
    with rudp.connect(listener.address, linger=0) as client:
        listener.close()  # aborts the connection it never handed out: a RESET
        with pytest.raises(rudp.ConnectionReset) as info:
            client.recv(timeout=WAIT)
        assert isinstance(info.value, ConnectionResetError)
        assert not isinstance(info.value, rudp.PeerUnreachable)
        assert info.value.kind is rudp.FailureKind.RESET_BY_PEER
        with pytest.raises(rudp.ConnectionReset):  # and again on every call
            client.send(b"more")


def test_close_lingers_for_queued_messages() -> None:
    with rudp.listen(("127.0.0.1", 0)) as listener:
        client = rudp.connect(listener.address, linger=WAIT)
        server = listener.accept(timeout=WAIT)
        payload = b"x" * 200_000
        received: list[int] = []
        reader = threading.Thread(target=lambda: received.extend(len(m) for m in server))
        reader.start()
        for _ in range(20):
            client.send(payload)
        client.close()  # returns once all 4 MB are acknowledged (and our FIN)
        assert client.stats.messages_acked == 20
        reader.join(WAIT)
        assert received == [len(payload)] * 20
        server.close()


def test_a_reader_that_stops_reading_stops_the_sender() -> None:
    """Unread messages fill the receive window: the sender's buffer fills, send blocks."""
    with (
        rudp.listen(("127.0.0.1", 0), linger=0) as listener,
        rudp.connect(listener.address, send_buffer=1_000_000, linger=0) as client,
        listener.accept(timeout=WAIT) as server,
    ):
        chunk = b"y" * 100_000
        with pytest.raises(rudp.Timeout):
            for _ in range(1000):  # 100 MB: far beyond every buffer
                client.send(chunk, timeout=1.0)
        # bounded: about one window in the driver plus one in the core
        window_bytes = rudp.Config().receive_window * rudp.Config().max_datagram_size
        assert server._ledger.inbox_bytes <= window_bytes + len(chunk)
        assert server.recv(timeout=WAIT) == chunk
        with pytest.raises(rudp.LingerExpired) as info:  # linger=0: no wait, loss reported
            client.close()
        assert info.value.undelivered and set(info.value.undelivered) == {chunk}
