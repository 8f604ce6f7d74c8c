"""The congestion-control interface and its registry of algorithms by name.

The sender counts its window in packets (every DATA packet but the last of a
message is full size, so packets are a fair unit) and tells the controller
about four things, the hooks RFC 9002 appendix B uses: a packet sent, packets
acknowledged, packets declared lost, and a retransmission timeout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from rudp.config import Config


class CongestionController(ABC):
    """A congestion-control algorithm for one connection.

    Subclasses set ``name`` and are added to ``REGISTRY`` with ``register``;
    ``Config.congestion_control`` picks one by that name.
    """

    name: ClassVar[str]
    """The name ``Config.congestion_control`` uses."""

    def __init__(self, config: Config) -> None:
        """Subclasses read what they need from ``config``."""
        self.config = config

    @property
    @abstractmethod
    def cwnd(self) -> int:
        """Congestion window: packets the sender may have in flight."""

    @property
    @abstractmethod
    def ssthresh(self) -> float:
        """Slow-start threshold in packets (``inf`` before the first loss)."""

    @abstractmethod
    def on_packet_sent(self, now: float) -> None:
        """A packet that counts towards the flight was sent."""

    @abstractmethod
    def on_packets_acked(self, now: float, count: int, newest_sent_time: float) -> None:
        """``count`` in-flight packets were acknowledged; the newest of them was sent then."""

    @abstractmethod
    def on_packets_lost(self, now: float, newest_lost_sent_time: float) -> None:
        """Packets were declared lost by the packet threshold (RFC 9002 section 6.1)."""

    @abstractmethod
    def on_rto(self, now: float) -> None:
        """The retransmission timer expired (RFC 5681 section 3.1: back to one packet)."""


REGISTRY: dict[str, type[CongestionController]] = {}
"""Congestion controllers by name."""


def register(cls: type[CongestionController]) -> type[CongestionController]:
    """Class decorator: add a controller to ``REGISTRY`` under its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


def create(config: Config) -> CongestionController:
    """Instantiate the controller ``config.congestion_control`` names.

    Raises ``ValueError`` for an unknown name.
    """
    try:
        cls = REGISTRY[config.congestion_control]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(
            f"unknown congestion control {config.congestion_control!r} (known: {known})"
        ) from None
    return cls(config)
