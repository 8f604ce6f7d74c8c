"""What the ``rudp`` command tells its user and the scripts that run it.

Every message is one ``rudp:``-prefixed line on stderr (:func:`say`); a transfer
on a terminal gets a tqdm progress bar (:func:`progress_factory`); sizes read in
MB and a failed connection is named by its kind (:func:`failure_message`); the
exit status is one of the ``EXIT_*`` codes.  Kept in one place, apart from the
commands (``rudp.apps.cli_commands``), so that every command words and reports
things the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from rudp.apps import filetransfer
from rudp.errors import ConnectionFailed
from rudp.events import FailureKind

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "failure_message",
    "format_mb",
    "progress_factory",
    "report_unsent",
    "say",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def say(message: str) -> None:
    """Tell the user ``message``: one line on stderr, prefixed with ``rudp:``."""
    print(f"rudp: {message}", file=sys.stderr, flush=True)


def progress_factory(quiet: bool) -> filetransfer.ProgressFactory | None:
    """A maker of one tqdm bar per file, or ``None`` when quiet or stderr is no terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        columns = 0
    # A terminal that reports no size (some ptys) would make tqdm draw nothing.
    sizing: dict[str, Any] = {"dynamic_ncols": True} if columns else {"ncols": 80, "nrows": 24}

    def make(name: str, total: int) -> filetransfer.Progress:
        bar: filetransfer.Progress = tqdm(
            total=total,
            desc=name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            leave=True,
            **sizing,
        )
        return bar

    return make


def format_mb(n: float) -> str:
    """``n`` bytes (or bytes per second) in decimal megabytes, for the report lines."""
    return f"{n / 1e6:.2f} MB"


def report_unsent(paths: list[Path], answered: list[Path]) -> None:
    """Name the files after the ``answered`` ones, which a failed connection never sent."""
    unsent = paths[len(answered) :]
    if unsent:
        say(f"not sent ({len(unsent)} file(s)): " + ", ".join(map(str, unsent)))


def failure_message(exc: ConnectionFailed) -> str:
    """One line naming why the connection failed (by its kind) and what it left undelivered."""
    reason = exc.reason.rstrip(".")
    if exc.kind is not FailureKind.UNREACHABLE:
        # The core's reason says "peer unreachable: ..." only for that kind.
        reason = f"connection failed ({reason})"
    return f"{reason}: {len(exc.undelivered)} messages undelivered"
