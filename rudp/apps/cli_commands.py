"""What the ``rudp`` commands do: ``send``, ``recv``, ``genpsk`` and ``proxy``.

Each ``*_command`` takes the parsed arguments (``rudp.apps.cli_parser``) and
returns an exit status (``rudp.apps.cli_output``): it opens the connection or the
listener, runs the file transfer (``rudp.apps.filetransfer``) or the lossy proxy,
and reports what happened.  ``recv`` serves in a worker thread so that an
interrupt never lands inside a rudp lock (see ``_serve_until_interrupted``).
:func:`rudp.apps.cli.main` picks the command and handles interrupts around it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rudp import psk as psk_files
from rudp.apps import filetransfer
from rudp.apps.cli_output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    failure_message,
    format_mb,
    progress_factory,
    report_unsent,
    say,
)
from rudp.errors import ConnectionFailed, RudpError
from rudp.errors import Timeout as RudpTimeout
from rudp.testing.proxy import LossyProxy
from rudp.testing.proxy_parsing import format_address

__all__ = [
    "UsageError",
    "genpsk_command",
    "proxy_command",
    "recv_command",
    "send_command",
]


class UsageError(Exception):
    """A command-line value that argparse could not check (exit 2 with this message)."""


def _connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """rudp options from the command line."""
    options = dict(args.option)
    if args.peer_timeout is not None:
        options["peer_timeout"] = args.peer_timeout
    key_file = args.psk_file or os.environ.get(psk_files.PSK_FILE_ENV) or None
    if key_file is not None:
        try:
            options["psk"] = psk_files.load_psk(key_file)
        except psk_files.PskFileError as exc:
            raise UsageError(str(exc)) from exc
    return options


def send_command(args: argparse.Namespace) -> int:
    """``rudp send``: send every file; success only if the receiver verified each one."""
    import rudp

    missing = [p for p in args.paths if not p.is_file()]
    if missing:
        say(f"not a readable file: {missing[0]}")
        return EXIT_FAILED
    try:
        options = _connection_options(args)
    except UsageError as exc:
        say(str(exc))
        return EXIT_USAGE
    try:
        conn = rudp.connect(args.address, timeout=args.connect_timeout, **options)
    except RudpTimeout:
        say(f"could not connect to {format_address(args.address)}: no answer")
        return EXIT_FAILED
    except ConnectionFailed as exc:
        say(f"could not connect to {format_address(args.address)}: {exc.reason}")
        return EXIT_FAILED
    except (RudpError, OSError, TypeError, ValueError) as exc:
        say(f"could not connect to {format_address(args.address)}: {exc}")
        return EXIT_FAILED

    outcomes: list[Path] = []  # files answered so far, in order

    def report(result: filetransfer.FileTransferResult) -> None:
        outcomes.append(result.path)
        stored = ""
        if result.requested_name is not None:  # the receiver had that name already
            stored = f", stored as {filetransfer.show_name(result.name)}"
        say(
            f"sent {result.path}: {format_mb(result.size)} in {result.seconds:.2f} s "
            f"({format_mb(result.goodput)}/s), sha256 verified by the receiver{stored}"
        )

    def report_error(path: Path, exc: filetransfer.TransferError) -> None:
        outcomes.append(path)
        say(f"failed: {path}: {exc}")

    try:
        with conn:
            done, failed = filetransfer.send_files(
                conn,
                args.paths,
                chunk_size=args.chunk_size,
                progress=progress_factory(args.quiet),
                on_result=report,
                on_error=report_error,
            )
            stats = conn.stats
    except ConnectionFailed as exc:
        say(failure_message(exc))
        report_unsent(args.paths, outcomes)
        return EXIT_FAILED
    except (RudpError, OSError) as exc:
        say(f"transfer failed: {exc}")
        report_unsent(args.paths, outcomes)
        return EXIT_FAILED
    if not args.quiet:
        say(
            f"connection: {stats.data_packets_sent} data packets, "
            f"{stats.retransmissions} retransmissions, srtt "
            + (f"{stats.srtt * 1000:.1f} ms" if stats.srtt is not None else "n/a")
        )
    if failed:
        say(f"{len(failed)} of {len(failed) + len(done)} file(s) failed")
        return EXIT_FAILED
    return EXIT_OK


def recv_command(args: argparse.Namespace) -> int:
    """``rudp recv``: listen and store verified files until the timeout, ``--once`` or a signal."""
    import rudp

    output: Path = args.output
    if not output.is_dir():
        say(f"output directory does not exist: {output}")
        return EXIT_FAILED
    # Partial files a receiver killed mid-transfer (kill -9, power loss) left behind;
    # removed before listening, reported after the address line that scripts read first.
    stale = filetransfer.remove_stale_partials(output)
    try:
        options = _connection_options(args)
    except UsageError as exc:
        say(str(exc))
        return EXIT_USAGE
    args.keyed = "psk" in options  # for _serve's notice
    try:
        listener = rudp.listen(args.listen, **options)
    except (RudpError, OSError, TypeError, ValueError) as exc:
        say(f"cannot listen on {format_address(args.listen)}: {exc}")
        return EXIT_FAILED

    def report(result: filetransfer.FileTransferResult) -> None:
        asked = ""
        if result.requested_name is not None:
            asked = f" (sent as {filetransfer.show_name(result.requested_name)})"
        say(
            f"received {result.name}{asked}: {format_mb(result.size)} in {result.seconds:.2f} s "
            f"({format_mb(result.goodput)}/s), sha256 {result.sha256[:16]}... verified"
        )

    def report_error(what: str, exc: Exception) -> None:
        if isinstance(exc, ConnectionFailed):
            say(f"{what} failed: {failure_message(exc)}")
        else:
            say(f"{what} failed: {exc}")

    with listener:
        return _serve_until_interrupted(listener, args, output, stale, report, report_error)


def _serve_until_interrupted(
    listener: Any,
    args: argparse.Namespace,
    output: Path,
    stale: list[Path],
    report: Any,
    report_error: Any,
) -> int:
    """Serve in a worker thread; an interrupt (SIGINT, or SIGTERM made one) closes the listener.

    Signals are handled in the main thread, and a ``KeyboardInterrupt`` raised at an
    arbitrary point there may land between a lock's acquisition and the ``with`` block
    that would release it (CPython's ``with`` is not signal-safe): the listener's own
    close then waited for that lock forever, about once in 40 interrupts.  So the main
    thread holds no rudp lock: it only sleeps until the worker is done, and on an
    interrupt closes the listener from there; the worker's ``serve`` then ends and
    cleans up (connections closed, partial files removed) as on any other end.
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["status"] = _serve(listener, args, output, stale, report, report_error)
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc
        outcome["done"] = True  # a plain flag: waiting on it takes no lock

    worker = threading.Thread(target=work, name="rudp-recv", daemon=True)
    worker.start()
    try:
        while "done" not in outcome:
            time.sleep(_POLL)
    except KeyboardInterrupt:
        listener.close()
        stop_by = time.monotonic() + _INTERRUPT_GRACE
        while "done" not in outcome and time.monotonic() < stop_by:
            time.sleep(_POLL)
        raise
    if "error" in outcome:
        raise outcome["error"]
    status: int = outcome["status"]
    return status


_POLL = 0.05
"""Seconds between the main thread's looks at the worker (it only waits for signals)."""
_INTERRUPT_GRACE = 10.0
"""How long an interrupted receiver waits for its transfers to be closed and cleaned up."""


def _serve(
    listener: Any,
    args: argparse.Namespace,
    output: Path,
    stale: list[Path],
    report: Any,
    report_error: Any,
) -> int:
    """``rudp recv``'s work once it listens (in ``_serve_until_interrupted``'s worker)."""
    say(f"listening on {format_address(listener.address)}, saving to {output}")
    if args.keyed:
        say("only senders holding the pre-shared key can connect")
    elif not _is_loopback(listener.address[0]):
        say(
            "warning: reachable from other hosts without --psk-file: anyone who can "
            "reach this port can store files here"
        )
    for path in stale:
        say(f"removed the stale partial file {path.name}")
    try:
        filetransfer.serve(
            listener,
            output,
            once=args.once,
            timeout=args.timeout,
            progress=progress_factory(args.quiet),
            on_result=report,
            on_error=report_error,
            overwrite=args.overwrite,
            max_senders=args.max_senders,
            idle_timeout=args.idle_timeout,
        )
    except RudpTimeout:
        say("timed out waiting for a file" if args.once else "timed out")
        return EXIT_FAILED if args.once else EXIT_OK
    return EXIT_OK


def genpsk_command(args: argparse.Namespace) -> int:
    """``rudp genpsk``: write a new pre-shared key file (never replacing one)."""
    try:
        psk_files.write_psk_file(args.key_file)
    except OSError as exc:
        say(f"cannot write {args.key_file}: {exc.strerror or exc}")
        return EXIT_FAILED
    say(f"wrote a new pre-shared key to {args.key_file}; give both sides --psk-file")
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a name: assume the worst
        return False


def proxy_command(args: argparse.Namespace) -> int:
    """``rudp proxy``: relay through the link model until SIGINT/SIGTERM, then print the stats."""
    from rudp.testing.link import LinkProfile

    fields: dict[str, Any] = {
        "loss": args.loss,
        "duplicate": args.dup,
        "reorder": args.reorder,
        "corrupt": args.corrupt,
        "truncate": args.truncate,
        "delay": args.delay,
        "jitter": args.jitter,
        "rate_bps": args.rate,
    }
    if args.reorder_delay is not None:
        fields["reorder_delay"] = args.reorder_delay
    if args.queue is not None:
        fields["queue_limit"] = args.queue
    try:
        profile = LinkProfile(**fields)
        proxy = LossyProxy(
            args.upstream,
            profile,
            listen=args.listen,
            seed=args.seed,
            max_clients=args.max_clients,
            idle_timeout=args.idle_timeout,
            rebind_after=args.rebind_after,
        )
    except (ValueError, OSError) as exc:
        say(f"cannot start the proxy: {exc}")
        return EXIT_FAILED

    def stop(signum: int, frame: FrameType | None) -> None:
        proxy.shutdown()

    previous: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # ValueError: not the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop)
    started = time.monotonic()
    say(f"proxy listening on {format_address(proxy.address)} -> {format_address(proxy.upstream)}")
    try:
        proxy.serve_forever()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        proxy.close()
    print(
        f"rudp proxy stats after {time.monotonic() - started:.1f} s\n{proxy.stats.format()}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_OK
