"""Text forms of addresses, durations and rates: parsing them, and formatting addresses.

The ``rudp`` command reads ``HOST:PORT``, ``20ms`` and ``50mbit`` from its
arguments (``send``, ``recv`` and ``proxy`` alike); these functions turn such text
into values, raising ``ValueError`` with an example of what is accepted.  They
came with the proxy (and are still importable from ``rudp.testing.proxy``) but
live apart from it: they open no socket and start no thread, and the relay's
event loop reads better without them.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "Address",
    "format_address",
    "parse_address",
    "parse_duration",
    "parse_rate",
]

Address = tuple[Any, ...]
"""A socket address as the socket module returns it: (host, port[, flow, scope])."""


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|ms|s|m)?\s*$")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}

_RATE = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kmg]?)(bit|bps|b)?(?:/s)?\s*$",
    re.IGNORECASE,
)
_RATE_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_duration(text: str) -> float:
    """Parse ``"20ms"``, ``"1.5s"``, ``"500us"``, ``"2m"`` or bare seconds into seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"bad duration {text!r} (examples: 20ms, 1.5s, 500us)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_rate(text: str) -> float:
    """Parse a rate into bits per second, with tc's units.

    ``"50mbit"``, ``"10kbit"``, ``"1gbit"`` and a bare number are bits per
    second (decimal prefixes); ``"10mbps"`` / ``"10MBps"`` are *bytes* per
    second, as in tc(8).
    """
    match = _RATE.match(text)
    if match is None:
        raise ValueError(f"bad rate {text!r} (examples: 50mbit, 10kbit, 1gbit)")
    value = float(match.group(1)) * _RATE_PREFIX[match.group(2).lower()]
    unit = (match.group(3) or "bit").lower()
    # tc: "bps" means bytes per second; "bit" and a bare number mean bits.
    return value * 8 if unit == "bps" else value


def parse_address(text: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[V6HOST]:PORT`` or ``:PORT`` into a (host, port) pair."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad address {text!r} (expected [HOST]:PORT)")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad address {text!r} (expected HOST:PORT)")
        if ":" in host:
            raise ValueError(f"bad address {text!r} (write IPv6 hosts as [HOST]:PORT)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return (host or default_host, port)


def format_address(address: Address) -> str:
    """Format a socket address as ``HOST:PORT`` (``[HOST]:PORT`` for IPv6)."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
