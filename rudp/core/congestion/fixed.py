"""No congestion control: the window is always ``Config.max_send_window``.

For links the application owns end to end (tests, LANs, benchmarks of the
protocol machinery itself).  Flow control (the peer's window) still applies.
"""

from __future__ import annotations

from rudp.config import Config
from rudp.core.congestion.base import CongestionController, register


@register
class Fixed(CongestionController):
    """A constant window of ``max_send_window`` packets; every hook is a no-op."""

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

    def on_packet_sent(self, now: float) -> None:
        """Ignored."""

    def on_packets_acked(self, now: float, count: int, newest_sent_time: float) -> None:
        """Ignored."""

    def on_packets_lost(self, now: float, newest_lost_sent_time: float) -> None:
        """Ignored."""

    def on_rto(self, now: float) -> None:
        """Ignored."""
