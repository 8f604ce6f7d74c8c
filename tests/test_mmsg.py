"""Batched UDP I/O (``rudp.drivers.mmsg``): the same datagrams, addresses and errors as
``sendto``/``recvfrom``, and the drivers work with it and without it.

Real sockets on loopback, port 0; every wait is bounded by a socket timeout.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import rudp
import rudp.aio
from rudp.drivers import asyncio as asyncio_driver
from rudp.drivers import blocking, mmsg
from rudp.drivers._common import PlainIO

BUFSIZE = 1401
FAMILIES = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


def udp(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((host, 0))
    return sock


@pytest.fixture(params=FAMILIES, ids=["ipv4", "ipv6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    family, host = request.param
    sender, receiver = udp(family, host), udp(family, host)
    sender.setblocking(False)
    receiver.settimeout(5.0)
    yield sender, receiver
    sender.close()
    receiver.close()


def batch(sock: socket.socket) -> mmsg.BatchIO:
    io = mmsg.datagram_io(sock, BUFSIZE)
    assert isinstance(io, mmsg.BatchIO)  # Linux with glibc: the symbols exist
    return io


def payloads(count: int) -> list[bytes]:
    return [os.urandom(i * 97 % (BUFSIZE - 1)) for i in range(count)]


def test_batched_sends_arrive_in_order_from_our_address(pair) -> None:
    sender, receiver = pair
    datagrams = payloads(3 * mmsg.BATCH + 5)  # several syscalls, one of them partial
    target = receiver.getsockname()
    assert batch(sender).send([(data, target) for data in datagrams]) == len(datagrams)
    for expected in datagrams:
        data, source = receiver.recvfrom(65535)
        assert data == expected
        assert source == sender.getsockname()


def test_drain_returns_what_recvfrom_would(pair) -> None:
    sender, receiver = pair
    receiver.setblocking(False)
    datagrams = payloads(2 * mmsg.BATCH + 3)
    for data in datagrams:
        sender.sendto(data, receiver.getsockname())
    io = batch(receiver)
    first = io.drain(10, [])  # the limit holds
    rest = io.drain(1000, [])
    got = first + rest
    assert len(first) == 10
    assert [data for data, _ in got] == datagrams
    assert {source for _, source in got} == {sender.getsockname()}
    assert io.drain(10, []) == []  # empty: no wait, nothing made up


def test_a_datagram_longer_than_the_buffer_is_cut_as_recvfrom_cuts_it(pair) -> None:
    sender, receiver = pair
    receiver.setblocking(False)
    long = os.urandom(3000)
    sender.sendto(long, receiver.getsockname())
    sender.sendto(b"next", receiver.getsockname())
    got = batch(receiver).drain(5, [])
    assert [data for data, _ in got] == [long[:BUFSIZE], b"next"]


def test_addresses_round_trip_in_both_forms() -> None:
    for family, address in [
        (socket.AF_INET, ("127.0.0.1", 9000)),
        (socket.AF_INET6, ("::1", 9000, 0, 0)),
        (socket.AF_INET6, ("2001:db8::7", 65535, 5, 0)),
    ]:
        assert mmsg.address_of(family, mmsg.sockaddr(family, address)) == address
    with pytest.raises(OSError):
        mmsg.sockaddr(socket.AF_INET, ("localhost", 9000))  # not numeric: sendto's job


def test_a_host_name_falls_back_to_sendto() -> None:
    sender, receiver = udp(socket.AF_INET, "127.0.0.1"), udp(socket.AF_INET, "127.0.0.1")
    with sender, receiver:
        receiver.settimeout(5.0)
        port = receiver.getsockname()[1]
        assert batch(sender).send([(b"by name", ("localhost", port))]) == 1
        assert receiver.recvfrom(100)[0] == b"by name"


class FakeSendmmsg:
    """Sends ``accept`` datagrams in total, then reports ``code`` for every call."""

    def __init__(self, real: object, accept: int, code: int) -> None:
        self.real, self.accept, self.code, self.calls = real, accept, code, 0

    def __call__(self, fd: int, msgs: int, count: int, flags: int) -> int:
        self.calls += 1
        if self.accept <= 0:
            ctypes.set_errno(self.code)
            return -1
        count = min(count, self.accept)
        sent = self.real(fd, msgs, count, flags)  # type: ignore[operator]
        self.accept -= sent
        return int(sent)


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ECONNREFUSED])
def test_refused_datagrams_are_lost_one_by_one_or_handed_back(code: int) -> None:
    sender, receiver = udp(socket.AF_INET, "127.0.0.1"), udp(socket.AF_INET, "127.0.0.1")
    with sender, receiver:
        receiver.settimeout(5.0)
        io = batch(sender)
        target = receiver.getsockname()
        datagrams = [(b"%d" % i, target) for i in range(10)]
        fake = FakeSendmmsg(io._sendmmsg, accept=4, code=code)
        io._sendmmsg = fake
        if code == errno.EAGAIN:
            # asyncio's way: a full buffer hands the rest back, to queue in order.
            assert io.send(datagrams, stop_when_full=True) == 4
        # The blocking driver's way (sendto's OSError): each refused datagram is lost.
        fake.accept = 4
        assert io.send(datagrams) == 10
        assert fake.calls >= 1 + 6  # one call for the four, then one per lost datagram
        got = [receiver.recvfrom(100)[0] for _ in range(8 if code == errno.EAGAIN else 4)]
        assert got[-4:] == [b"0", b"1", b"2", b"3"]


def test_a_closed_socket_ends_the_calls_at_once() -> None:
    sock = udp(socket.AF_INET, "127.0.0.1")
    io = batch(sock)
    sock.close()
    assert io.send([(b"x", ("127.0.0.1", 9))] * 200) == 200  # EBADF: nothing more will go
    assert io.drain(512, []) == []


def test_without_the_c_library_sendto_and_recvfrom_do_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mmsg, "_LIBC", None)
    sender, receiver = udp(socket.AF_INET, "127.0.0.1"), udp(socket.AF_INET, "127.0.0.1")
    with sender, receiver:
        receiver.setblocking(False)
        plain, io = mmsg.datagram_io(sender, BUFSIZE), mmsg.datagram_io(receiver, BUFSIZE)
        assert isinstance(plain, PlainIO) and isinstance(io, PlainIO)
        datagrams = payloads(5)
        assert plain.send([(data, receiver.getsockname()) for data in datagrams]) == 5
        deadline = time.monotonic() + 5
        got: list[tuple[bytes, object]] = []
        while len(got) < 5 and time.monotonic() < deadline:
            io.drain(10, got)
        assert got == [(data, sender.getsockname()) for data in datagrams]


# --- the drivers, with batched I/O and without -------------------------------------------

MESSAGES = [os.urandom(size) for size in (0, 1, 1367, 1368, 1369, 64 * 1024, 300_000)] * 3


@pytest.fixture(params=["batched", "sendto"])
def io_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "sendto":
        monkeypatch.setattr(blocking, "datagram_io", PlainIO)
        monkeypatch.setattr(asyncio_driver, "datagram_io", PlainIO)
    return str(request.param)


def test_blocking_transfer_both_ways(io_mode: str) -> None:
    received: list[bytes] = []
    with rudp.listen(("127.0.0.1", 0)) as listener:
        batched = isinstance(listener._engine._io, mmsg.BatchIO)
        assert batched == (io_mode == "batched")

        def serve() -> None:
            with listener.accept(timeout=10) as peer:
                for message in peer:
                    received.append(message)
                    peer.send(message[::-1])

        thread = threading.Thread(target=serve)
        thread.start()
        with rudp.connect(listener.address) as conn:
            for message in MESSAGES:
                conn.send(message)
            echoes = [conn.recv(timeout=10) for _ in MESSAGES]
        thread.join(10)
    assert received == MESSAGES
    assert echoes == [message[::-1] for message in MESSAGES]


def test_asyncio_transfer_both_ways(io_mode: str) -> None:
    async def run() -> list[bytes]:
        async def echo(conn: rudp.aio.Connection) -> None:
            async for message in conn:
                await conn.send(message[::-1])

        async with await rudp.aio.serve(echo, "127.0.0.1", 0) as server:
            conn = await rudp.aio.connect(server.address)
            for message in MESSAGES:
                await conn.send(message)
            echoes = [await asyncio.wait_for(conn.recv(), 10) for _ in MESSAGES]
            await conn.close()
            return echoes

    assert asyncio.run(run()) == [message[::-1] for message in MESSAGES]


def test_large_datagrams_take_fewer_slots_per_call_and_all_arrive() -> None:
    sender, receiver = udp(socket.AF_INET, "127.0.0.1"), udp(socket.AF_INET, "127.0.0.1")
    with sender, receiver:
        receiver.setblocking(False)
        io = mmsg.datagram_io(receiver, 65536)
        assert isinstance(io, mmsg.BatchIO)
        assert io._recv_batch == mmsg.RECEIVE_ROOM // 65536 == 16  # 1 MiB of buffers, not 4
        datagrams = [os.urandom(9000) for _ in range(40)]
        for data in datagrams:
            sender.sendto(data, receiver.getsockname())
        assert [data for data, _ in io.drain(100, [])] == datagrams


def test_many_peers_overflow_the_address_caches_and_every_datagram_is_right() -> None:
    """More peers than ADDRESS_CACHE: both caches start afresh, nothing is mis-addressed."""
    receivers = [udp(socket.AF_INET, "127.0.0.1") for _ in range(3)]
    sender = udp(socket.AF_INET, "127.0.0.1")
    try:
        io = batch(sender)
        targets = [r.getsockname() for r in receivers]
        # Fill the send cache with other loopback addresses (port 9, discard), then send to
        # the real peers.
        for round_ in range(3):
            count = mmsg.ADDRESS_CACHE // 2
            filler = [(b"", (f"127.1.{round_}.{i % 250 + 1}", 9 + i // 250)) for i in range(count)]
            io.send(filler)
            io.send([(b"%d-%d" % (round_, k), targets[k]) for k in range(3)] * 2)
        assert len(io._names) < 3 * count  # the cache was started afresh at least once
        for k, receiver in enumerate(receivers):
            receiver.settimeout(5.0)
            got = [receiver.recvfrom(100)[0] for _ in range(6)]
            assert got == [b"%d-%d" % (round_, k) for round_ in range(3) for _ in range(2)]
    finally:
        sender.close()
        for receiver in receivers:
            receiver.close()


def test_a_cache_reset_within_one_burst_misdirects_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name cache resets in the middle of one sendmmsg batch: the slots packed before
    the reset still point at live buffers, so every datagram reaches its own peer."""
    monkeypatch.setattr(mmsg, "ADDRESS_CACHE", 3)
    receivers = [udp(socket.AF_INET, "127.0.0.1") for _ in range(8)]
    sender = udp(socket.AF_INET, "127.0.0.1")
    try:
        io = batch(sender)
        for round_ in range(3):
            sent = [(b"%d-%d" % (round_, k), r.getsockname()) for k, r in enumerate(receivers)]
            assert io.send(sent) == len(sent)
        for k, receiver in enumerate(receivers):
            receiver.settimeout(5.0)
            assert [receiver.recvfrom(100)[0] for _ in range(3)] == [
                b"%d-%d" % (r, k) for r in range(3)
            ]
    finally:
        sender.close()
        for receiver in receivers:
            receiver.close()
