"""Shared pytest configuration: hypothesis profiles, and a private static-key file.

Every test (and every subprocess it starts, which inherits the environment) finds
``RUDP_STATIC_KEY_FILE`` pointing into a temporary directory, so no test ever
creates or reads the real per-user key under ``~/.local/state/rudp``.

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
from collections.abc import Iterator

import pytest
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


@pytest.fixture(autouse=True, scope="session")
def _private_static_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``RUDP_STATIC_KEY_FILE`` in a temporary directory for the whole session.

    Session-scoped so that hypothesis tests do not see a function-scoped fixture; tests
    of the key file itself pass their own paths.
    """
    path = tmp_path_factory.mktemp("rudp-state") / "static-key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUDP_STATIC_KEY_FILE", str(path))
        yield
