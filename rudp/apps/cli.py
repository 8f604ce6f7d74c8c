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
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from rudp import psk as psk_files
from rudp.apps import filetransfer
from rudp.errors import ConnectionFailed, RudpError
from rudp.errors import Timeout as RudpTimeout
from rudp.events import FailureKind
from rudp.testing.proxy import LossyProxy, format_address, parse_address, parse_duration, parse_rate

__all__ = ["main"]

DEFAULT_PORT = 9000
DEFAULT_LISTEN = ("127.0.0.1", DEFAULT_PORT)
"""Loopback only: a receiver reachable from other hosts must be asked for explicitly."""
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rudp-messenger")
    except PackageNotFoundError:
        return "unknown"


def _say(message: str) -> None:
    print(f"rudp: {message}", file=sys.stderr, flush=True)


# --- argument types ------------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _probability(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad probability {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"probability {text!r} outside 0..1 (or 0%..100%)")
    return value


def _option(text: str) -> tuple[str, Any]:
    """``name=value`` for a Config field; the value is a Python literal or a bare word."""
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name, value


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peer-timeout",
        type=_duration,
        metavar="DURATION",
        help="give up when the peer is silent this long (default 30s)",
    )
    parser.add_argument(
        "-o",
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any rudp Config field, e.g. -o max_datagram_size=1200 (repeatable)",
    )
    parser.add_argument(
        "--psk-file",
        type=Path,
        metavar="KEYFILE",
        help="pre-shared key (from 'rudp genpsk') both sides hold: peers without it cannot "
        f"connect, and every datagram is encrypted (default ${psk_files.PSK_FILE_ENV})",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_duration(text: str) -> float:
    value = _duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rudp`` command (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="rudp",
        description="Reliable, ordered messages over UDP: file transfer and a lossy proxy.",
    )
    parser.add_argument("--version", action="version", version=f"rudp {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    recv = sub.add_parser("recv", help="receive files", description="Receive files into DIR.")
    recv.add_argument(
        "--listen",
        type=_address,
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default 127.0.0.1:{DEFAULT_PORT}, this host only; "
        "0.0.0.0:PORT for every interface, unauthenticated; port 0 picks one)",
    )
    recv.add_argument("--output", type=Path, default=Path("."), metavar="DIR")
    recv.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files (default: store as 'NAME (1).EXT', 'NAME (2).EXT', ...)",
    )
    recv.add_argument(
        "--max-senders",
        type=_positive_int,
        default=filetransfer.DEFAULT_MAX_SENDERS,
        metavar="N",
        help="senders served at once; more are refused as busy "
        f"(default {filetransfer.DEFAULT_MAX_SENDERS})",
    )
    recv.add_argument(
        "--idle-timeout",
        type=_positive_duration,
        default=filetransfer.DEFAULT_IDLE_TIMEOUT,
        metavar="DURATION",
        help="end a connection that delivers no message this long; keepalives do not count "
        f"(default {filetransfer.DEFAULT_IDLE_TIMEOUT:g}s)",
    )
    recv.add_argument("--once", action="store_true", help="exit after the first verified file")
    recv.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="stop after this time (transfers still running are ended); with --once, "
        "an error if no file arrived",
    )
    _add_connection_options(recv)

    send = sub.add_parser("send", help="send files", description="Send files to a receiver.")
    send.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    send.add_argument("address", type=_address, metavar="HOST:PORT")
    send.add_argument(
        "--chunk-size",
        type=int,
        default=filetransfer.DEFAULT_CHUNK_SIZE,
        metavar="BYTES",
        help=f"bytes per message (default {filetransfer.DEFAULT_CHUNK_SIZE}, "
        f"{filetransfer.MIN_CHUNK_SIZE}..{filetransfer.MAX_CHUNK_SIZE})",
    )
    send.add_argument(
        "--connect-timeout",
        type=_duration,
        default=10.0,
        metavar="DURATION",
        help="give up if the handshake does not finish in time (default 10s)",
    )
    _add_connection_options(send)

    genpsk = sub.add_parser(
        "genpsk",
        help="make a pre-shared key file",
        description="Write a new random 32-byte key to KEYFILE (mode 0600; never replaced).",
    )
    genpsk.add_argument("key_file", type=Path, metavar="KEYFILE")

    proxy = sub.add_parser(
        "proxy",
        help="run a lossy UDP proxy",
        description="Relay UDP between clients and an upstream through a lossy link model.",
    )
    proxy.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    proxy.add_argument("--upstream", type=_address, required=True, metavar="HOST:PORT")
    proxy.add_argument("--loss", type=_probability, default=0.0, metavar="P")
    proxy.add_argument("--dup", type=_probability, default=0.0, metavar="P")
    proxy.add_argument("--reorder", type=_probability, default=0.0, metavar="P")
    proxy.add_argument(
        "--reorder-delay", type=_duration, metavar="DURATION", help="extra delay of reordered"
    )
    proxy.add_argument("--corrupt", type=_probability, default=0.0, metavar="P")
    proxy.add_argument("--truncate", type=_probability, default=0.0, metavar="P")
    proxy.add_argument("--delay", type=_duration, default=0.0, metavar="DURATION")
    proxy.add_argument("--jitter", type=_duration, default=0.0, metavar="DURATION")
    proxy.add_argument("--rate", type=_rate, metavar="RATE", help="e.g. 50mbit, 10kbit, 1gbit")
    proxy.add_argument("--queue", type=int, metavar="N", help="bottleneck queue, datagrams")
    proxy.add_argument("--seed", type=int, metavar="N", help="reproducible random decisions")
    proxy.add_argument("--max-clients", type=int, default=64, metavar="N")
    proxy.add_argument("--idle-timeout", type=_duration, default=60.0, metavar="DURATION")
    proxy.add_argument(
        "--rebind-after",
        type=int,
        metavar="N",
        help="move a client's upstream socket to a new port after N datagrams (NAT rebinding)",
    )
    return parser


