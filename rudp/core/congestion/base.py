"""The congestion-control interface and its registry of algorithms by name.

The sender counts its window in packets (every DATA packet but the last of a
message is full size, so packets are a fair unit) and tells the controller
about the events RFC 9002 appendix B uses: a packet sent, packets acknowledged,
packets declared lost, persistent congestion (section 7.6.2) and, when the
recovery layer learns that a loss was not one, a spurious loss (the Eifel
response, RFC 4015).  A probe timeout is not an event here: RFC 9002 section
6.2 lets a PTO send probes but never change the window; only persistent
congestion does.

Controllers never read a clock: every hook gets the time as ``now``.
Rate-based controllers (BBR) also want a delivery-rate sample per ack, the
``RateSample`` that ``rudp.core.congestion.delivery_rate`` produces; a sender
that has none passes ``None``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from rudp.config import Config

MIN_WINDOW = 2
"""RFC 9002 section 7.2 kMinimumWindow: the window never drops below two packets."""


@dataclass(frozen=True, slots=True)
class RateSample:
    """One delivery-rate sample, taken per ack.

    draft-cheng-iccrg-delivery-rate-estimation section 3.3 (the ``rs`` record
    "Upon receiving an ACK" fills in), counted in packets.
    """

    delivery_rate: float
    """``delivered / interval``: packets per second."""
    interval: float
    """Seconds: the longer of the send and the ack elapsed times, so ack
    compression cannot inflate the rate."""
    delivered: int
    """Packets delivered during ``interval``."""
    prior_delivered: int
    """``C.delivered`` when the sampled packet was sent; BBR counts round trips with it."""
    is_app_limited: bool
    """The sampled packet was sent while the application, not the window,
    limited the sending: the rate may understate the path."""
    rtt: float
    """RTT of the most recently sent packet newly acknowledged by this ack."""


class CongestionController(ABC):
    """A congestion-control algorithm for one connection.

    Subclasses set ``name`` and are added to ``REGISTRY`` with ``register``;
    ``Config.congestion_control`` picks one by that name.  Windows are in
    packets, rates in packets per second, times in seconds.
    """

    name: ClassVar[str]
    """The name ``Config.congestion_control`` uses."""

    def __init__(self, config: Config) -> None:
        """Subclasses read what they need from ``config``."""
        self.config = config

    @property
    @abstractmethod
    def cwnd(self) -> int:
        """Congestion window: packets the sender may have in flight (at least 1)."""

    @property
    @abstractmethod
    def ssthresh(self) -> float:
        """Slow-start threshold in packets (``inf`` before the first reduction)."""

    @property
    @abstractmethod
    def pacing_rate(self) -> float | None:
        """Packets per second the sender may release; ``None`` means no pacing."""

    def on_packet_sent(self, now: float, in_flight: int) -> None:  # noqa: B027 (an optional hook)
        """A packet that counts towards the flight was sent; ``in_flight`` includes it.

        Optional: the default does nothing, and a controller that does not override
        it is not called at all (``Recovery`` skips the call, once per packet).
        """

    @abstractmethod
    def on_ack(
        self,
        now: float,
        acked: int,
        newest_acked_sent_time: float,
        in_flight: int,
        srtt: float | None,
        min_rtt: float | None,
        sample: RateSample | None,
    ) -> None:
        """``acked`` in-flight packets were newly acknowledged.

        ``newest_acked_sent_time`` is the send time of the most recently sent of
        them, ``in_flight`` the flight after removing them, ``srtt`` and
        ``min_rtt`` the RTT estimator's values (``None`` when unknown) and
        ``sample`` the delivery-rate sample of this ack, if the sender keeps one.
        """

    @abstractmethod
    def on_packets_lost(
        self, now: float, lost: int, newest_lost_sent_time: float, in_flight: int
    ) -> None:
        """``lost`` packets were declared lost (RFC 9002 section 6.1).

        ``newest_lost_sent_time`` is the send time of the most recently sent of
        them, ``in_flight`` the flight after removing them.
        """

    @abstractmethod
    def on_persistent_congestion(self, now: float) -> None:
        """RFC 9002 section 7.6.2: everything sent over a long period was lost; minimum window."""

    @abstractmethod
    def on_spurious_loss(self, now: float) -> None:
        """The losses behind the last reduction were not losses: undo it (RFC 4015)."""


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
