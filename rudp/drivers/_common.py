"""What every driver shares: failure -> exception.

Both drivers (``blocking``: an I/O thread per socket; ``asyncio``: a protocol on
the event loop) and the three public faces over them (``rudp.socket``,
``rudp.connect``/``rudp.listen``, ``rudp.aio``) turn a ``Failed`` event into an
exception through one table, keyed by ``Failed.kind``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from rudp.errors import (
    ConnectionAborted,
    ConnectionFailed,
    ConnectionReset,
    PeerProtocolError,
    PeerUnreachable,
)
from rudp.events import FailureKind

__all__ = ["FAILURE_EXCEPTIONS", "failure_error"]


# --- failures ------------------------------------------------------------------------------

FAILURE_EXCEPTIONS: Mapping[FailureKind, type[ConnectionFailed]] = MappingProxyType(
    {
        FailureKind.UNREACHABLE: PeerUnreachable,
        FailureKind.RESET_BY_PEER: ConnectionReset,
        FailureKind.PROTOCOL_ERROR: PeerProtocolError,
        FailureKind.ABORTED: ConnectionAborted,
        FailureKind.CLOSED_BY_APPLICATION: ConnectionAborted,
    }
)
"""The exception every face raises for a ``Failed`` event of each kind: the only
place that decides it (nothing parses ``Failed.reason``)."""


def failure_error(
    reason: str, undelivered: tuple[object, ...], kind: FailureKind, *, address: Any = None
) -> ConnectionFailed:
    """A fresh exception for a failure (re-raising one instance would chain tracebacks)."""
    return FAILURE_EXCEPTIONS[kind](reason, undelivered, kind, address=address)
