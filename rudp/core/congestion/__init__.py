"""Pluggable congestion control: an ABC, a registry by name, and the algorithms.

"newreno" (RFC 5681/6582) and "fixed" (no control).
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
from rudp.core.congestion.fixed import Fixed
from rudp.core.congestion.newreno import NewReno

__all__ = [
    "MIN_WINDOW",
    "REGISTRY",
    "CongestionController",
    "Fixed",
    "NewReno",
    "RateSample",
    "create",
    "register",
]
