"""CUBIC congestion control (RFC 9438), with the window in packets.

CUBIC keeps NewReno's skeleton (``rudp.core.congestion.newreno``): the same slow
start, the same recovery period (one reduction per window of data, RFC 9438
section 4.6 defers to RFC 6582/9002 for it), the same pacing (RFC 9002 section
7.7), persistent congestion and undo.  What changes is the multiplicative
decrease and the growth in congestion avoidance:

- Window increase (section 4.2): ``W_cubic(t) = C * (t - K)**3 + W_max``
  (equation 1) with ``K = cbrt((W_max - cwnd_epoch) / C)`` (equation 2), ``t``
  the time since the congestion-avoidance epoch began.  Each ack moves the
  window ``(target - cwnd) / cwnd`` per packet towards ``target =
  W_cubic(t + RTT)``, clamped to ``[cwnd, 1.5 * cwnd]``.
- Reno-friendly region (section 4.3): ``W_est`` grows by ``alpha_cubic *
  acked / cwnd`` (equation 4), ``alpha_cubic = 3 * (1 - beta) / (1 + beta)``
  until ``W_est`` reaches the window before the last reduction, 1 after;
  when ``W_cubic(t) < W_est`` the window is ``W_est``, so CUBIC is never
  slower than Reno on short, thin paths.
- Multiplicative decrease (section 4.6): ``ssthresh = cwnd * beta`` with
  ``beta = 0.7`` (the RFC allows cwnd for flight_size; RFC 9002 section 7.3.2
  does the same), window to ``max(ssthresh, 2)``.
- Fast convergence (section 4.7): a flow whose ``W_max`` shrinks releases
  bandwidth: ``W_max = cwnd * (1 + beta) / 2``.
- Timeout / persistent congestion (section 4.8): ``ssthresh`` by ``beta``,
  window to ``MIN_WINDOW``; the first epoch after it uses ``K = 0`` and
  ``W_max`` = the window when it begins.
- Spurious congestion events (section 4.9): every variable the event changed
  comes back (cwnd, ssthresh, W_max, K, the epoch, W_est, cwnd_prior).
"""

from __future__ import annotations

from rudp.config import Config
from rudp.core.congestion.base import MIN_WINDOW, register
from rudp.core.congestion.newreno import NewReno

C = 0.4
"""RFC 9438 section 4.1.1 C: the cubic's aggressiveness, packets / s**3."""

BETA = 0.7
"""RFC 9438 section 4.1.1 beta_cubic: the multiplicative decrease factor."""

ALPHA = 3 * (1 - BETA) / (1 + BETA)
"""RFC 9438 section 4.3 alpha_cubic (equation 3): Reno's average rate for beta = 0.7."""


def w_cubic(t: float, k: float, w_max: float) -> float:
    """RFC 9438 equation (1): the window ``t`` seconds into an epoch."""
    return C * (t - k) ** 3 + w_max


def cubic_k(w_max: float, cwnd_epoch: float) -> float:
    """RFC 9438 equation (2): seconds the cubic takes from ``cwnd_epoch`` back to ``w_max``."""
    if cwnd_epoch >= w_max:
        return 0.0
    return float(((w_max - cwnd_epoch) / C) ** (1 / 3))


_Epoch = tuple[float | None, float, float, float, float, bool]
"""What ``_save_for_undo`` keeps beyond NewReno's: epoch start, W_max, K, W_est, cwnd_prior,
whether the next epoch follows a timeout."""


