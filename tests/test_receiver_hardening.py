"""The receiver against strangers: hostile headers, names, overwrites, idle and busy peers,
a full disk (issue "security", deliverable 4).

In-process tests drive ``filetransfer.receive_files`` with a scripted connection
(deterministic) or run ``filetransfer.serve`` in a thread on a real loopback
listener; a few run the ``rudp`` command itself.  Every wait is bounded and on
an event, a message or process output, never a sleep.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from subprocs import Proc
from test_cli import ScriptedConnection, header, make_file, raw_header, transfer, verdicts

import rudp
from rudp.apps import cli, filetransfer
from rudp.apps.filetransfer import FileHeader, TransferError, Verdict, receiving
from rudp.apps.filetransfer.protocol import json_depth_exceeds

LISTENING = re.compile(r"listening on \[?([^\]\s]+?)\]?:(\d+)")
QUICK = {"close_linger": 0.2}
"""A short TIME_WAIT, so no closed connection's I/O thread outlives its test
(tests/test_resources.py counts threads)."""


def rudp_cli(*args: str, env: dict[str, str] | None = None) -> Proc:
    return Proc([sys.executable, "-m", "rudp", *args], env)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.finish(10)


# --- deliverable 1: hostile headers end one transfer, never the receiver -----------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param(b"[" * 1100, "nested deeper", id="1100-brackets"),
        pytest.param(b'{"type": "file", "x": ' + b"[" * 50 + b"]" * 50 + b"}", "nested", id="deep"),
        pytest.param(raw_header(name="x" * 5000), "oversized", id="over-4KiB"),
        pytest.param(raw_header().decode().encode("utf-16"), "not UTF-8", id="utf-16"),
        pytest.param(raw_header(version=True), "version", id="version-true"),
        pytest.param(raw_header(size=2**64), "bad size", id="size-too-big"),
        pytest.param(raw_header(size=1.0), "bad size", id="size-float"),
        pytest.param(raw_header(version=1), "version 1", id="version-1"),
        pytest.param(raw_header(chunk_size="1024"), "chunk size", id="chunk-str"),
        pytest.param(raw_header(name=["x"]), "file name", id="name-list"),
        pytest.param(
            raw_header(size=0).replace(b'"size": 0', b'"size": ' + b"9" * 3000),
            "bad size",
            id="3000-digit-size",
        ),
    ],
)
def test_hostile_header_is_refused_with_a_verdict_and_ends_only_that_connection(
    tmp_path: Path, message: bytes, reason: str
) -> None:
    conn = ScriptedConnection([message, header("after.bin", b"never read")])
    with pytest.raises(TransferError, match=reason):
        list(filetransfer.receive_files(conn, tmp_path))
    [verdict] = verdicts(conn)
    assert not verdict.ok and verdict.name == ""
    assert verdict.error is not None and reason in verdict.error
    assert os.listdir(tmp_path) == []


def test_header_size_is_checked_before_the_json_parser_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def parser_must_not_run(text: str) -> object:
        raise AssertionError("json.loads saw an oversized header")

    monkeypatch.setattr(json, "loads", parser_must_not_run)
    with pytest.raises(TransferError, match="oversized"):
        FileHeader.decode_untrusted(b" " * (filetransfer.MAX_HEADER_SIZE + 1))
    with pytest.raises(TransferError, match="nested"):
        FileHeader.decode_untrusted(b"[" * 10)


def test_depth_scan_ignores_brackets_inside_strings() -> None:
    assert not json_depth_exceeds('{"name": "[[[[[[{{{{\\"[[[[[["}', 1)
    assert json_depth_exceeds('{"a": [[1]]}', 2)
    name = '[[[[[[[[ {{{{ \\ ".txt'
    data = b"brackets in a name are fine"
    assert FileHeader.decode_untrusted(header(name, data)).name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("\ud800x", "unprintable"),  # used to raise UnicodeEncodeError inside mkstemp
        (".bashrc", "starts with a dot"),
        ("..", "starts with a dot"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("a\x00b", "unprintable"),
        ("tab\there", "unprintable"),
        ("x" * 256, "256 bytes"),
        ("", "empty"),
    ],
)
def test_refused_name_is_answered_and_the_next_file_still_arrives(
    tmp_path: Path, name: str, reason: str
) -> None:
    (tmp_path / ".bashrc").write_text("mine")
    bad, good = os.urandom(3000), os.urandom(100)
    refusals: list[str] = []
    conn = ScriptedConnection([*transfer(name, bad), *transfer("good", good)])
    results = list(
        filetransfer.receive_files(conn, tmp_path, on_error=lambda n, e: refusals.append(str(e)))
    )
    assert [r.name for r in results] == ["good"]
    first, second = verdicts(conn)
    assert not first.ok and first.error is not None and reason in first.error
    assert second.ok
    assert refusals and reason in refusals[0]
    assert sorted(os.listdir(tmp_path)) == [".bashrc", "good"]
    assert (tmp_path / ".bashrc").read_text() == "mine"


def test_a_bug_in_the_receiver_is_answered_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(receiving, "check_name", broken)
    data = b"x" * 10
    conn = ScriptedConnection(transfer("a", data))
    with pytest.raises(TransferError, match="receiver error: RuntimeError"):
        list(filetransfer.receive_files(conn, tmp_path))
    [verdict] = verdicts(conn)
    assert not verdict.ok and "a bug" in (verdict.error or "")


def test_cli_receiver_survives_hostile_headers_and_serves_the_next_sender(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """The two one-message kills measured against ``rudp recv``, then a good file."""
    out = tmp_path / "out"
    out.mkdir()
    receiver = rudp_cli("recv", "--listen", "127.0.0.1:0", "--output", str(out), "-q")
    procs.append(receiver)
    port = int(receiver.wait_for(LISTENING).group(2))
    src = make_file(tmp_path / "ok.bin", 50_000, seed=5)
    surrogate = raw_header(name="\ud800x", size=0)
    for message in (b"[" * 1100, surrogate):
        with connect(("127.0.0.1", port)) as conn:
            conn.send(message)
            verdict = Verdict.decode_untrusted(conn.recv(timeout=15))
            assert not verdict.ok and verdict.error
    with connect(("127.0.0.1", port)) as conn:
        result = filetransfer.send_file(conn, src, chunk_size=4096)
    assert result.name == "ok.bin"
    receiver.wait_for(re.compile(r"received ok\.bin"))
    assert receiver.popen.poll() is None  # still running
    assert receiver.stop(timeout=30) == 0
    assert "nested deeper" in receiver.text and "unprintable" in receiver.text
    assert os.listdir(out) == ["ok.bin"]


# --- deliverable 2: no overwrite by default, names never collapse ------------------


def test_existing_file_is_kept_and_the_new_one_numbered(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("original")
    (tmp_path / "a (1).txt").write_text("first copy")
    data = b"new"
    conn = ScriptedConnection(transfer("a.txt", data))
    [result] = filetransfer.receive_files(conn, tmp_path)
    assert result.name == "a (2).txt" and result.requested_name == "a.txt"
    assert (tmp_path / "a.txt").read_text() == "original"
    assert (tmp_path / "a (2).txt").read_bytes() == data
    [verdict] = verdicts(conn)
    assert verdict.ok and verdict.stored_as == "a (2).txt"


def test_overwrite_replaces_but_two_files_of_one_connection_never_collapse(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.txt").write_text("original")
    one, two = b"first of this sender", b"second of this sender"
    conn = ScriptedConnection([*transfer("a.txt", one), *transfer("a.txt", two)])
    results = list(filetransfer.receive_files(conn, tmp_path, overwrite=True))
    assert [r.name for r in results] == ["a.txt", "a (1).txt"]
    assert (tmp_path / "a.txt").read_bytes() == one
    assert (tmp_path / "a (1).txt").read_bytes() == two
    assert [v.stored_as for v in verdicts(conn)] == ["a.txt", "a (1).txt"]


def test_same_name_twice_without_overwrite(tmp_path: Path) -> None:
    one, two = b"one", b"two"
    conn = ScriptedConnection([*transfer("r", one), *transfer("r", two)])
    assert [r.name for r in filetransfer.receive_files(conn, tmp_path)] == ["r", "r (1)"]
    assert (tmp_path / "r").read_bytes() == one and (tmp_path / "r (1)").read_bytes() == two


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("report.pdf", 1, "report (1).pdf"),
        ("archive.tar.gz", 2, "archive (2).tar.gz"),
        ("README", 3, "README (3)"),
        ("a.b.c", 1, "a.b (1).c"),
        ("x" * 255, 12, "x" * 250 + " (12)"),
        ("é" * 100 + ".txt", 1, "é" * 100 + " (1).txt"),
    ],
)
def test_numbered_names(name: str, n: int, expected: str) -> None:
    numbered = filetransfer.numbered_name(name, n, 255)
    assert numbered == expected
    assert len(numbered.encode()) <= 255


def test_a_name_at_the_length_limit_still_gets_a_partial_file_and_a_number(
    tmp_path: Path,
) -> None:
    name = "y" * 255  # the partial file's name would be 273 bytes uncut
    (tmp_path / name).write_text("there")
    data = b"long name"
    conn = ScriptedConnection(transfer(name, data))
    [result] = filetransfer.receive_files(conn, tmp_path)
    assert result.name == "y" * 251 + " (1)"
    assert (tmp_path / result.name).read_bytes() == data


def test_cli_same_base_name_twice_and_a_refused_dotfile(tmp_path: Path, procs: list[Proc]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".bashrc").write_text("mine")
    receiver = rudp_cli("recv", "--listen", "127.0.0.1:0", "--output", str(out), "-q")
    procs.append(receiver)
    port = int(receiver.wait_for(LISTENING).group(2))
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
    first = make_file(tmp_path / "one" / "x.txt", 2000, seed=1)
    second = make_file(tmp_path / "two" / "x.txt", 3000, seed=2)
    dotfile = tmp_path / ".bashrc"
    dotfile.write_text("rm -rf ~")
    sender = rudp_cli("send", str(first), str(dotfile), str(second), f"127.0.0.1:{port}", "-q")
    procs.append(sender)
    assert sender.finish(60) == 1, sender.text  # a refused file fails the command
    assert re.search(
        r"failed: \S*\.bashrc: receiver refused \.bashrc: .*starts with a dot", sender.text
    )
    assert sender.text.count("sha256 verified by the receiver") == 2
    assert "stored as 'x (1).txt'" in sender.text
    assert "1 of 3 file(s) failed" in sender.text
    receiver.wait_for(re.compile(r"received x \(1\)\.txt \(sent as 'x\.txt'\)"))
    assert receiver.stop(timeout=30) == 0
    assert sorted(os.listdir(out)) == [".bashrc", "x (1).txt", "x.txt"]
    assert (out / "x.txt").read_bytes() == first.read_bytes()
    assert (out / "x (1).txt").read_bytes() == second.read_bytes()
    assert (out / ".bashrc").read_text() == "mine"


# --- in-process server on loopback --------------------------------------------------


class Served:
    """``filetransfer.serve`` running in a thread on a loopback listener."""

    def __init__(self, out: Path, **options: Any) -> None:
        self.listener = rudp.listen(("127.0.0.1", 0), **QUICK)
        self.address = self.listener.address
        self.errors: list[str] = []
        self.results: list[filetransfer.FileTransferResult] = []
        self.error_seen = threading.Condition()
        self.ended: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(out, options), daemon=True)
        self.thread.start()

    def _run(self, out: Path, options: dict[str, Any]) -> None:
        try:
            filetransfer.serve(
                self.listener,
                out,
                on_result=self.results.append,
                on_error=self._error,
                **options,
            )
        except BaseException as exc:  # the listener's close ends serve()
            self.ended = exc

    def _error(self, what: str, exc: Exception) -> None:
        with self.error_seen:
            self.errors.append(f"{what}: {exc}")
            self.error_seen.notify_all()

    def wait_error(self, pattern: str, timeout: float = 20.0) -> str:
        with self.error_seen:
            found: list[str] = []

            def match() -> bool:
                found[:] = [e for e in self.errors if re.search(pattern, e)]
                return bool(found)

            assert self.error_seen.wait_for(match, timeout), self.errors
            return found[0]

    def close(self) -> None:
        self.listener.close()
        self.thread.join(20)
        assert not self.thread.is_alive()
        assert isinstance(self.ended, rudp.LocalProtocolError), repr(self.ended)


@contextlib.contextmanager
def served(out: Path, **options: Any) -> Iterator[Served]:
    server = Served(out, **options)
    try:
        yield server
    finally:
        server.close()


def connect(address: Any, **options: Any) -> rudp.Connection:
    return rudp.connect(address, timeout=10, peer_timeout=10, **QUICK, **options)


# --- deliverable 3: concurrent senders, idle timeout, a bound ------------------------


def test_an_idle_sender_does_not_stall_others_and_is_ended_after_its_idle_timeout(
    tmp_path: Path,
) -> None:
    idle_timeout = 5.0  # margin for the busy sender on a loaded machine
    src = make_file(tmp_path / "busy.bin", 200_000, seed=9)
    out = tmp_path / "out"
    out.mkdir()
    with served(out, idle_timeout=idle_timeout) as server:
        # Keepalive pings every 0.2 s keep the idle connection alive at the rudp level.
        with connect(server.address, keepalive_interval=0.2) as idle:
            opened = time.monotonic()
            with connect(server.address) as busy:
                result = filetransfer.send_file(busy, src, chunk_size=16384)
            finished = time.monotonic() - opened
            assert result.name == "busy.bin"
            assert finished < idle_timeout, "the second sender waited for the idle one"
            with pytest.raises(rudp.Timeout):  # nothing yet for the idle one: still open
                idle.recv(timeout=0)
            # The receiver tells the idle sender why, then closes.
            verdict = Verdict.decode_untrusted(idle.recv(timeout=idle_timeout + 15))
            ended = time.monotonic() - opened
            assert not verdict.ok and "no message from the sender for 5 s" in (verdict.error or "")
            assert ended >= idle_timeout
            with pytest.raises((rudp.ConnectionClosed, rudp.ConnectionFailed)):
                idle.recv(timeout=15)
            with contextlib.suppress(rudp.ConnectionFailed):
                idle.close()
        server.wait_error(r"no message from the sender for 5 s \(keepalives do not count\)")
    assert (out / "busy.bin").read_bytes() == src.read_bytes()


def test_a_sender_idle_in_the_middle_of_a_file_is_told_which_file_and_why(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with served(out, idle_timeout=0.5) as server, connect(server.address) as stalled:
        stalled.send(header("half.bin", b"x" * 5000))
        stalled.send(b"x" * 1000)  # then nothing
        verdict = Verdict.decode_untrusted(stalled.recv(timeout=20))
        assert verdict.name == "half.bin" and not verdict.ok
        assert "no message from the sender for 0.5 s" in (verdict.error or "")
        server.wait_error(r"no message from the sender")
        with pytest.raises((rudp.ConnectionClosed, rudp.ConnectionFailed)):
            stalled.recv(timeout=15)  # and only one verdict: the connection ends
        with contextlib.suppress(rudp.ConnectionFailed):
            stalled.close()
    assert os.listdir(out) == []  # the partial file is gone


def test_senders_beyond_max_senders_are_told_the_receiver_is_busy(tmp_path: Path) -> None:
    src = make_file(tmp_path / "f.bin", 10_000)
    out = tmp_path / "out"
    out.mkdir()
    # The only slot is held by a sender that sent a header and then nothing.
    with served(out, max_senders=1, idle_timeout=60) as server, connect(server.address) as holder:
        holder.send(header("held.bin", b"x" * 5000))
        with connect(server.address) as second:
            with pytest.raises(TransferError, match=r"receiver refused f\.bin: receiver busy"):
                filetransfer.send_file(second, src, chunk_size=4096)
            with contextlib.suppress(rudp.ConnectionFailed, rudp.ConnectionClosed):
                second.close()
        server.wait_error(r"receiver busy: 1 senders")
        with pytest.raises(rudp.Timeout):  # the holder is still being served
            holder.recv(timeout=0)
        with contextlib.suppress(rudp.ConnectionFailed, rudp.ConnectionClosed):
            holder.close()
    assert not (out / "f.bin").exists()


# --- deliverable 4: a full disk reaches the sender as such ---------------------------


def test_disk_full_reaches_the_sender_and_the_connection_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = receiving.write_all
    failures = [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))]

    def write_until_full(fd: int, data: bytes) -> None:
        if failures:
            raise failures.pop()
        real_write(fd, data)

    monkeypatch.setattr(receiving, "write_all", write_until_full)
    full = make_file(tmp_path / "full.bin", 100_000, seed=1)
    later = make_file(tmp_path / "later.bin", 5_000, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    with served(out) as server:
        with connect(server.address) as conn:
            with pytest.raises(TransferError) as refused:
                filetransfer.send_file(conn, full, chunk_size=4096)
            assert re.match(
                r"receiver refused full\.bin: receiver's disk is full: No space left on device",
                str(refused.value),
            )
            # The rest of the refused file was drained: the next file lines up.
            assert filetransfer.send_file(conn, later, chunk_size=4096).name == "later.bin"
        server.wait_error("receiver's disk is full")
    assert os.listdir(out) == ["later.bin"]  # no partial file left


@pytest.mark.parametrize(
    ("code", "text"),
    [(errno.EDQUOT, "disk quota is exceeded"), (errno.EIO, "could not write 'f.bin'")],
)
def test_other_write_errors_are_named_in_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, text: str
) -> None:
    def failing_write(fd: int, data: bytes) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(receiving, "write_all", failing_write)
    data = os.urandom(5000)
    conn = ScriptedConnection(transfer("f.bin", data))
    assert list(filetransfer.receive_files(conn, tmp_path, on_error=lambda n, e: None)) == []
    [verdict] = verdicts(conn)
    assert not verdict.ok and text in (verdict.error or "")
    assert os.listdir(tmp_path) == []


# --- deliverable 6: safe default address, pre-shared key files ------------------------


def test_recv_listens_on_loopback_unless_told_otherwise() -> None:
    args = cli.build_parser().parse_args(["recv"])
    assert args.listen == ("127.0.0.1", 9000)
    assert args.max_senders == filetransfer.DEFAULT_MAX_SENDERS
    assert args.idle_timeout == filetransfer.DEFAULT_IDLE_TIMEOUT
    assert not args.overwrite


def test_recv_warns_when_reachable_from_other_hosts(tmp_path: Path, procs: list[Proc]) -> None:
    receiver = rudp_cli("recv", "--listen", "0.0.0.0:0", "--output", str(tmp_path), "-q")
    procs.append(receiver)
    receiver.wait_for(LISTENING)
    receiver.wait_for(re.compile(r"warning: reachable from other hosts without --psk-file"))
    assert receiver.stop(timeout=30) == 0


def test_usage_errors_for_the_new_recv_options(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    for argv in (["recv", "--max-senders", "0"], ["recv", "--idle-timeout", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "must be" in capsys.readouterr().err
    assert isinstance(parser.parse_args(["recv", "--idle-timeout", "2s"]), argparse.Namespace)
