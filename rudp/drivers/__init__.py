"""I/O drivers: each owns sockets and a clock and runs the core through ``rudp.core.endpoint``.

- ``rudp.drivers.blocking``: a background I/O thread per UDP socket, under ``rudp.socket``
  (``rudp.sock``) and ``rudp.connect`` / ``rudp.listen`` (``rudp.api``).
"""
