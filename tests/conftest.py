"""Shared pytest configuration: hypothesis profiles.

``HYPOTHESIS_PROFILE`` selects one:

- ``default``: derandomized (the same examples on every run, so CI is
  reproducible), a bounded number of examples, no per-example deadline (the
  virtual-time simulator makes example cost vary with the drawn network).
- ``fuzz``: random and many examples, for ``make fuzz`` and long local runs.
  Hypothesis prints the failing example, including the simulator seed, and a
  ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    max_examples=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    max_examples=5000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
