"""I/O drivers: each owns sockets and a clock and runs the core through ``rudp.core.endpoint``.

- ``rudp.drivers.blocking``: a background I/O thread per UDP socket, under ``rudp.socket``
  (``rudp.sock``) and ``rudp.connect`` / ``rudp.listen`` (``rudp.api``);
- ``rudp.drivers.lifetime``: what becomes of a blocking face never closed (at exit, or
  dropped and garbage-collected);
- ``rudp.drivers.asyncio``: an asyncio datagram protocol, under ``rudp.aio``, and its
  per-connection half ``rudp.drivers.aio_connection``;
- ``rudp.drivers._common``: what both share -- the options every API accepts
  (:class:`DriverOptions`, :func:`split_options`), the event fold
  (``ConnectionLedger``) and the one table from ``FailureKind`` to exception.
"""

from rudp.drivers._common import FAILURE_EXCEPTIONS, DriverOptions, split_options

__all__ = ["FAILURE_EXCEPTIONS", "DriverOptions", "split_options"]
