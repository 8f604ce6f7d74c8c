"""File protocol version 2: the SHA-256 comes last, in a trailer after the chunks.

The sender hashes while it sends (one read of the file, no pre-pass before the
first byte) and aborts in the trailer a file that changed meanwhile; the
receiver verifies against the trailer, discards an aborted file, and keeps the
connection in step whatever it refuses.  In-process tests use the scripted
connection of ``test_cli``; the loopback ones ``filetransfer.serve`` in a
thread (``test_receiver_hardening``), every wait bounded and on an event.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_cli import ScriptedConnection, chunks, header, make_file, trailer, transfer, verdicts
from test_receiver_hardening import connect, served

from rudp.apps import filetransfer
from rudp.apps.filetransfer import (
    MAX_TRAILER_SIZE,
    FileHeader,
    FileTrailer,
    TransferError,
    Verdict,
    receiving,
)

DIGEST = hashlib.sha256(b"some file").hexdigest()


def raw_trailer(**fields: object) -> bytes:
    return json.dumps({"type": "end", **fields}).encode()


# --- the trailer message ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("trailer_", "fields"),
    [
        (FileTrailer(DIGEST), {"type": "end", "sha256": DIGEST}),
        (
            FileTrailer(None, "file changed while being sent"),
            {"type": "end", "sha256": None, "error": "file changed while being sent"},
        ),
    ],
)
def test_trailer_encodes_the_documented_fields_and_round_trips(
    trailer_: FileTrailer, fields: dict[str, object]
) -> None:
    assert json.loads(trailer_.encode()) == fields
    assert FileTrailer.decode_untrusted(trailer_.encode()) == trailer_


def test_a_valid_digest_wins_over_an_error_beside_it() -> None:
    decoded = FileTrailer.decode_untrusted(raw_trailer(sha256=DIGEST, error="ignored"))
    assert decoded == FileTrailer(DIGEST) and decoded.error is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param(raw_trailer(sha256=None, error="x" * MAX_TRAILER_SIZE), "oversized", id="big"),
        pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
        pytest.param(b"end", "not JSON", id="not-json"),
        pytest.param(b"\x00\x01 raw chunk bytes", "not JSON", id="a-chunk"),
        pytest.param(b"[" * 10, "nested", id="nested"),
        pytest.param(raw_trailer(sha256=DIGEST, x=[[[[[]]]]]), "nested", id="nested-field"),
        pytest.param(b"[]", "expected an end message", id="a-list"),
        pytest.param(FileHeader("x", 1, 1024).encode(), "expected an end message", id="header"),
        pytest.param(Verdict("x", True, DIGEST).encode(), "expected an end message", id="verdict"),
        pytest.param(raw_trailer(sha256=DIGEST.upper()), "bad sha256", id="uppercase"),
        pytest.param(raw_trailer(sha256=DIGEST[:63]), "bad sha256", id="63-digits"),
        pytest.param(raw_trailer(sha256=DIGEST + "0"), "bad sha256", id="65-digits"),
        pytest.param(raw_trailer(sha256=7), "bad sha256", id="int"),
        pytest.param(raw_trailer(sha256=None), "without a sha256", id="null-without-error"),
        pytest.param(raw_trailer(sha256=None, error=42), "without a sha256", id="error-not-str"),
        pytest.param(raw_trailer(), "without a sha256", id="no-fields"),
    ],
)
def test_trailer_decoder_refuses_bad_input_with_transfer_error_only(
    message: bytes, reason: str
) -> None:
    with pytest.raises(TransferError, match=reason):
        FileTrailer.decode_untrusted(message)


def test_trailer_size_is_checked_before_the_json_parser_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def parser_must_not_run(text: str) -> object:
        raise AssertionError("json.loads saw an oversized trailer")

    monkeypatch.setattr(json, "loads", parser_must_not_run)
    with pytest.raises(TransferError, match="oversized"):
        FileTrailer.decode_untrusted(b" " * (MAX_TRAILER_SIZE + 1))


@pytest.mark.parametrize(("digest", "error"), [(None, None), (DIGEST, "and a reason")])
def test_a_trailer_is_built_with_exactly_one_of_digest_and_error(
    digest: str | None, error: str | None
) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FileTrailer(digest, error)


# --- the sender -----------------------------------------------------------------------


class RecordingConnection(ScriptedConnection):
    """A scripted connection that logs each send into a shared list of events."""

    def __init__(self, incoming: list[bytes], events: list[tuple[str, int]]) -> None:
        super().__init__(incoming)
        self.events = events

    def send(self, data: bytes) -> None:
        self.events.append(("send", len(data)))
        super().send(data)


class CountingFile:
    """A file object that logs every read into a shared list of events."""

    def __init__(self, file: Any, events: list[tuple[str, int]]) -> None:
        self._file = file
        self._events = events

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._file.read(size)
        self._events.append(("read", len(data)))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def test_send_file_reads_the_file_once_and_sends_the_header_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_file(tmp_path / "once.bin", 10_000, seed=4)
    content = src.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    events: list[tuple[str, int]] = []
    opens: list[Path] = []
    real_open = builtins.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened = real_open(file, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and Path(file) == src:
            opens.append(src)
            return CountingFile(opened, events)
        return opened

    # Both names: ``open`` and pathlib's reads go through one or the other.
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    conn = RecordingConnection([Verdict("once.bin", True, digest).encode()], events)
    result = filetransfer.send_file(conn, src, chunk_size=1024)

    assert opens == [src]  # one open, no pre-pass (file_sha256 opens the file too)
    assert sum(n for kind, n in events if kind == "read") == len(content)
    assert events[0] == ("send", len(conn.sent[0]))  # the header went out before any read
    assert FileHeader.decode_untrusted(conn.sent[0]) == FileHeader("once.bin", 10_000, 1024)
    assert b"".join(conn.sent[1:-1]) == content
    assert FileTrailer.decode_untrusted(conn.sent[-1]) == FileTrailer(digest)
    assert result.sha256 == digest


class ChangingConnection:
    """Forwards to ``conn``; once the first chunk went out (send #2), runs ``change``."""

    def __init__(self, conn: Any, change: Callable[[], None]) -> None:
        self.conn = conn
        self.change = change
        self.sends = 0

    @property
    def sent(self) -> list[bytes]:
        sent: list[bytes] = self.conn.sent
        return sent

    def send(self, data: bytes) -> None:
        self.conn.send(data)
        self.sends += 1
        if self.sends == 2:
            self.change()

    def recv(self, timeout: float | None = None) -> bytes:
        data: bytes = self.conn.recv(timeout=timeout)
        return data

    def flush(self, timeout: float | None = None) -> None:
        self.conn.flush(timeout=timeout)

    def close(self) -> None:
        self.conn.close()


def rewrite_in_place(path: Path) -> Callable[[], None]:
    """Overwrite bytes past the first chunk, keeping the size.

    The file's times are first set an hour back, so the write surely moves its
    mtime even on a file system with coarse timestamps.
    """
    past = os.stat(path).st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(past, past))

    def change() -> None:
        with open(path, "r+b") as f:
            f.seek(50_000)
            f.write(b"changed under the sender")

    return change


