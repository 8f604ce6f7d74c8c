"""The receiving half: files from one connection into a directory (see the package docs)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rudp.apps.filetransfer.protocol import (
    FileHeader,
    FileTrailer,
    IdleTimeout,
    TransferError,
    Verdict,
    check_name,
    name_limit,
    show_name,
    show_text,
)
from rudp.apps.filetransfer.sending import FileTransferResult, MessageConnection, ProgressFactory
from rudp.errors import ConnectionClosed, RudpError

log = logging.getLogger("rudp.apps.filetransfer")

PARTIAL_MARK = ".partial-"
"""Between a partial file's name and mkstemp's random suffix: ``.NAME.partial-XXXXXXXX``."""

_RANDOM_SUFFIX = 8  # characters mkstemp appends
_STALE_PARTIAL = re.compile(r"\..+" + re.escape(PARTIAL_MARK) + r"[A-Za-z0-9_]{8}")

MAX_RENAMES = 9999
"""``name (1).ext`` ... ``name (9999).ext``; past that the file is refused."""

_rename_lock = threading.Lock()
"""Serialises the check-then-rename fallback for file systems without hard links."""


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (the seam tests use to inject ``ENOSPC``)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def describe_os_error(exc: OSError, name: str) -> str:
    """What the sender is told when the receiver's file system fails (``ENOSPC``, ...)."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return f"receiver's disk is full: {reason} (writing {show_name(name)})"
    if exc.errno == errno.EDQUOT:
        return f"receiver's disk quota is exceeded: {reason} (writing {show_name(name)})"
    return f"receiver could not write {show_name(name)}: {reason}"


class _Refused(Exception):
    """A file was answered with an error verdict; the connection stays in sync."""

    def __init__(self, error: TransferError) -> None:
        super().__init__(str(error))
        self.error = error


def receive_files(
    conn: MessageConnection,
    output_dir: str | os.PathLike[str],
    *,
    max_files: int | None = None,
    progress: ProgressFactory | None = None,
    on_error: Callable[[str, TransferError], object] | None = None,
    overwrite: bool = False,
) -> Iterator[FileTransferResult]:
    """Receive files from one connection into ``output_dir``, yielding each verified file.

    Stops when the sender closes the connection, or after ``max_files``
    verified files.  A refused or corrupt file is answered with an error
    verdict, reported through ``on_error`` (default: logged) and skipped; the
    connection goes on.  So is a file the sender aborted in its trailer.  A
    protocol violation (a bad header, a chunk that does not fit it, a missing or
    malformed trailer) is answered with an error verdict where possible and raises
    :class:`TransferError`; connection failures propagate as rudp exceptions.
    No partial file survives any of these.

    An existing file is never replaced unless ``overwrite``; the new one gets
    the next free ``name (N).ext``.  Two files of one name on this connection
    never collapse into one, even with ``overwrite``.
    """
    out = Path(output_dir)
    limit = name_limit(out)
    stored: set[str] = set()  # names this connection wrote: never replaced
    report = on_error or _log_refusal
    received = 0
    while max_files is None or received < max_files:
        try:
            message = conn.recv()
        except ConnectionClosed:
            return
        except IdleTimeout as exc:  # between files: a verdict about the connection
            _send_verdict(conn, Verdict("", False, error=str(exc)))
            raise
        try:
            header = FileHeader.decode_untrusted(message)
        except TransferError as exc:
            # Out of sync: what follows may be chunks of a file we cannot size.
            _send_verdict(conn, Verdict("", False, error=f"bad file header: {exc}"))
            raise TransferError(f"bad file header: {exc}") from None
        try:
            result = _receive_one(conn, out, header, progress, limit, stored, overwrite)
        except _Refused as refused:
            report(header.name, refused.error)
            continue
        except TransferError as exc:
            _send_verdict(conn, Verdict(header.name, False, error=str(exc)))
            raise
        except RudpError:
            raise
        except Exception as exc:  # a bug of ours must not take the receiver down
            log.exception("receiving %s", show_name(header.name))
            error = f"{show_name(header.name)}: receiver error: {exc!r}"
            _send_verdict(conn, Verdict(header.name, False, error=error))
            raise TransferError(error) from exc
        stored.add(result.name)
        received += 1
        yield result