@register
class Cubic(NewReno):
    """RFC 9438 CUBIC on NewReno's slow start and recovery period."""

    name = "cubic"

    __slots__ = (
        "_after_timeout",
        "_cubic_undo",
        "_cwnd_prior",
        "_epoch_start",
        "_k",
        "_w_est",
        "_w_max",
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._epoch_start: float | None = None
        """Start of the current congestion-avoidance epoch (``t_epoch``); None between epochs."""
        self._w_max = 0.0
        """Window just before the last reduction (after fast convergence)."""
        self._k = 0.0
        self._w_est = 0.0
        self._cwnd_prior = 0.0
        """Window before the last reduction: where ``alpha_cubic`` turns to 1."""
        self._after_timeout = True
        """No congestion event seen yet, or persistent congestion: next epoch has K = 0."""
        self._cubic_undo: _Epoch | None = None

    @property
    def w_max(self) -> float:
        """``W_max``: the window at the last congestion event, after fast convergence."""
        return self._w_max

    @property
    def k(self) -> float:
        """``K`` of the current epoch, seconds."""
        return self._k

    def _start_epoch(self, now: float) -> None:
        """A congestion-avoidance stage begins (RFC 9438 sections 4.2, 4.3, 4.8)."""
        self._epoch_start = now
        cwnd_epoch = self._window
        if self._after_timeout or cwnd_epoch >= self._w_max:
            # Section 4.8 (and leaving slow start without a loss): the plateau is here.
            self._w_max = cwnd_epoch
            self._k = 0.0
            self._after_timeout = False
        else:
            self._k = cubic_k(self._w_max, cwnd_epoch)
        self._w_est = cwnd_epoch

    def _congestion_avoidance(self, now: float, acked: int) -> None:
        """Section 4.2's cubic growth, or section 4.3's Reno estimate when that is larger."""
        if self._epoch_start is None:
            self._start_epoch(now)
            assert self._epoch_start is not None
        window = self._window
        t = now - self._epoch_start
        rtt = self._srtt or 0.0
        # Section 4.3, equation (4): what Reno would have by now.
        alpha = 1.0 if self._w_est >= self._cwnd_prior else ALPHA
        self._w_est += alpha * acked / window
        if w_cubic(t, self._k, self._w_max) < self._w_est:
            window = self._w_est
        else:
            # Sections 4.4 and 4.5: aim one RTT ahead, never back, at most +50% per RTT.
            target = w_cubic(t + rtt, self._k, self._w_max)
            target = min(max(target, window), 1.5 * window)
            window += (target - window) / window * acked
        self._window = min(window, float(self._max))

    def _reduce(self, now: float) -> None:
        """Section 4.6's decrease with section 4.7's fast convergence; the epoch ends."""
        window = self._window
        self._cwnd_prior = window
        if window < self._w_max:
            self._w_max = window * (1 + BETA) / 2
        else:
            self._w_max = window
        self._ssthresh = max(window * BETA, float(MIN_WINDOW))
        self._window = max(self._ssthresh, float(MIN_WINDOW))
        self._epoch_start = None
        self._after_timeout = False

    def _timeout_ssthresh(self) -> None:
        """Section 4.8: a timeout sets ``ssthresh`` with ``beta_cubic``, as section 4.6 does."""
        window = self._window
        self._cwnd_prior = window
        self._ssthresh = max(window * BETA, float(MIN_WINDOW))

    def on_persistent_congestion(self, now: float) -> None:
        """Section 4.8: NewReno's collapse; the next epoch starts with K = 0 at its own window."""
        super().on_persistent_congestion(now)
        self._epoch_start = None
        self._after_timeout = True

    def _save_for_undo(self) -> None:
        """Section 4.9: keep every variable a congestion event changes."""
        super()._save_for_undo()
        self._cubic_undo = (
            self._epoch_start,
            self._w_max,
            self._k,
            self._w_est,
            self._cwnd_prior,
            self._after_timeout,
        )

    def on_spurious_loss(self, now: float) -> None:
        """Section 4.9: restore the state before the spurious event, epoch included."""
        saved = self._cubic_undo
        if self._undo is None or saved is None:
            return
        super().on_spurious_loss(now)
        self._cubic_undo = None
        epoch, w_max, k, w_est, cwnd_prior, after_timeout = saved
        self._epoch_start = epoch
        self._w_max = w_max
        self._k = k
        self._w_est = w_est
        self._cwnd_prior = cwnd_prior
        self._after_timeout = after_timeout
