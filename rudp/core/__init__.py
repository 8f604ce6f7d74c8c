"""The sans-IO protocol core: no sockets, no clocks, no global randomness.

Everything under ``rudp.core`` is pure protocol logic.  Time comes in as
``now``, timers go out as deadlines, datagrams are ``bytes`` and the random
source is injected.  ``tests/test_layering.py`` enforces that nothing here
imports a driver, a public face, an application or the test tooling.
"""
