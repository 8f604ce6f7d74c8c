"""The counters of a :class:`rudp.testing.proxy.LossyProxy`, and how they are shown.

:class:`ProxyStats` (one :class:`DirectionStats` per direction) is the snapshot
``LossyProxy.stats`` returns and ``rudp proxy`` prints when it stops;
:func:`link_counters` and :func:`add_counters` fold each client's link counters
into it.  Plain data with no socket or thread, kept apart so that
``rudp.testing.proxy`` holds only the relay: its event loop and client mappings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rudp.testing.link import Link

__all__ = ["DirectionStats", "ProxyStats", "add_counters", "link_counters"]


@dataclass
class DirectionStats:
    """Counters of one direction (client to server, or server to client)."""

    received: int = 0
    """Datagrams the proxy read from its sockets."""
    received_bytes: int = 0
    """Bytes of those datagrams."""
    forwarded: int = 0
    """Datagrams the link delivered and the proxy wrote out."""
    forwarded_bytes: int = 0
    """Bytes of those datagrams."""
    send_errors: int = 0
    """Datagrams the kernel refused (full buffer, ICMP unreachable); lost for real."""
    link: dict[str, float] = field(default_factory=dict)
    """The link model's own counters (drops, duplicates, corruptions...), summed
    over every client, including expired ones."""


@dataclass
class ProxyStats:
    """A snapshot of the proxy's counters."""

    clients_seen: int = 0
    """Client addresses that got a mapping."""
    clients_active: int = 0
    """Mappings alive now."""
    clients_expired: int = 0
    """Mappings removed after ``idle_timeout`` of silence."""
    clients_rejected: int = 0
    """Datagrams from new clients dropped because the table was full."""
    rebinds: int = 0
    """Upstream sockets replaced by one on a new port (simulated NAT rebindings)."""
    to_server: DirectionStats = field(default_factory=DirectionStats)
    """Client to upstream."""
    to_client: DirectionStats = field(default_factory=DirectionStats)
    """Upstream to client."""

    def format(self) -> str:
        """Render the counters as a few human-readable lines."""
        lines = [
            f"clients: {self.clients_seen} seen, {self.clients_active} active, "
            f"{self.clients_expired} expired, {self.clients_rejected} datagrams rejected, "
            f"{self.rebinds} rebinds"
        ]
        for name, direction in (
            ("client->server", self.to_server),
            ("server->client", self.to_client),
        ):
            lines.append(
                f"{name}: {direction.received} in ({direction.received_bytes} B), "
                f"{direction.forwarded} out ({direction.forwarded_bytes} B), "
                f"{direction.send_errors} send errors"
            )
            if direction.link:
                detail = ", ".join(
                    f"{key} {_fmt_number(value)}" for key, value in direction.link.items()
                )
                lines.append(f"  link: {detail}")
        return "\n".join(lines)


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def link_counters(link: Link) -> dict[str, float]:
    """The numeric counters of ``link.stats`` (a :class:`~rudp.testing.link.LinkStats`)."""
    return {
        key: value
        for key, value in dataclasses.asdict(link.stats).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def add_counters(total: dict[str, float], extra: dict[str, float]) -> None:
    for key, value in extra.items():
        total[key] = total.get(key, 0) + value
