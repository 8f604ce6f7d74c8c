"""The exception family (rudp.errors) and the one table from FailureKind to exception.

Connection failures share one base, ``ConnectionFailed``, with siblings under it
that also subclass the matching builtin, so code written for sockets catches
them.  Which one a ``Failed`` event raises is decided only by
``rudp.drivers._common.FAILURE_EXCEPTIONS``: no driver or face looks at the
human-readable ``reason``.
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

import rudp
from rudp.drivers._common import FAILURE_EXCEPTIONS, failure_error
from rudp.errors import (
    ConnectionAborted,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionReset,
    PeerProtocolError,
    PeerUnreachable,
    RudpError,
    Timeout,
)
from rudp.events import FailureKind

PACKAGE = Path(__file__).resolve().parent.parent / "rudp"

FAILURES = (PeerUnreachable, ConnectionReset, ConnectionAborted, PeerProtocolError)


def test_one_base_for_every_connection_failure() -> None:
    assert issubclass(ConnectionFailed, RudpError)
    assert issubclass(ConnectionFailed, ConnectionError)
    for cls in FAILURES:
        assert issubclass(cls, ConnectionFailed), cls
        # siblings: none is a kind of another (a reset is not "unreachable")
        for other in FAILURES:
            assert cls is other or not issubclass(cls, other), (cls, other)
    # the old inversion is gone
    assert not issubclass(ConnectionFailed, PeerUnreachable)


def test_each_failure_is_also_the_matching_builtin() -> None:
    assert issubclass(ConnectionReset, ConnectionResetError)
    assert issubclass(ConnectionAborted, ConnectionAbortedError)
    for cls in FAILURES:
        assert issubclass(cls, ConnectionError) and issubclass(cls, OSError), cls


def test_no_failure_is_a_timeout_and_a_timeout_is_no_failure() -> None:
    """``except socket.timeout: retry`` must never swallow a failure (see PeerUnreachable)."""
    assert socket.timeout is TimeoutError
    for cls in (ConnectionFailed, *FAILURES):
        assert not issubclass(cls, TimeoutError), cls
    assert issubclass(Timeout, TimeoutError)
    assert not issubclass(Timeout, ConnectionError)
    assert not issubclass(ConnectionClosed, ConnectionFailed)


def test_every_kind_maps_to_exactly_one_failure_exception() -> None:
    assert set(FAILURE_EXCEPTIONS) == set(FailureKind)
    assert len(FAILURE_EXCEPTIONS) == len(FailureKind)
    for kind, cls in FAILURE_EXCEPTIONS.items():
        assert cls in FAILURES, (kind, cls)  # a precise sibling, never the bare base
    assert FAILURE_EXCEPTIONS[FailureKind.UNREACHABLE] is PeerUnreachable
    assert FAILURE_EXCEPTIONS[FailureKind.RESET_BY_PEER] is ConnectionReset
    assert FAILURE_EXCEPTIONS[FailureKind.PROTOCOL_ERROR] is PeerProtocolError
    assert FAILURE_EXCEPTIONS[FailureKind.ABORTED] is ConnectionAborted
    assert FAILURE_EXCEPTIONS[FailureKind.CLOSED_BY_APPLICATION] is ConnectionAborted
    with pytest.raises(TypeError):
        FAILURE_EXCEPTIONS[FailureKind.ABORTED] = PeerUnreachable  # type: ignore[index]


@pytest.mark.parametrize("kind", list(FailureKind), ids=lambda k: k.name)
def test_failure_error_carries_reason_undelivered_and_kind(kind: FailureKind) -> None:
    error = failure_error("it broke", (b"a", b"b"), kind, address=("127.0.0.1", 9))
    assert type(error) is FAILURE_EXCEPTIONS[kind]
    assert (error.reason, error.undelivered, error.kind) == ("it broke", (b"a", b"b"), kind)
    assert error.address == ("127.0.0.1", 9)
    assert "it broke" in str(error) and "2 message(s) undelivered" in str(error)
    # a fresh instance per raise: re-raising one would chain tracebacks
    assert failure_error("it broke", (), kind) is not failure_error("it broke", (), kind)


def test_constructed_by_hand_a_failure_knows_its_kind() -> None:
    assert PeerUnreachable("silent").kind is FailureKind.UNREACHABLE
    assert ConnectionReset("reset").kind is FailureKind.RESET_BY_PEER
    assert PeerProtocolError("bad").kind is FailureKind.PROTOCOL_ERROR
    assert ConnectionAborted("gone").kind is FailureKind.ABORTED
    closed = ConnectionAborted("early", (), FailureKind.CLOSED_BY_APPLICATION)
    assert closed.kind is FailureKind.CLOSED_BY_APPLICATION
    assert ConnectionFailed("driver bug").kind is None
    assert PeerUnreachable("silent").undelivered == () and PeerUnreachable("x").address is None


def test_the_family_is_exported_from_rudp() -> None:
    for cls in (ConnectionFailed, *FAILURES, ConnectionClosed, Timeout):
        assert getattr(rudp, cls.__name__) is cls
        assert cls.__name__ in rudp.__all__


FACES_AND_DRIVERS = sorted(
    [
        *(PACKAGE / "drivers").glob("*.py"),
        *(PACKAGE / name for name in ("sock.py", "api.py", "aio.py")),
    ]
)


def _reason_parsers(tree: ast.AST) -> list[int]:
    """Lines that test a ``reason`` string: ``x in ....reason``, ``....reason.startswith(...)``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.In | ast.NotIn) for op in node.ops
        ):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Attribute) and o.attr == "reason" for o in operands):
                lines.append(node.lineno)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr in ("reason", "_reason")
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", FACES_AND_DRIVERS, ids=lambda p: p.name)
def test_no_driver_or_face_parses_reason_strings(path: Path) -> None:
    assert _reason_parsers(ast.parse(path.read_text())) == []


def test_the_reason_parser_check_sees_a_violation() -> None:
    planted = "if 'unreachable' in failure.reason or event.reason.startswith('peer'):\n    pass\n"
    assert _reason_parsers(ast.parse(planted)) == [1, 1]
