"""The ``rudp`` command line: send and receive files, and run a lossy proxy.

::

    rudp recv [--listen HOST:PORT] [--output DIR] [--once] [--timeout S] [--overwrite]
              [--max-senders N] [--idle-timeout S] [--psk-file KEYFILE]
    rudp send PATH [PATH ...] HOST:PORT [--chunk-size N] [--peer-timeout S] [--psk-file KEYFILE]
    rudp genpsk KEYFILE
    rudp proxy --listen HOST:PORT --upstream HOST:PORT [--loss P] [--dup P]
               [--reorder P] [--corrupt P] [--delay 20ms] [--jitter 5ms]
               [--rate 50mbit] [--seed N] [--rebind-after N]

``send`` exits 0 only after the receiver confirmed the SHA-256 of every file.
``recv`` writes each file under a temporary name and renames it only once
verified, so a file under its final name is always complete; it never replaces
an existing file unless given ``--overwrite`` (``name (1).ext`` instead), serves
up to ``--max-senders`` senders at once and ends a connection idle for
``--idle-timeout``.  It listens on 127.0.0.1 unless told otherwise; ``--listen
0.0.0.0:PORT`` must be asked for, and without ``--psk-file`` it warns that anyone who
can reach the port can store files.  ``--psk-file`` (or ``$RUDP_PSK_FILE``) names a key
made by ``rudp genpsk``: with it only holders of the key connect, and every datagram
is encrypted and authenticated (``rudp.Config.psk``).  Exit codes: 0 success, 1
transfer failure (any file refused), 2 usage error, 130 interrupted.  Messages
go to stderr, prefixed with ``rudp:``.

This module is the entry point, :func:`main`.  The parser is in ``rudp.apps.cli_parser``,
the commands in ``rudp.apps.cli_commands``, and the messages, progress bars and exit
codes in ``rudp.apps.cli_output``; their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Sequence
from types import FrameType

from rudp.apps.cli_commands import UsageError as UsageError
from rudp.apps.cli_commands import genpsk_command, proxy_command, recv_command, send_command
from rudp.apps.cli_output import EXIT_FAILED as EXIT_FAILED
from rudp.apps.cli_output import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from rudp.apps.cli_output import EXIT_OK as EXIT_OK
from rudp.apps.cli_output import EXIT_USAGE as EXIT_USAGE
from rudp.apps.cli_output import say
from rudp.apps.cli_parser import DEFAULT_LISTEN as DEFAULT_LISTEN
from rudp.apps.cli_parser import DEFAULT_PORT as DEFAULT_PORT
from rudp.apps.cli_parser import build_parser as build_parser

__all__ = ["main"]


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so cleanup (partial files, stats) runs either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a test thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rudp`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    commands = {
        "send": send_command,
        "recv": recv_command,
        "proxy": proxy_command,
        "genpsk": genpsk_command,
    }
    command = commands[args.command]
    if args.command in ("proxy", "genpsk"):
        return command(args)  # proxy handles its own signals: a stop is a clean exit
    try:
        with _sigterm_as_interrupt():
            return command(args)
    except KeyboardInterrupt:
        # Partial files were removed on the way up (filetransfer's cleanup).
        say("interrupted")
        return EXIT_OK if args.command == "recv" else EXIT_INTERRUPTED
