"""``rudp.socket`` over real loopback sockets: every method, ordering, errors, IPv6."""

from __future__ import annotations

import errno
import random
import socket
import threading
import time
from typing import Any

import pytest

import rudp
from rudp.core.wire import Packet, PacketType, encode

WAIT = 10.0  # generous bound for any blocking call on loopback


@pytest.fixture
def server() -> rudp.socket:
    with rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(WAIT)
        yield sock


@pytest.fixture
def silent_peer() -> socket.socket:
    """A bound plain UDP socket that reads nothing: an unreachable rudp peer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


# --- construction ------------------------------------------------------------------


def test_constants_are_the_socket_modules() -> None:
    assert (rudp.AF_INET, rudp.AF_INET6, rudp.SOCK_DGRAM) == (
        socket.AF_INET,
        socket.AF_INET6,
        socket.SOCK_DGRAM,
    )


def test_non_datagram_type_and_unknown_family_and_option_raise() -> None:
    with pytest.raises(ValueError, match="SOCK_DGRAM"):
        rudp.socket(rudp.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ValueError, match="AF_INET"):
        rudp.socket(socket.AF_UNIX, rudp.SOCK_DGRAM)
    with pytest.raises(TypeError, match="no_such_option"):
        rudp.socket(no_such_option=1)


def test_getsockname_before_bind_and_sendto_binds_implicitly(server: rudp.socket) -> None:
    with rudp.socket() as client:
        assert client.getsockname() == ("0.0.0.0", 0)
        client.sendto(b"hi", server.getsockname())
        _host, port = client.getsockname()
        assert port != 0
        data, address = server.recvfrom(10)
        assert data == b"hi" and address[1] == port
        assert "rudp.socket" in repr(client)


def test_timeout_accessors() -> None:
    with rudp.socket() as sock:
        assert sock.gettimeout() is None and sock.getblocking()
        sock.settimeout(1.5)
        assert sock.gettimeout() == 1.5
        sock.setblocking(False)
        assert sock.gettimeout() == 0.0 and not sock.getblocking()
        sock.setblocking(True)
        assert sock.gettimeout() is None
        with pytest.raises(ValueError):
            sock.settimeout(-1)


# --- sending and receiving ------------------------------------------------------------


def test_connect_send_recv_getpeername(server: rudp.socket) -> None:
    with rudp.socket() as client:
        with pytest.raises(OSError) as info:
            client.getpeername()
        assert info.value.errno == errno.ENOTCONN
        with pytest.raises(OSError) as info:
            client.send(b"nowhere")
        assert info.value.errno == errno.EDESTADDRREQ
        client.connect(server.getsockname())
        assert client.getpeername() == server.getsockname()
        assert client.getsockname()[0] == "127.0.0.1"  # connect() binds, as UDP's does
        assert client.send(b"ping") == 4
        client.sendall(memoryview(b"all"))
        data, address = server.recvfrom(100)
        assert data == b"ping"
        assert server.recv(100) == b"all"
        assert server.sendto(b"pong", 0, address) == 4  # the (data, flags, address) form
        client.settimeout(WAIT)
        assert client.recv(100) == b"pong"


def test_recv_timeout_raises_socket_timeout(server: rudp.socket) -> None:
    server.settimeout(0.05)
    with pytest.raises(socket.timeout):
        server.recvfrom(100)
    with pytest.raises(rudp.Timeout):
        server.recv(100)


def test_nonblocking_recv_raises_blocking_io_error(server: rudp.socket) -> None:
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.recv(100)


def test_exactly_once_in_order_per_peer_with_many_peers(server: rudp.socket) -> None:
    count = 300
    clients = [rudp.socket() for _ in range(3)]
    try:
        target = server.getsockname()
        for i in range(count):
            for n, client in enumerate(clients):
                client.sendto(b"%d:%d" % (n, i), target)
        per_peer: dict[object, list[bytes]] = {}
        for _ in range(count * len(clients)):
            data, address = server.recvfrom(100)
            per_peer.setdefault(address, []).append(data)
        assert len(per_peer) == 3
        for address, messages in per_peer.items():
            n = messages[0].split(b":")[0]
            assert messages == [b"%s:%d" % (n, i) for i in range(count)], address
        # replies travel on the associations the clients opened: no extra handshakes
        for address in per_peer:
            server.sendto(b"ok", address)
        assert len(server._engine.endpoint) == 3
        for client in clients:
            client.settimeout(WAIT)
            assert client.recv(10) == b"ok"
    finally:
        for client in clients:
            client.close()


def test_ipv6_loopback() -> None:
    with rudp.socket(rudp.AF_INET6, rudp.SOCK_DGRAM) as server:
        server.bind(("::1", 0))
        server.settimeout(WAIT)
        with rudp.socket(rudp.AF_INET6) as client:
            client.settimeout(WAIT)
            client.sendto(b"six", ("::1", server.getsockname()[1]))
            data, address = server.recvfrom(10)
            assert data == b"six"
            assert address[0] == "::1" and address[1] == client.getsockname()[1]
            server.sendto(b"back", address)
            data, address = client.recvfrom(10)
            assert data == b"back" and address[1] == server.getsockname()[1]


def test_message_larger_than_bufsize_raises_and_stays_queued(server: rudp.socket) -> None:
    with rudp.socket() as client:
        big = bytes(range(256)) * 40  # 10240 bytes: several datagrams
        client.sendto(big, server.getsockname())
        client.sendto(b"next", server.getsockname())
        with pytest.raises(rudp.BufferTooSmall) as info:
            server.recvfrom(1000)
        assert isinstance(info.value, OSError) and info.value.errno == errno.EMSGSIZE
        assert info.value.message_size == len(big)
        assert server.recv(len(big), socket.MSG_PEEK) == big  # peek leaves it queued
        assert server.recv(len(big)) == big
        assert server.recv(4) == b"next"


def test_a_too_large_message_is_reported_once_and_other_peers_go_on(server: rudp.socket) -> None:
    """Peer A's 3,000-byte message against ``recvfrom(2048)`` must not stall peer B.

    Rule (module docs): ``BufferTooSmall`` once, naming the size and A's
    address; the message is kept for a call with a big enough buffer; other
    peers' messages keep coming in arrival order; A's later messages wait
    behind its big one (per-peer order); nothing is dropped.
    """
    target = server.getsockname()
    with rudp.socket() as a, rudp.socket() as b:
        b.sendto(b"b1", target)
        b.flush(WAIT)  # acknowledged: b1 is queued at the server before A's messages
        big = bytes(range(256)) * 12  # 3072 bytes
        a.sendto(big, target)
        a.sendto(b"a2", target)
        a.flush(WAIT)
        b.sendto(b"b2", target)
        b.flush(WAIT)
        a_port, b_port = a.getsockname()[1], b.getsockname()[1]

        data, address = server.recvfrom(2048)  # arrival order: b1 came first
        assert (data, address[1]) == (b"b1", b_port)
        with pytest.raises(rudp.BufferTooSmall) as info:
            server.recvfrom(2048)
        error = info.value
        assert error.errno == errno.EMSGSIZE and error.address[1] == a_port
        assert (error.message_size, error.bufsize) == (len(big), 2048)
        assert "3072 bytes" in str(error) and repr(error.address) in str(error)
        # Reported once: the same small buffer now gets B's message, not the error again.
        data, address = server.recvfrom(2048)
        assert (data, address[1]) == (b"b2", b_port)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # only A's held messages are left
            server.recvfrom(2048)
        server.settimeout(WAIT)

        # A blocked small-buffer reader is woken by B, not by A's held message.
        woken: list[tuple[bytes, Any]] = []
        reader = threading.Thread(target=lambda: woken.append(server.recvfrom(2048)))
        reader.start()
        b.sendto(b"b3", target)
        reader.join(WAIT)
        assert not reader.is_alive() and woken[0][0] == b"b3"

        # A big enough buffer gets A's message, then A's next one: per-peer order kept.
        assert server.recvfrom(4096) == (big, error.address)
        assert server.recvfrom(2048) == (b"a2", error.address)


def test_each_too_large_message_is_reported_in_its_turn(server: rudp.socket) -> None:
    """Reported once *per message*: the peer's next too-large message is reported too."""
    target = server.getsockname()
    with rudp.socket() as a:
        for message in (b"x" * 3000, b"y" * 3000):
            a.sendto(message, target)
        a.flush(WAIT)
        for expected in (b"x" * 3000, b"y" * 3000):
            with pytest.raises(rudp.BufferTooSmall):
                server.recvfrom(2048)
            assert server.recvfrom(3000)[0] == expected