def grow(path: Path) -> Callable[[], None]:
    def change() -> None:
        with open(path, "ab") as f:
            f.write(b"appended while being sent")

    return change


def shrink(path: Path) -> Callable[[], None]:
    return lambda: os.truncate(path, 4096)


CHANGES = [pytest.param(rewrite_in_place, id="rewritten"), pytest.param(grow, id="grown")]
CHANGED, SHRANK = "file changed while being sent", "file shrank while being sent"


@pytest.mark.parametrize("changer", CHANGES)
def test_a_file_changed_while_being_sent_is_aborted_and_not_stored(
    tmp_path: Path, changer: Callable[[Path], Callable[[], None]]
) -> None:
    src = make_file(tmp_path / "moving.bin", 100_000, seed=6)
    out = tmp_path / "out"
    out.mkdir()
    # Whatever the receiver answers, the sender's own reason is what it reports.
    refusal = Verdict("moving.bin", False, error="'moving.bin': the sender aborted it").encode()
    sender = ChangingConnection(ScriptedConnection([refusal]), changer(src))
    with pytest.raises(TransferError, match=r"moving\.bin: file changed while being sent$"):
        filetransfer.send_file(sender, src, chunk_size=4096)
    assert FileTrailer.decode_untrusted(sender.sent[-1]) == FileTrailer(
        None, "file changed while being sent"
    )

    # What the sender sent, played to a receiver: nothing is stored.
    receiver = ScriptedConnection(sender.sent)
    refusals: list[str] = []
    results = filetransfer.receive_files(
        receiver, out, on_error=lambda n, e: refusals.append(str(e))
    )
    assert list(results) == []
    assert os.listdir(out) == []
    [verdict] = verdicts(receiver)
    assert not verdict.ok
    assert verdict.error == "'moving.bin': the sender aborted it: 'file changed while being sent'"
    assert refusals == [verdict.error]


