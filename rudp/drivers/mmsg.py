"""Batched UDP I/O on Linux: one ``sendmmsg(2)`` / ``recvmmsg(2)`` per batch, the GIL held.

Why: ``socket.sendto`` and ``recvfrom`` release the GIL around every syscall.  With the
blocking driver's I/O thread and an application thread (or, in one process, both ends)
runnable on two cores, every release hands the GIL to the other core and back.  Measured
on loopback (``make bench``, both ends in one process): two context switches per datagram,
and half the throughput of the same program pinned to one core.  These calls never block
(``MSG_DONTWAIT``, on a non-blocking socket), so keeping the GIL across them costs nothing,
and a burst of up to 64 datagrams is one syscall instead of 64.

The functions come from the C library through ``ctypes.PyDLL``, whose calls keep the GIL.
Where they are missing (not Linux, another C library), ``datagram_io`` returns a
``PlainIO`` and the drivers use ``sendto``/``recvfrom``; both paths give the same datagrams,
addresses and error handling (tests/test_mmsg.py runs the drivers both ways).  The asyncio
driver, one thread, uses it too: it saves the syscalls, and measured no slower (20 paired
runs).
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rudp.drivers._common import PlainIO

__all__ = ["BATCH", "BatchIO", "datagram_io"]

BATCH = 64
"""Datagrams per syscall (the pacing burst, ``Config.pacing_burst``, by default)."""
RECEIVE_ROOM = 1 << 20
"""Most bytes of receive buffers per socket: fewer datagrams per ``recvmmsg`` when the
largest datagram accepted is large (64 KiB datagrams: 16 per call, not 64)."""
ADDRESS_CACHE = 1024
"""Peer addresses kept in both their forms; the caches are cleared when full (bounded
memory against a peer that spoofs many source addresses)."""

_MSG_DONTWAIT = 0x40  # Linux's value: this module is used on Linux only
_NAME_SLOT = 32  # bytes per sockaddr: sockaddr_in6 (28) is the larger of the two families
_FULL = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS))
_SKIP = frozenset(
    (
        errno.ECONNREFUSED,  # ICMP errors for earlier datagrams: loss, as drain treats them
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EINTR,
    )
)


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


# The arrays are plain buffers written with struct at these offsets: one pack_into per
# field is several times cheaper than ctypes attribute access.
_MMSG_SIZE = ctypes.sizeof(_MMsgHdr)
_IOV_SIZE = ctypes.sizeof(_IoVec)
_HDR = _MMsgHdr.msg_hdr.offset
_NAME_AT = _HDR + _MsgHdr.msg_name.offset
_NAMELEN_AT = _HDR + _MsgHdr.msg_namelen.offset
_IOV_AT = _HDR + _MsgHdr.msg_iov.offset
_IOVLEN_AT = _HDR + _MsgHdr.msg_iovlen.offset
_LEN_AT = _MMsgHdr.msg_len.offset
_POINTER = struct.Struct("@P")
_SIZE = struct.Struct("@N")
_UINT = struct.Struct("@I")
_IOVEC = struct.Struct("@PN")
_RESULT = f"{_NAMELEN_AT}xI{_LEN_AT - _NAMELEN_AT - 4}xI{_MMSG_SIZE - _LEN_AT - 4}x"
_RESULTS = [struct.Struct("=" + _RESULT * count) for count in range(BATCH + 1)]
"""Per message count: the source address's size and the datagram's length of each, in one
``unpack_from`` of the message array (``=``: the offsets above, no alignment added)."""


def _load() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the calls keep the GIL
        sendmmsg, recvmmsg = libc.sendmmsg, libc.recvmmsg
    except (OSError, AttributeError):
        return None
    sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    sendmmsg.restype = ctypes.c_int
    recvmmsg.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,  # the timeout: NULL
    )
    recvmmsg.restype = ctypes.c_int
    return sendmmsg, recvmmsg


_LIBC = _load()


def sockaddr(family: int, address: Sequence[Any]) -> bytes:
    """The C ``sockaddr`` of a numeric address, as ``sendto`` would pass it.

    Raises ``OSError`` (or ``ValueError``/``TypeError``/``IndexError``) for anything else:
    a host name, say, which the caller then hands to ``sendto`` itself.
    """
    host, port = address[0], address[1]
    if family == socket.AF_INET:
        packed = socket.inet_pton(family, host)
        return struct.pack("=H", family) + struct.pack(">H", port) + packed + bytes(8)
    if "%" in host:  # a scope given by name: let sendto resolve it
        raise ValueError("scoped IPv6 host")
    flowinfo = address[2] if len(address) > 2 else 0
    scope_id = address[3] if len(address) > 3 else 0
    return (
        struct.pack("=H", family)
        + struct.pack(">HI", port, flowinfo)
        + socket.inet_pton(family, host)
        + struct.pack("=I", scope_id)
    )


def address_of(family: int, raw: bytes) -> tuple[Any, ...]:
    """The address ``recvfrom`` returns for the C ``sockaddr`` ``raw``."""
    (port,) = struct.unpack_from(">H", raw, 2)
    if family == socket.AF_INET:
        return (socket.inet_ntop(family, raw[4:8]), port)
    (flowinfo,) = struct.unpack_from(">I", raw, 4)
    (scope_id,) = struct.unpack_from("=I", raw, 24)
    host = socket.inet_ntop(family, raw[8:24])
    if scope_id:
        # CPython formats IPv6 hosts with getnameinfo, which names a link-local scope.
        flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        host = socket.getnameinfo((host, port, flowinfo, scope_id), flags)[0]
    return (host, port, flowinfo, scope_id)


class BatchIO(PlainIO):
    """``send`` and ``drain`` for one non-blocking UDP socket, a batch per syscall.

    Not thread-safe: the drivers call it with their lock held (blocking) or from the
    event loop (asyncio).
    """

    def __init__(self, sock: socket.socket, bufsize: int) -> None:
        assert _LIBC is not None, "datagram_io() decides whether BatchIO can be used"
        self._sendmmsg, self._recvmmsg = _LIBC
        super().__init__(sock, bufsize)  # its send() takes what sendmmsg cannot (names)
        self._family = sock.family
        self._names: dict[Any, tuple[Any, int, int]] = {}  # address -> (buffer, pointer, size)
        self._addresses: dict[bytes, tuple[Any, ...]] = {}  # sockaddr -> address
        # Send side: message i always has iovec i, and one of it; names and iovecs change.
        self._send_msgs = ctypes.create_string_buffer(_MMSG_SIZE * BATCH)
        self._send_iovs = ctypes.create_string_buffer(_IOV_SIZE * BATCH)
        iovs = ctypes.addressof(self._send_iovs)
        self._slot_names = [0] * BATCH  # the name pointer each send slot holds now
        for i in range(BATCH):
            _POINTER.pack_into(self._send_msgs, i * _MMSG_SIZE + _IOV_AT, iovs + i * _IOV_SIZE)
            _SIZE.pack_into(self._send_msgs, i * _MMSG_SIZE + _IOVLEN_AT, 1)
        # Receive side: a fixed buffer and name slot per message, set up once.
        self._recv_batch = max(1, min(BATCH, RECEIVE_ROOM // bufsize))
        self._recv_dirty = BATCH  # slots whose name room the kernel may have shrunk
        self._recv_buf = ctypes.create_string_buffer(bufsize * self._recv_batch)
        self._recv_view = memoryview(self._recv_buf).cast("B")
        self._recv_names = ctypes.create_string_buffer(_NAME_SLOT * BATCH)
        self._recv_names_view = memoryview(self._recv_names).cast("B")
        self._recv_msgs = ctypes.create_string_buffer(_MMSG_SIZE * BATCH)
        self._recv_iovs = ctypes.create_string_buffer(_IOV_SIZE * BATCH)
        data, names = ctypes.addressof(self._recv_buf), ctypes.addressof(self._recv_names)
        iovs = ctypes.addressof(self._recv_iovs)
        for i in range(self._recv_batch):
            _IOVEC.pack_into(self._recv_iovs, i * _IOV_SIZE, data + i * bufsize, bufsize)
            msg = i * _MMSG_SIZE
            _POINTER.pack_into(self._recv_msgs, msg + _NAME_AT, names + i * _NAME_SLOT)
            _POINTER.pack_into(self._recv_msgs, msg + _IOV_AT, iovs + i * _IOV_SIZE)
            _SIZE.pack_into(self._recv_msgs, msg + _IOVLEN_AT, 1)

    def _name(self, address: Any) -> tuple[Any, int, int]:
        """(buffer, its address, length) of the C ``sockaddr`` for ``address``, cached."""
        entry = self._names.get(address)
        if entry is None:
            raw = sockaddr(self._family, address)
            if len(self._names) >= ADDRESS_CACHE:
                # The buffers may go (send holds those of its own call): no slot may be
                # taken to point at one any more.
                self._names.clear()
                self._slot_names = [0] * BATCH
            buffer = ctypes.create_string_buffer(raw, _NAME_SLOT)
            entry = self._names[address] = (buffer, ctypes.addressof(buffer), len(raw))
        return entry

    def send(self, datagrams: Sequence[tuple[bytes, Any]], *, stop_when_full: bool = False) -> int:
        """Send the datagrams in order; returns how many were dealt with (all, unless
        ``stop_when_full`` and the socket buffer filled: the rest is the caller's).

        A datagram the kernel refuses (a full buffer, an ICMP error reported for an
        earlier one) is lost, as ``sendto``'s ``OSError`` makes it in the drivers.
        """
        total = len(datagrams)
        fd = self._sock.fileno()
        msgs, iovs = self._send_msgs, self._send_iovs
        msgs_at = ctypes.addressof(msgs)
        slot_names = self._slot_names
        pack_pointer, pack_uint, pack_iovec = _POINTER.pack_into, _UINT.pack_into, _IOVEC.pack_into
        last_address: Any = None
        name = name_size = 0
        held: list[Any] = []  # the name buffers this call's slots point at, kept alive
        start = 0
        while start < total:
            end = min(start + BATCH, total)
            # One contiguous copy of the burst; the iovecs point into it.
            joined = b"".join([datagrams[k][0] for k in range(start, end)])
            keep = ctypes.c_char_p(joined)
            base = ctypes.cast(keep, ctypes.c_void_p).value or 0
            offset = 0
            for i in range(end - start):
                data, address = datagrams[start + i]
                if address is not last_address:  # a driver passes one tuple per peer
                    try:
                        buffer, name, name_size = self._name(address)
                    except (OSError, ValueError, TypeError, IndexError, OverflowError):
                        rest = datagrams[start:]
                        return start + super().send(rest, stop_when_full=stop_when_full)
                    held.append(buffer)  # a cache reset must not free it before the syscall
                    last_address = address
                    slot_names = self._slot_names  # _name may have started it afresh
                size = len(data)
                pack_iovec(iovs, i * _IOV_SIZE, base + offset, size)
                if slot_names[i] != name:  # the slot keeps its name from the last call
                    msg = i * _MMSG_SIZE
                    pack_pointer(msgs, msg + _NAME_AT, name)
                    pack_uint(msgs, msg + _NAMELEN_AT, name_size)
                    slot_names[i] = name
                offset += size
            sent = self._sendmmsg(fd, msgs_at, end - start, _MSG_DONTWAIT)
            del keep, joined
            if sent < 0:
                code = ctypes.get_errno()
                if stop_when_full and code in _FULL:
                    return start
                if code not in _FULL and code not in _SKIP:
                    return total  # EBADF and the like: the socket is gone, nothing will go
                sent = 1  # this datagram is lost; go on with the next
            start += sent
        return total

    def drain(
        self,
        limit: int,
        batch: list[tuple[bytes, Any]],
        normalise: Callable[[Any], Any] | None = None,
    ) -> list[tuple[bytes, Any]]:
        """Append up to ``limit`` datagrams the kernel holds, without blocking
        (``rudp.drivers._common.drain``, a batch per syscall)."""
        fd = self._sock.fileno()
        msgs = self._recv_msgs
        msgs_at = ctypes.addressof(msgs)
        view, names = self._recv_view, self._recv_names_view
        bufsize = self._bufsize
        addresses = self._addresses
        pack_uint = _UINT.pack_into
        last_raw = b""
        address: Any = None
        while limit > 0:
            count = min(limit, self._recv_batch)
            for i in range(self._recv_dirty):  # in-out: the kernel shrank the name room
                pack_uint(msgs, i * _MMSG_SIZE + _NAMELEN_AT, _NAME_SLOT)
            got = self._recvmmsg(fd, msgs_at, count, _MSG_DONTWAIT, None)
            if got < 0:
                self._recv_dirty = 0
                if ctypes.get_errno() in _SKIP:
                    limit -= 1
                    continue
                break  # empty (EAGAIN), or the socket is gone
            self._recv_dirty = got
            fields = _RESULTS[got].unpack_from(msgs)  # (name size, length) per message
            for i in range(got):
                name_size = min(fields[2 * i], _NAME_SLOT)
                raw = bytes(names[i * _NAME_SLOT : i * _NAME_SLOT + name_size])
                if raw != last_raw:
                    address = addresses.get(raw)
                    if address is None:
                        if len(addresses) >= ADDRESS_CACHE:
                            addresses.clear()
                        address = addresses[raw] = address_of(self._family, raw)
                    if normalise is not None:
                        address = normalise(address)
                    last_raw = raw
                size = min(fields[2 * i + 1], bufsize)
                batch.append((bytes(view[i * bufsize : i * bufsize + size]), address))
            limit -= got
            if got < count:
                break  # the kernel had no more
        return batch


def datagram_io(sock: socket.socket, bufsize: int) -> PlainIO:
    """Batched I/O for a UDP socket where the C library has it, else ``sendto``/``recvfrom``."""
    if _LIBC is None or sock.type != socket.SOCK_DGRAM:
        return PlainIO(sock, bufsize)
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return PlainIO(sock, bufsize)
    return BatchIO(sock, bufsize)
