"""Pluggable congestion control: an ABC, a registry by name, NewReno and a fixed window."""

from __future__ import annotations

from rudp.core.congestion.base import REGISTRY, CongestionController, create, register
from rudp.core.congestion.fixed import Fixed
from rudp.core.congestion.newreno import NewReno

__all__ = ["REGISTRY", "CongestionController", "Fixed", "NewReno", "create", "register"]