@pytest.mark.parametrize(
    ("changer", "reason"),
    [
        pytest.param(rewrite_in_place, CHANGED, id="rewritten"),
        pytest.param(grow, CHANGED, id="grown"),
        pytest.param(shrink, SHRANK, id="shrunk"),  # made up with zeros: still in step
    ],
)
def test_a_file_modified_while_being_sent_over_loopback_and_the_next_one_still_arrives(
    tmp_path: Path, changer: Callable[[Path], Callable[[], None]], reason: str
) -> None:
    src = make_file(tmp_path / "moving.bin", 100_000, seed=7)
    later = make_file(tmp_path / "later.bin", 20_000, seed=8)
    out = tmp_path / "out"
    out.mkdir()
    with served(out) as server:
        with connect(server.address) as conn:
            with pytest.raises(TransferError, match=reason):
                filetransfer.send_file(ChangingConnection(conn, changer(src)), src, chunk_size=4096)
            assert filetransfer.send_file(conn, later, chunk_size=4096).name == "later.bin"
        server.wait_error(rf"'moving\.bin': the sender aborted it: '{reason}'")
    assert os.listdir(out) == ["later.bin"]  # no partial file, no torn copy
    assert (out / "later.bin").read_bytes() == later.read_bytes()


def test_a_file_that_shrinks_while_being_sent_is_padded_to_its_size_and_aborted(
    tmp_path: Path,
) -> None:
    """The header promised 10,000 bytes: exactly that many go out (zeros after the end),
    then the abort trailer, so the receiver stays in step and stores nothing."""
    src = make_file(tmp_path / "shrinking.bin", 10_000, seed=9)
    original = src.read_bytes()
    refusal = Verdict("shrinking.bin", False, error="aborted").encode()
    sender = ChangingConnection(ScriptedConnection([refusal]), lambda: os.truncate(src, 2048))
    with pytest.raises(TransferError, match=r"shrinking\.bin: file shrank while being sent$"):
        filetransfer.send_file(sender, src, chunk_size=1024)
    content = sender.sent[1:-1]
    assert sum(map(len, content)) == 10_000 and max(map(len, content)) <= 1024
    # What was read (the reader may have buffered past the truncation), then zeros.
    sent = b"".join(content)
    read = sent.rstrip(b"\0")
    assert 1024 <= len(read) < 10_000 and original.startswith(read)
    assert FileTrailer.decode_untrusted(sender.sent[-1]) == FileTrailer(
        None, "file shrank while being sent"
    )


# --- the receiver ---------------------------------------------------------------------


def test_a_trailer_with_an_error_discards_the_partial_file_and_the_next_one_lines_up(
    tmp_path: Path,
) -> None:
    aborted, good = os.urandom(3000), os.urandom(500)
    seen_while_writing: list[list[str]] = []

    class Bar:
        def update(self, n: int) -> None:
            seen_while_writing.append(sorted(os.listdir(tmp_path)))

        def close(self) -> None:
            pass

    conn = ScriptedConnection(
        [
            header("a.bin", aborted),
            *chunks(aborted),
            FileTrailer(None, "disk on fire").encode(),
            *transfer("b.bin", good),
        ]
    )
    results = list(filetransfer.receive_files(conn, tmp_path, progress=lambda name, n: Bar()))
    assert [r.name for r in results] == ["b.bin"]
    first, second = verdicts(conn)
    assert not first.ok and first.name == "a.bin"
    assert first.error == "'a.bin': the sender aborted it: 'disk on fire'"
    assert first.sha256 == hashlib.sha256(aborted).hexdigest()  # what arrived, for the record
    assert second.ok and second.name == "b.bin"
    # The aborted file was being written under a partial name, and is gone.
    assert seen_while_writing[0][0].startswith(".a.bin.partial-")
    assert os.listdir(tmp_path) == ["b.bin"]


def test_the_senders_reason_is_escaped_and_bounded_in_the_verdict(tmp_path: Path) -> None:
    data = b"x" * 10
    reason = "line\nbreak \x1b[31mred " + "y" * 3000
    conn = ScriptedConnection([header("r", data), data, FileTrailer(None, reason).encode()])
    assert list(filetransfer.receive_files(conn, tmp_path, on_error=lambda n, e: None)) == []
    [verdict] = verdicts(conn)
    error = verdict.error or ""
    assert error.startswith("'r': the sender aborted it: 'line\\nbreak \\x1b[31mred yyy")
    assert "\n" not in error and "\x1b" not in error
    assert len(error) < 300


