"""Pluggable congestion control: an ABC, a registry by name, and the algorithms.

"newreno" (RFC 5681/6582), "cubic" (RFC 9438), "bbr" (BBRv1's model with a
loss rule that tells random loss from congestion) and "fixed" (no control), and
the delivery-rate estimator rate-based controllers sample the path with.
"""

from __future__ import annotations

from rudp.core.congestion.base import (
    MIN_WINDOW,
    REGISTRY,
    CongestionController,
    RateSample,
    create,
    register,
)
from rudp.core.congestion.bbr import Bbr
from rudp.core.congestion.cubic import Cubic
from rudp.core.congestion.delivery_rate import DeliveryRateEstimator, RateStamp
from rudp.core.congestion.fixed import Fixed
from rudp.core.congestion.newreno import NewReno

__all__ = [
    "MIN_WINDOW",
    "REGISTRY",
    "Bbr",
    "CongestionController",
    "Cubic",
    "DeliveryRateEstimator",
    "Fixed",
    "NewReno",
    "RateSample",
    "RateStamp",
    "create",
    "register",
]