def test_connected_socket_ignores_other_peers(server: rudp.socket) -> None:
    with rudp.socket() as chosen, rudp.socket(linger=0) as other:
        chosen.sendto(b"from chosen", server.getsockname())
        other.sendto(b"from other", server.getsockname())
        _, chosen_address = server.recvfrom(100)
        _, other_address = server.recvfrom(100)
        if chosen_address[1] != chosen.getsockname()[1]:
            chosen_address, other_address = other_address, chosen_address
        server.connect(chosen_address)
        server.linger = 0.1  # its association with `other` can no longer close cleanly
        other.sendto(b"ignored", server.getsockname())  # filtered, as by UDP's kernel
        chosen.sendto(b"wanted", server.getsockname())
        assert server.recv(100) == b"wanted"
        with pytest.raises(rudp.LingerExpired) as info:  # never acknowledged: not silent
            other.close()
        # "from other" too if its ack was still held back when the server connected
        # (a connected UDP socket cannot send to anyone else): conservative, not silent.
        assert info.value.undelivered in ((b"ignored",), (b"from other", b"ignored"))


def test_reader_and_writer_threads_share_one_socket(server: rudp.socket) -> None:
    count = 500
    with rudp.socket() as client:
        client.settimeout(WAIT)
        client.sendto(b"hello", server.getsockname())
        _, client_address = server.recvfrom(100)
        received: list[bytes] = []

        def reader() -> None:
            for _ in range(count):
                received.append(client.recv(100))

        thread = threading.Thread(target=reader)
        thread.start()
        for i in range(count):  # the server echoes what the writer thread sends
            client.sendto(b"%d" % i, server.getsockname())
            server.sendto(server.recv(100), client_address)
        thread.join(WAIT)
        assert not thread.is_alive()
        assert received == [b"%d" % i for i in range(count)]