@pytest.mark.parametrize("size", [0, 2500])
def test_a_refused_name_drains_the_chunks_and_the_trailer(tmp_path: Path, size: int) -> None:
    # With size 0 there is no chunk to drain, only the trailer.
    evil, good = os.urandom(size), os.urandom(100)
    conn = ScriptedConnection([*transfer(".bashrc", evil), *transfer("good", good)])
    results = list(filetransfer.receive_files(conn, tmp_path, on_error=lambda n, e: None))
    assert [r.name for r in results] == ["good"]
    assert [v.ok for v in verdicts(conn)] == [False, True]
    assert os.listdir(tmp_path) == ["good"]


def test_a_refusal_while_draining_keeps_its_reason(tmp_path: Path) -> None:
    # A sender that closes after the refusal, before its trailer: the connection ends,
    # and what ends it still says why the file was refused.
    conn = ScriptedConnection([header(".bashrc", b"")])
    with pytest.raises(TransferError, match=r"starts with a dot; then .*before the file's trailer"):
        list(filetransfer.receive_files(conn, tmp_path))
    assert os.listdir(tmp_path) == []


def fail_the_first_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verified file cannot get its final name once (``EIO``); later ones can."""
    real_place = receiving._place
    failures = [OSError(errno.EIO, os.strerror(errno.EIO))]

    def place(*args: Any) -> str:
        if failures:
            raise failures.pop()
        return real_place(*args)

    monkeypatch.setattr(receiving, "_place", place)


@pytest.mark.parametrize(
    ("cause", "reason"),
    [("mismatch", "sha256 mismatch, file discarded"), ("placement", "could not write")],
)
def test_a_refusal_after_the_trailer_reads_no_further_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cause: str, reason: str
) -> None:
    refused, good = os.urandom(3000), os.urandom(100)
    if cause == "placement":
        fail_the_first_placement(monkeypatch)
    end = trailer(refused, "0" * 64 if cause == "mismatch" else None)
    conn = ScriptedConnection(
        [header("x.bin", refused), *chunks(refused), end, *transfer("good", good)]
    )
    errors: list[str] = []
    results = list(
        filetransfer.receive_files(conn, tmp_path, on_error=lambda n, e: errors.append(str(e)))
    )
    # Had the refusal read one more message, "good"'s header would be gone.
    assert [r.name for r in results] == ["good"]
    assert [v.ok for v in verdicts(conn)] == [False, True]
    assert len(errors) == 1 and reason in errors[0]
    assert os.listdir(tmp_path) == ["good"]


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        pytest.param(
            lambda d: [header("x", d), *chunks(d)], "before the file's trailer", id="none"
        ),
        pytest.param(
            lambda d: [header("x", d), *chunks(d), b"more bytes"], "bad file trailer", id="a-chunk"
        ),
        pytest.param(
            lambda d: [header("x", d), *chunks(d), raw_trailer(sha256="zz")],
            "bad file trailer: trailer with a bad sha256",
            id="bad-digest",
        ),
        pytest.param(
            # The trailer where a chunk belongs is taken for one: the sum never adds up.
            lambda d: [header("x", d), *chunks(d)[:1], trailer(d)],
            "bytes missing",
            id="too-early",
        ),
    ],
)
def test_a_missing_or_malformed_trailer_is_a_protocol_error_and_stores_nothing(
    tmp_path: Path, script: Callable[[bytes], list[bytes]], reason: str
) -> None:
    data = os.urandom(3000)
    conn = ScriptedConnection(script(data))
    with pytest.raises(TransferError, match=reason):
        list(filetransfer.receive_files(conn, tmp_path))
    [verdict] = verdicts(conn)
    assert not verdict.ok and verdict.name == "x" and reason in (verdict.error or "")
    assert os.listdir(tmp_path) == []


def test_a_sender_closing_after_the_chunks_over_loopback_stores_nothing(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    out = tmp_path / "out"
    out.mkdir()
    with served(out) as server:
        with connect(server.address) as conn:
            for message in [header("cut.bin", data, 4096), *chunks(data, 4096)]:
                conn.send(message)
            conn.flush(timeout=15)
        server.wait_error(r"'cut\.bin': sender closed before the file's trailer")
    assert os.listdir(out) == []