def _log_refusal(name: str, error: TransferError) -> None:
    log.warning("refused %s: %s", show_name(name), error)


def _send_verdict(conn: MessageConnection, verdict: Verdict) -> None:
    # A peer that is gone cannot be told; the next recv reports how it went.
    with contextlib.suppress(RudpError, OSError):
        conn.send(verdict.encode())


def _refuse(
    conn: MessageConnection,
    header: FileHeader,
    error: TransferError,
    partial: Path | None = None,
    sha256: str | None = None,
) -> _Refused:
    """Answer a file read to its trailer: delete what was written, send the error verdict."""
    if partial is not None:  # free the disk first: an early refusal reads on
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    _send_verdict(conn, Verdict(header.name, False, sha256=sha256, error=str(error)))
    return _Refused(error)


def _refuse_early(
    conn: MessageConnection,
    header: FileHeader,
    error: TransferError,
    remaining: int,
    partial: Path | None = None,
) -> _Refused:
    """Refuse a file before its end: delete, answer, then read past the rest of it.

    Its remaining chunks and its trailer are swallowed, so that the next file lines up.
    """
    refused = _refuse(conn, header, error, partial)
    try:
        _drain(conn, header, remaining)
    except TransferError as exc:
        # The connection ends here: keep why the file was refused, not only how it ended.
        raise TransferError(f"{error}; then {exc}") from None
    return refused