def test_garbage_sprayed_at_a_socket_does_not_disturb_a_transfer(server: rudp.socket) -> None:
    rng = random.Random(42)
    messages = [rng.randbytes(rng.randrange(3000)) for _ in range(300)]
    target = server.getsockname()
    with rudp.socket() as client, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spray:
        for i, message in enumerate(messages):
            client.sendto(message, target)
            # random bytes, and well-formed packets for connection ids nobody owns
            spray.sendto(rng.randbytes(rng.randrange(1, 200)), target)
            forged = Packet(PacketType.DATA, 0, rng.getrandbits(64), i, 0, 10, 0, (), b"evil")
            spray.sendto(encode(forged), target)
        received = [server.recv(4000) for _ in messages]
        assert received == messages
        client.flush(WAIT)
    stats = server._engine.endpoint.stats
    assert stats.bad_datagrams + stats.unknown_connection >= 300


# --- failures and closing ------------------------------------------------------------


def test_unreachable_peer_raises_with_undelivered_payloads(silent_peer: socket.socket) -> None:
    with rudp.socket(peer_timeout=1.0, linger=0) as sock:
        target = silent_peer.getsockname()
        sock.sendto(b"first", target)
        sock.sendto(b"second", target)
        sock.settimeout(WAIT)
        with pytest.raises(rudp.PeerUnreachable) as info:
            sock.recvfrom(100)  # a blocked call is woken by the failure
        assert info.value.undelivered == (b"first", b"second")
        assert info.value.address == target
        assert isinstance(info.value, ConnectionError)
        sock.settimeout(0.05)
        with pytest.raises(rudp.Timeout):  # reported once; the socket keeps working
            sock.recvfrom(100)


def test_a_socket_timeout_retry_loop_still_sees_an_unreachable_peer(
    silent_peer: socket.socket,
) -> None:
    """The seeds' ``except socket.timeout: retry`` loop: the failure is not a timeout.

    The socket reports a failure once, so a ``TimeoutError`` failure would be
    swallowed by this loop and lost; it must escape it instead.
    """
    with rudp.socket(peer_timeout=1.0, linger=0) as sock:
        sock.sendto(b"lost", silent_peer.getsockname())
        sock.settimeout(0.05)
        deadline = time.monotonic() + WAIT
        with pytest.raises(rudp.PeerUnreachable) as info:
            while time.monotonic() < deadline:
                try:
                    sock.recvfrom(100)
                except socket.timeout:  # noqa: UP041 -- the seeds' spelling, on purpose
                    continue
        assert info.value.undelivered == (b"lost",)
        assert info.value.kind is rudp.FailureKind.UNREACHABLE


