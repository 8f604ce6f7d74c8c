"""The few names of the ``socket`` module that UDP programs use besides the constructor.

With these re-exported from ``rudp``, a classic UDP program runs reliably after changing one
line, ``import socket`` to ``import rudp as socket``: ``socket.socket(socket.AF_INET,
socket.SOCK_DGRAM)`` then builds a ``rudp.socket`` and ``except socket.timeout`` still
catches rudp's timeouts.  They are the stdlib objects themselves, not copies.
"""

from __future__ import annotations

import socket as _socket

timeout = _socket.timeout
"""``TimeoutError``, which every rudp timeout subclasses."""
error = _socket.error
"""``OSError``."""
gaierror = _socket.gaierror
herror = _socket.herror
gethostname = _socket.gethostname
gethostbyname = _socket.gethostbyname
getaddrinfo = _socket.getaddrinfo
getfqdn = _socket.getfqdn
inet_aton = _socket.inet_aton
inet_ntoa = _socket.inet_ntoa

__all__ = [
    "error",
    "gaierror",
    "getaddrinfo",
    "getfqdn",
    "gethostbyname",
    "gethostname",
    "herror",
    "inet_aton",
    "inet_ntoa",
    "timeout",
]
