"""What the endpoint needs of a connection core, and how it makes one.

``rudp.core.endpoint.Endpoint`` multiplexes connections it treats through
``ConnectionLike``, the slice of ``rudp.core.connection.SansIOConnection`` it uses;
tests inject fakes through a ``ConnectionFactory``.  Re-exported by the endpoint.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from rudp.config import Config
from rudp.core.state import ConnectionState
from rudp.core.wire import Handshake, Packet
from rudp.events import Event

__all__ = ["ConnectionFactory", "ConnectionLike", "default_factory"]


class ConnectionLike(Protocol):
    """The part of ``SansIOConnection`` the endpoint uses (see ARCHITECTURE.md)."""

    @property
    def state(self) -> ConnectionState: ...

    @property
    def local_connection_id(self) -> int | None: ...

    @property
    def remote_connection_id(self) -> int | None: ...

    @property
    def largest_packet_number(self) -> int: ...

    @property
    def path(self) -> Any: ...  # a rudp.core.path.PathValidator

    @property
    def is_closed(self) -> bool: ...

    @property
    def is_established(self) -> bool: ...

    @property
    def close_done(self) -> bool: ...

    def connect(self, now: float) -> None: ...

    def close(self, now: float, *, reading: bool = True, left_unread: bool = False) -> None: ...

    def send(self, message: bytes) -> int: ...

    def abort(self, reason: str) -> None: ...

    def receive_datagram(self, data: bytes, now: float) -> None: ...

    def receive_packet(
        self,
        packet: Packet,
        now: float,
        handshake: Handshake | None = None,
        size: int | None = None,
    ) -> None: ...

    def datagrams_to_send(self, now: float) -> list[bytes]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> Event | None: ...


ConnectionFactory = Callable[..., Any]
"""``factory(config, *, is_client, rng, static_key) -> connection`` (a ``ConnectionLike``)."""


def default_factory(
    config: Config, *, is_client: bool, rng: random.Random | None, static_key: bytes
) -> Any:
    # Imported lazily so the endpoint can be loaded (and tested with a fake
    # core) independently of the core module.
    from rudp.core.connection import SansIOConnection

    return SansIOConnection(config, is_client=is_client, rng=rng, static_key=static_key)
