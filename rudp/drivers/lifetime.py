"""What becomes of a blocking face that is never closed: at exit, or dropped.

``rudp.socket``, ``rudp.Connection`` and ``rudp.Listener`` register here
when created.  One still open at interpreter exit is closed the way
``close()`` closes it (waiting until its messages are acknowledged or given
up); one dropped unclosed is finalised (``weakref.finalize``): it warns with
``ResourceWarning``, like an unclosed ``socket.socket``, and hands its
associations to its engine's I/O thread (``Engine.retire``), which closes
them in the background.  Either way what is never acknowledged is named in
one line on stderr (``undelivered_warning``): a program's data is never lost
without a word.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rudp.errors import ConnectionFailed

if TYPE_CHECKING:
    from rudp.core.endpoint import Association
    from rudp.drivers.blocking import Engine

__all__ = [
    "finalize_dropped",
    "register_for_exit",
    "running_engines",
    "undelivered_warning",
    "warn",
]


def undelivered_warning(label: str, when: str, errors: Sequence[ConnectionFailed]) -> str:
    """The one-line warning for messages a program will never see acknowledged.

    ``rudp: warning: rudp.Connection on ('127.0.0.1', 40123) closed at exit with
    2 message(s) never acknowledged: 2 to ('127.0.0.1', 4242) (peer unreachable:
    nothing heard for 0.5 s)``
    """
    total = sum(len(error.undelivered) for error in errors)
    detail = ", ".join(
        f"{len(error.undelivered)} to {error.address!r} ({error.reason})" for error in errors
    )
    return f"rudp: warning: {label} {when} with {total} message(s) never acknowledged: {detail}"


def warn(line: str) -> None:
    """Print one warning line to stderr (quietly skipped once stderr is gone)."""
    with contextlib.suppress(OSError, ValueError):  # stderr closed at shutdown
        print(line, file=sys.stderr, flush=True)


class _Closeable(Protocol):
    @property
    def label(self) -> str: ...

    def _close_all(self) -> list[ConnectionFailed]: ...


_open: weakref.WeakSet[_Closeable] = weakref.WeakSet()
running_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
"""Engines whose I/O thread runs (``Engine.start`` adds them): at exit, background closes."""


@atexit.register
def _close_at_exit() -> None:
    """Give what the program never closed its graceful close; warn about what is lost.

    A UDP program may exit right after its last ``sendto``; the kernel would
    still transmit that datagram, so a drop-in must still deliver the message:
    each close waits as ``close()`` does (until acknowledged or given up, or
    ``linger``).  Whatever is still unacknowledged then is named on stderr, per
    connection or socket, instead of vanishing with the process.  Engines
    finishing a dropped object's close in the background are waited for too
    (not those only sitting out a TIME_WAIT: nothing of the program's is at
    stake there).
    """
    for item in list(_open):
        label = item.label  # before the close: a closed socket has no address
        try:
            errors = item._close_all()
        except Exception as exc:  # pragma: no cover - a driver bug: still close the rest
            warn(f"rudp: warning: closing {label} at exit failed: {exc!r}")
            continue
        if errors:
            warn(undelivered_warning(label, "closed at exit", errors))
    for engine in list(running_engines):
        # The core's budgets end every background close (silence: peer_timeout;
        # the FIN: close_linger); the bound is only a safety net against a bug.
        config = engine.config
        engine.wait_retired(2 * config.peer_timeout + config.close_linger)


def _dropped(
    engine: Engine,
    assocs: list[Association] | None,
    label: str | Callable[[], str],
    pending: Sequence[ConnectionFailed],
    stop_accepting: bool,
) -> None:
    engine.retire(assocs, label, pending=pending, stop_accepting=stop_accepting)
    name = label if isinstance(label, str) else "rudp.socket"
    warnings.warn(f"unclosed {name}", ResourceWarning, stacklevel=1)


def finalize_dropped(
    item: object,
    engine: Engine,
    assocs: list[Association] | None,
    label: str | Callable[[], str],
    *,
    pending: Sequence[ConnectionFailed] = (),
    stop_accepting: bool = False,
) -> weakref.finalize[Any, Any]:
    """Have ``engine.retire`` finish ``item``'s associations if it is dropped unclosed.

    The finaliser refers only to the engine and the arguments, never to
    ``item`` (that would keep it alive).  Like an unclosed socket it warns
    with ``ResourceWarning``.  It does not run at exit: ``_close_at_exit``
    closes a live ``item`` gracefully (and waits) instead.  ``close()``
    detaches it; ``detach()`` returning None means it already ran or was
    detached, so a user is released exactly once.
    """
    finalizer = weakref.finalize(item, _dropped, engine, assocs, label, pending, stop_accepting)
    finalizer.atexit = False
    return finalizer


def register_for_exit(item: _Closeable, register: bool = True) -> None:
    """Close ``item`` at interpreter exit unless it is closed first (``register=False``)."""
    if register:
        _open.add(item)
    else:
        _open.discard(item)
