"""The ``rudp`` command's arguments: the parser of every subcommand and its value types.

:func:`build_parser` describes ``rudp recv``, ``send``, ``genpsk`` and ``proxy``;
the small ``type=`` functions turn addresses, durations, rates, probabilities and
``-o NAME=VALUE`` options into values, so argparse reports a bad one as a usage
error.  Apart from the commands (``rudp.apps.cli_commands``) because describing
the command line needs no connection, and the docs and tests build the parser on
its own; ``rudp.apps.cli`` re-exports :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any

from rudp import psk as psk_files
from rudp.apps import filetransfer
from rudp.testing.proxy_parsing import parse_address, parse_duration, parse_rate

__all__ = ["DEFAULT_LISTEN", "DEFAULT_PORT", "build_parser"]

DEFAULT_PORT = 9000
DEFAULT_LISTEN = ("127.0.0.1", DEFAULT_PORT)
"""Loopback only: a receiver reachable from other hosts must be asked for explicitly."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rudp-messenger")
    except PackageNotFoundError:
        return "unknown"


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
