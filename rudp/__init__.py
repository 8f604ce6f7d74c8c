"""rudp: reliable, ordered, exactly-once messages over plain UDP.

Ways in:

- ``rudp.socket``: a drop-in for a UDP socket (``import rudp as socket`` also works);
- ``rudp.connect`` / ``rudp.listen``: blocking connections;
- ``rudp.aio``: the same over asyncio;
- ``rudp.SansIOConnection`` and ``rudp.Endpoint``: the sans-IO core, for custom drivers;
- ``rudp.testing``: the deterministic lossy-network simulator, for property tests.
"""

from rudp import aio
from rudp.api import Connection, Listener, connect, listen
from rudp.compat import (
    error,
    gaierror,
    getaddrinfo,
    getfqdn,
    gethostbyname,
    gethostname,
    herror,
    inet_aton,
    inet_ntoa,
    timeout,
)
from rudp.config import Config
from rudp.core.connection import SansIOConnection
from rudp.core.endpoint import Endpoint
from rudp.errors import (
    BadPacket,
    BufferTooSmall,
    ConnectionAborted,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionLimitExceeded,
    ConnectionReset,
    LingerExpired,
    LocalProtocolError,
    MessageTooLarge,
    PeerProtocolError,
    PeerUnreachable,
    RudpError,
    Timeout,
)
from rudp.events import (
    Closed,
    Connected,
    Event,
    Failed,
    FailureKind,
    MessageAcknowledged,
    MessageReceived,
    PeerClosed,
)
from rudp.sock import AF_INET, AF_INET6, SOCK_DGRAM, socket

__version__ = "0.6.0"  # wire version 6 (specs/protocol.md revision 6)

__all__ = [
    "AF_INET",
    "AF_INET6",
    "SOCK_DGRAM",
    "BadPacket",
    "BufferTooSmall",
    "Closed",
    "Config",
    "Connected",
    "Connection",
    "ConnectionAborted",
    "ConnectionClosed",
    "ConnectionFailed",
    "ConnectionLimitExceeded",
    "ConnectionReset",
    "Endpoint",
    "Event",
    "Failed",
    "FailureKind",
    "LingerExpired",
    "Listener",
    "LocalProtocolError",
    "MessageAcknowledged",
    "MessageReceived",
    "MessageTooLarge",
    "PeerClosed",
    "PeerProtocolError",
    "PeerUnreachable",
    "RudpError",
    "SansIOConnection",
    "Timeout",
    "aio",
    "connect",
    "error",
    "gaierror",
    "getaddrinfo",
    "getfqdn",
    "gethostbyname",
    "gethostname",
    "herror",
    "inet_aton",
    "inet_ntoa",
    "listen",
    "socket",
    "timeout",
]
