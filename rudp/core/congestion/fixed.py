"""No congestion control: the window is always ``Config.max_send_window``.

For links the application owns end to end (tests, LANs, benchmarks of the
protocol machinery itself).  Flow control (the peer's window) still applies.
"""

from __future__ import annotations

from rudp.config import Config
from rudp.core.congestion.base import CongestionController, RateSample, register


@register
class Fixed(CongestionController):
    """A constant window of ``max_send_window`` packets, no pacing; every hook is a no-op."""

    name = "fixed"

    __slots__ = ("_cwnd",)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._cwnd = config.max_send_window

    @property
    def cwnd(self) -> int:
        """Always ``max_send_window``."""
        return self._cwnd

    @property
    def ssthresh(self) -> float:
        """Always infinite."""
        return float("inf")

    @property
    def pacing_rate(self) -> float | None:
        """Always ``None``: send as fast as the windows allow."""
        return None

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
        """Ignored."""

    def on_packets_lost(
        self, now: float, lost: int, newest_lost_sent_time: float, in_flight: int
    ) -> None:
        """Ignored."""

    def on_persistent_congestion(self, now: float) -> None:
        """Ignored."""

    def on_spurious_loss(self, now: float) -> None:
        """Ignored."""