# --- signals -------------------------------------------------------------------


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


# --- progress ------------------------------------------------------------------


def _progress_factory(quiet: bool) -> filetransfer.ProgressFactory | None:
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


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


# --- commands ------------------------------------------------------------------


def _cmd_send(args: argparse.Namespace) -> int:
    import rudp

    missing = [p for p in args.paths if not p.is_file()]
    if missing:
        _say(f"not a readable file: {missing[0]}")
        return EXIT_FAILED
    try:
        options = _connection_options(args)
    except UsageError as exc:
        _say(str(exc))
        return EXIT_USAGE
    try:
        conn = rudp.connect(args.address, timeout=args.connect_timeout, **options)
    except RudpTimeout:
        _say(f"could not connect to {format_address(args.address)}: no answer")
        return EXIT_FAILED
    except ConnectionFailed as exc:
        _say(f"could not connect to {format_address(args.address)}: {exc.reason}")
        return EXIT_FAILED
    except (RudpError, OSError, TypeError, ValueError) as exc:
        _say(f"could not connect to {format_address(args.address)}: {exc}")
        return EXIT_FAILED

    outcomes: list[Path] = []  # files answered so far, in order

    def report(result: filetransfer.FileTransferResult) -> None:
        outcomes.append(result.path)
        stored = ""
        if result.requested_name is not None:  # the receiver had that name already
            stored = f", stored as {filetransfer.show_name(result.name)}"
        _say(
            f"sent {result.path}: {_mb(result.size)} in {result.seconds:.2f} s "
            f"({_mb(result.goodput)}/s), sha256 verified by the receiver{stored}"
        )

    def report_error(path: Path, exc: filetransfer.TransferError) -> None:
        outcomes.append(path)
        _say(f"failed: {path}: {exc}")

    try:
        with conn:
            done, failed = filetransfer.send_files(
                conn,
                args.paths,
                chunk_size=args.chunk_size,
                progress=_progress_factory(args.quiet),
                on_result=report,
                on_error=report_error,
            )
            stats = conn.stats
    except ConnectionFailed as exc:
        _say(_failure_message(exc))
        _report_unsent(args.paths, outcomes)
        return EXIT_FAILED
    except (RudpError, OSError) as exc:
        _say(f"transfer failed: {exc}")
        _report_unsent(args.paths, outcomes)
        return EXIT_FAILED
    if not args.quiet:
        _say(
            f"connection: {stats.data_packets_sent} data packets, "
            f"{stats.retransmissions} retransmissions, srtt "
            + (f"{stats.srtt * 1000:.1f} ms" if stats.srtt is not None else "n/a")
        )
    if failed:
        _say(f"{len(failed)} of {len(failed) + len(done)} file(s) failed")
        return EXIT_FAILED
    return EXIT_OK