def _receive_one(
    conn: MessageConnection,
    out: Path,
    header: FileHeader,
    progress: ProgressFactory | None,
    limit: int,
    stored: set[str],
    overwrite: bool,
) -> FileTransferResult:
    started = time.monotonic()
    try:
        name = check_name(header.name, limit)
        free = shutil.disk_usage(out).free
        if header.size > free:
            raise TransferError(
                f"receiver's disk is full: {show_name(name)} needs {header.size} bytes, {free} free"
            )
        fd, tmp_name = tempfile.mkstemp(prefix=_partial_prefix(name, limit), dir=out)
    except TransferError as exc:
        raise _refuse_early(conn, header, exc, header.size) from None
    except OSError as exc:
        error = TransferError(describe_os_error(exc, header.name))
        raise _refuse_early(conn, header, error, header.size) from None
    tmp = Path(tmp_name)
    bar = progress(name, header.size) if progress is not None else None
    try:
        digest = hashlib.sha256()
        remaining = header.size
        try:
            while remaining:
                chunk = _next_chunk(conn, header, remaining)
                remaining -= len(chunk)
                write_all(fd, chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            # Durable before it gets its final name (rename-after-fsync).
            os.fsync(fd)
        except OSError as exc:
            error = TransferError(describe_os_error(exc, name))
            raise _refuse_early(conn, header, error, remaining, partial=tmp) from None
        finally:
            os.close(fd)
        # From here on the file has been read to its end: a refusal reads nothing more.
        trailer = _next_trailer(conn, header)
        actual = digest.hexdigest()
        if trailer.error is not None:
            reason = show_text(trailer.error)
            error = TransferError(f"{show_name(name)}: the sender aborted it: {reason}")
            raise _refuse(conn, header, error, partial=tmp, sha256=actual)
        if actual != trailer.sha256:
            error = TransferError(f"{show_name(name)}: sha256 mismatch, file discarded")
            raise _refuse(conn, header, error, partial=tmp, sha256=actual)
        try:
            final = _place(tmp, out, name, limit, stored, overwrite)
        except OSError as exc:
            error = TransferError(describe_os_error(exc, name))
            raise _refuse(conn, header, error, partial=tmp) from None
        except TransferError as exc:
            raise _refuse(conn, header, exc, partial=tmp) from None
        _fsync_dir(out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        if bar is not None:
            bar.close()
    conn.send(Verdict(header.name, ok=True, sha256=actual, stored_as=final).encode())
    return FileTransferResult(
        final,
        out / final,
        header.size,
        actual,
        time.monotonic() - started,
        header.name if final != header.name else None,
    )


def _partial_prefix(name: str, limit: int) -> str:
    """``.NAME.partial-``, NAME cut so that mkstemp's full name still fits ``limit`` bytes."""
    room = limit - 1 - len(PARTIAL_MARK) - _RANDOM_SUFFIX
    return f".{_cut_utf8(name, room)}{PARTIAL_MARK}"


def _cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` encoding to at most ``max_bytes`` of UTF-8."""
    return text.encode("utf-8")[: max(0, max_bytes)].decode("utf-8", "ignore")


def numbered_name(name: str, n: int, limit: int) -> str:
    """``name`` with `` (n)`` before its extension, cut to fit ``limit`` bytes.

    ``report.pdf`` -> ``report (1).pdf``, ``archive.tar.gz`` -> ``archive (1).tar.gz``,
    ``README`` -> ``README (1)``.  A long name loses characters from the end of its
    stem, never its extension or number.
    """
    stem, ext = name, ""
    head, dot, tail = name.rpartition(".")
    if dot and head and len(tail) <= 16:
        stem, ext = head, "." + tail
        if stem.endswith(".tar") and len(stem) > len(".tar"):  # keep .tar.gz together
            stem, ext = stem[: -len(".tar")], ".tar" + ext
    suffix = f" ({n})"
    room = limit - len((suffix + ext).encode("utf-8"))
    if room < 1:  # pragma: no cover - only with an absurdly small NAME_MAX
        return _cut_utf8(name, limit - len(suffix.encode())) + suffix
    return _cut_utf8(stem, room) + suffix + ext


def _place(tmp: Path, out: Path, name: str, limit: int, stored: set[str], overwrite: bool) -> str:
    """Give the verified ``tmp`` its final name in ``out``; returns that name.

    Without ``overwrite`` an existing name is never replaced: ``os.link`` fails
    atomically if the name exists (also against another connection writing the
    same name at the same moment), and the next ``name (N).ext`` is tried.
    """
    if overwrite and name not in stored:
        os.replace(tmp, out / name)
        return name
    for n in range(MAX_RENAMES + 1):
        candidate = name if n == 0 else numbered_name(name, n, limit)
        if candidate in stored:
            continue
        try:
            os.link(tmp, out / candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # No hard links here (FAT, some FUSE): check and rename under a lock,
            # which excludes our own connections (not other programs).
            with _rename_lock:
                if os.path.lexists(out / candidate):
                    continue
                os.rename(tmp, out / candidate)
            return candidate
        tmp.unlink()
        return candidate
    raise TransferError(
        f"refused {show_name(name)}: {MAX_RENAMES} numbered copies of it exist already"
    )


def _next_chunk(conn: MessageConnection, header: FileHeader, remaining: int) -> bytes:
    try:
        chunk = conn.recv()
    except ConnectionClosed:
        raise TransferError(
            f"{show_name(header.name)}: sender closed with {remaining} bytes missing"
        ) from None
    if len(chunk) > header.chunk_size or len(chunk) > remaining or not chunk:
        raise TransferError(
            f"{show_name(header.name)}: chunk of {len(chunk)} bytes violates the header"
        )
    return chunk


def _next_trailer(conn: MessageConnection, header: FileHeader) -> FileTrailer:
    try:
        message = conn.recv()
    except ConnectionClosed:
        raise TransferError(
            f"{show_name(header.name)}: sender closed before the file's trailer"
        ) from None
    try:
        return FileTrailer.decode_untrusted(message)
    except TransferError as exc:
        raise TransferError(f"{show_name(header.name)}: bad file trailer: {exc}") from None


def _drain(conn: MessageConnection, header: FileHeader, remaining: int) -> None:
    """Read and discard the rest of a refused file: its remaining chunks, then its trailer."""
    while remaining:
        remaining -= len(_next_chunk(conn, header, remaining))
    _next_trailer(conn, header)


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete the partial files a receiver killed mid-transfer left in ``out``.

    Only names of the exact form this module creates (a dot, the name,
    ``.partial-`` and mkstemp's eight random characters) and only regular files:
    a user's ``notes.partial`` or a directory is left alone.  Returns what it removed.
    """
    removed: list[Path] = []
    for entry in out.iterdir():
        if _STALE_PARTIAL.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is (POSIX); not every
    # platform can open a directory, which is fine: the data itself is synced.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