def test_unreachable_peer_surfaces_on_the_next_call(silent_peer: socket.socket) -> None:
    with rudp.socket(peer_timeout=1.0, linger=0) as sock:
        sock.sendto(b"lost", silent_peer.getsockname())
        with pytest.raises(rudp.PeerUnreachable) as info:
            sock.flush(WAIT)
        assert info.value.undelivered == (b"lost",)


def test_close_lingers_until_messages_are_acknowledged(server: rudp.socket) -> None:
    client = rudp.socket(linger=WAIT)
    for i in range(200):
        client.sendto(b"%d" % i, server.getsockname())
    client.close()  # returns once everything is acknowledged
    assert client.undelivered == ()
    assert [server.recv(10) for _ in range(200)] == [b"%d" % i for i in range(200)]


def test_close_gives_up_after_linger_and_reports_undelivered(
    silent_peer: socket.socket,
) -> None:
    client = rudp.socket(linger=0.2)
    client.sendto(b"never acked", silent_peer.getsockname())
    with pytest.raises(rudp.LingerExpired) as info:
        client.close()
    assert isinstance(info.value, rudp.PeerUnreachable)
    assert info.value.undelivered == client.undelivered == (b"never acked",)
    assert info.value.address == silent_peer.getsockname() and info.value.linger == 0.2
    client.close()  # the loss is reported once


def test_closed_socket_raises_ebadf() -> None:
    sock = rudp.socket()
    sock.close()
    sock.close()  # idempotent
    for call in (
        lambda: sock.recv(10),
        lambda: sock.sendto(b"x", ("127.0.0.1", 9)),
        sock.getsockname,
        lambda: sock.bind(("127.0.0.1", 0)),
    ):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF
    assert "closed" in repr(sock)
    with pytest.raises(OSError):
        sock.detach()


def test_peer_that_closed_gets_a_fresh_association(server: rudp.socket) -> None:
    target = server.getsockname()
    first = rudp.socket()
    first.bind(("127.0.0.1", 0))
    address = first.getsockname()
    first.sendto(b"one", target)
    assert server.recvfrom(10) == (b"one", address)
    first.close()
    # A new socket on the same port: the server's old association ended with
    # the close, so a reply opens a new one and reaches the newcomer.
    with rudp.socket() as second:
        second.bind(address)
        second.settimeout(WAIT)
        server.sendto(b"two", address)
        assert second.recvfrom(10) == (b"two", target)


def test_peer_restarted_without_closing_is_answered_on_its_new_association(
    server: rudp.socket,
) -> None:
    target = server.getsockname()
    crashed = rudp.socket()
    crashed.bind(("127.0.0.1", 0))
    address = crashed.getsockname()
    crashed.sendto(b"one", target)
    assert server.recvfrom(10) == (b"one", address)
    crashed._engine.close()  # dies without a FIN: the server's association stays up
    crashed.close()  # (a no-op now)
    server.linger = 0.1  # the old association can never close cleanly
    with rudp.socket() as restarted:
        restarted.bind(address)
        restarted.settimeout(WAIT)
        restarted.sendto(b"again", target)
        assert server.recvfrom(10) == (b"again", address)
        server.sendto(b"welcome back", address)  # the old association is idle: replaced
        assert restarted.recvfrom(20) == (b"welcome back", target)


def test_message_above_max_message_size_raises_and_the_peer_stays_usable(
    server: rudp.socket,
) -> None:
    with rudp.socket(max_message_size=1000) as client:
        with pytest.raises(rudp.MessageTooLarge):
            client.sendto(b"x" * 1001, server.getsockname())
        assert len(client._engine.endpoint) == 0  # no association opened for it
        client.sendto(b"x" * 1000, server.getsockname())
        assert server.recv(2000) == b"x" * 1000
        assert len(client._engine.endpoint) == 1