def _report_unsent(paths: list[Path], answered: list[Path]) -> None:
    unsent = paths[len(answered) :]
    if unsent:
        _say(f"not sent ({len(unsent)} file(s)): " + ", ".join(map(str, unsent)))


def _failure_message(exc: ConnectionFailed) -> str:
    """One line naming why the connection failed (by its kind) and what it left undelivered."""
    reason = exc.reason.rstrip(".")
    if exc.kind is not FailureKind.UNREACHABLE:
        # The core's reason says "peer unreachable: ..." only for that kind.
        reason = f"connection failed ({reason})"
    return f"{reason}: {len(exc.undelivered)} messages undelivered"


def _cmd_recv(args: argparse.Namespace) -> int:
    import rudp

    output: Path = args.output
    if not output.is_dir():
        _say(f"output directory does not exist: {output}")
        return EXIT_FAILED
    # Partial files a receiver killed mid-transfer (kill -9, power loss) left behind;
    # removed before listening, reported after the address line that scripts read first.
    stale = filetransfer.remove_stale_partials(output)
    try:
        options = _connection_options(args)
    except UsageError as exc:
        _say(str(exc))
        return EXIT_USAGE
    args.keyed = "psk" in options  # for _serve's notice
    try:
        listener = rudp.listen(args.listen, **options)
    except (RudpError, OSError, TypeError, ValueError) as exc:
        _say(f"cannot listen on {format_address(args.listen)}: {exc}")
        return EXIT_FAILED

    def report(result: filetransfer.FileTransferResult) -> None:
        asked = ""
        if result.requested_name is not None:
            asked = f" (sent as {filetransfer.show_name(result.requested_name)})"
        _say(
            f"received {result.name}{asked}: {_mb(result.size)} in {result.seconds:.2f} s "
            f"({_mb(result.goodput)}/s), sha256 {result.sha256[:16]}... verified"
        )

    def report_error(what: str, exc: Exception) -> None:
        if isinstance(exc, ConnectionFailed):
            _say(f"{what} failed: {_failure_message(exc)}")
        else:
            _say(f"{what} failed: {exc}")

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
    _say(f"listening on {format_address(listener.address)}, saving to {output}")
    if args.keyed:
        _say("only senders holding the pre-shared key can connect")
    elif not _is_loopback(listener.address[0]):
        _say(
            "warning: reachable from other hosts without --psk-file: anyone who can "
            "reach this port can store files here"
        )
    for path in stale:
        _say(f"removed the stale partial file {path.name}")
    try:
        filetransfer.serve(
            listener,
            output,
            once=args.once,
            timeout=args.timeout,
            progress=_progress_factory(args.quiet),
            on_result=report,
            on_error=report_error,
            overwrite=args.overwrite,
            max_senders=args.max_senders,
            idle_timeout=args.idle_timeout,
        )
    except RudpTimeout:
        _say("timed out waiting for a file" if args.once else "timed out")
        return EXIT_FAILED if args.once else EXIT_OK
    return EXIT_OK


def _cmd_genpsk(args: argparse.Namespace) -> int:
    try:
        psk_files.write_psk_file(args.key_file)
    except OSError as exc:
        _say(f"cannot write {args.key_file}: {exc.strerror or exc}")
        return EXIT_FAILED
    _say(f"wrote a new pre-shared key to {args.key_file}; give both sides --psk-file")
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a name: assume the worst
        return False


def _cmd_proxy(args: argparse.Namespace) -> int:
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
        _say(f"cannot start the proxy: {exc}")
        return EXIT_FAILED

    def stop(signum: int, frame: FrameType | None) -> None:
        proxy.shutdown()

    previous: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # ValueError: not the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop)
    started = time.monotonic()
    _say(f"proxy listening on {format_address(proxy.address)} -> {format_address(proxy.upstream)}")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rudp`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    commands = {"send": _cmd_send, "recv": _cmd_recv, "proxy": _cmd_proxy, "genpsk": _cmd_genpsk}
    command = commands[args.command]
    if args.command in ("proxy", "genpsk"):
        return command(args)  # proxy handles its own signals: a stop is a clean exit
    try:
        with _sigterm_as_interrupt():
            return command(args)
    except KeyboardInterrupt:
        # Partial files were removed on the way up (filetransfer's cleanup).
        _say("interrupted")
        return EXIT_OK if args.command == "recv" else EXIT_INTERRUPTED
