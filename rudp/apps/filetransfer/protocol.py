"""The file-transfer messages and their untrusted decoding (see the package docs).

Everything here treats its input as hostile: a header, trailer or verdict is
bounded in size and nesting *before* ``json.loads`` sees it (so no message can
make the parser recurse or allocate without bound), every field is checked for
type and range, and a file name is accepted only if it is a plain, printable,
encodable base name that fits the file system.  Every refusal is a
:class:`TransferError` whose text is fit to show the user and the sender.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from rudp.errors import RudpError

PROTOCOL_VERSION = 2
"""Version field of the header; a receiver refuses others.  Version 1 carried the
SHA-256 in the header, which made the sender read the whole file before sending."""

DEFAULT_CHUNK_SIZE = 256 * 1024
"""Bytes per chunk message.  Large enough that per-message costs vanish, small
enough that the receiver's reassembly buffer (one message) stays small."""

MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 1024 * 1024
"""Largest chunk a receiver accepts: ``Config.max_message_size``'s default (1 MiB), so any
chunk size the CLI allows fits a message with the default configuration."""

MAX_FILE_SIZE = 2**63 - 1
"""Largest size a header may announce (the largest ``off_t``); the free-space
check refuses anything the disk cannot hold long before that."""

MAX_HEADER_SIZE = 4 * 1024
"""Largest file header, in bytes.  A legitimate one is under 1.6 KiB even for a
255-byte name of escaped characters; checked before any parsing."""

MAX_TRAILER_SIZE = 4 * 1024
"""Largest file trailer, in bytes; checked before any parsing.  A digest trailer is
under 100 bytes; the margin is for the sender's reason when it aborts a file."""

MAX_VERDICT_SIZE = 64 * 1024
"""Largest verdict the sender accepts (its error text may quote a long name)."""

MAX_JSON_DEPTH = 4
"""Deepest bracket nesting accepted in a control message.  Headers, trailers and
verdicts are flat objects (depth 1); the margin leaves room for future fields."""

MAX_NAME_BYTES = 255
"""Longest file name in UTF-8 bytes when the file system does not say
(``NAME_MAX`` of ext4, XFS, btrfs, APFS, NTFS in UTF-16 units)."""


class TransferError(RudpError):
    """A file transfer failed; the message is meant for the user."""


class IdleTimeout(TransferError):
    """The sender delivered no message for the idle timeout; its connection is ended."""


@dataclass(frozen=True)
class FileHeader:
    """The first message of a file (its digest comes last, in :class:`FileTrailer`)."""

    name: str
    size: int
    chunk_size: int

    def encode(self) -> bytes:
        """The header as a JSON message."""
        return json.dumps(
            {
                "type": "file",
                "version": PROTOCOL_VERSION,
                "name": self.name,
                "size": self.size,
                "chunk_size": self.chunk_size,
            }
        ).encode()

    @classmethod
    def decode_untrusted(cls, message: bytes) -> FileHeader:
        """Parse a header from the network; raises only :class:`TransferError`.

        The name is checked to be a string of printable characters here; whether
        it may become a file is :func:`check_name`'s decision (a refused name
        still lets the receiver answer and skip the file).
        """
        obj = decode_control(message, "file", MAX_HEADER_SIZE)
        version = obj.get("version")
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise TransferError(
                f"unsupported file protocol version {_short(version)} "
                f"(this receiver speaks version {PROTOCOL_VERSION})"
            )
        name, size, chunk = (obj.get(k) for k in ("name", "size", "chunk_size"))
        if not isinstance(name, str):
            raise TransferError("header without a file name")
        if not _is_int(size) or not 0 <= size <= MAX_FILE_SIZE:
            raise TransferError(f"header with a bad size {_short(size)}")
        if not _is_int(chunk) or not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE:
            raise TransferError(
                f"header with a bad chunk size {_short(chunk)} "
                f"(must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE})"
            )
        return cls(name, size, chunk)


@dataclass(frozen=True)
class FileTrailer:
    """The last message of a file: its SHA-256, or why the sender gave it up.

    The digest comes after the chunks so that the sender can hash while it
    sends (one read of the file, the first byte leaves at once).  A sender
    that cannot vouch for what it sent (the file changed meanwhile) sends
    ``sha256`` ``None`` and an ``error``; the receiver then discards the file.
    """

    sha256: str | None
    """64 lowercase hex digits: the digest of the ``size`` bytes just sent."""
    error: str | None = None
    """The sender's reason for aborting the file (only without ``sha256``)."""

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.error is None):
            raise ValueError("a file trailer carries exactly one of sha256 and error")

    def encode(self) -> bytes:
        """The trailer as a JSON message."""
        if self.sha256 is not None:
            return json.dumps({"type": "end", "sha256": self.sha256}).encode()
        return json.dumps({"type": "end", "sha256": None, "error": self.error}).encode()

    @classmethod
    def decode_untrusted(cls, message: bytes) -> FileTrailer:
        """Parse a trailer from the network; raises only :class:`TransferError`.

        A valid ``sha256`` wins (an ``error`` beside it is ignored); without one
        the trailer must give the sender's reason as a string.
        """
        obj = decode_control(message, "end", MAX_TRAILER_SIZE)
        digest, error = obj.get("sha256"), obj.get("error")
        if isinstance(digest, str) and _is_sha256(digest):
            return cls(digest)
        if digest is None and isinstance(error, str):
            return cls(None, error)
        if digest is None:
            raise TransferError("trailer without a sha256 or the sender's reason")
        raise TransferError("trailer with a bad sha256")


@dataclass(frozen=True)
class Verdict:
    """The receiver's answer to one file (or, with an empty name, to the connection)."""

    name: str
    """The name from the header the verdict answers ("" when there was none)."""
    ok: bool
    sha256: str | None = None
    """Digest of what the receiver got (``None`` if it refused the file)."""
    error: str | None = None
    stored_as: str | None = None
    """The name the file was saved under, when it differs from ``name`` (the
    receiver never replaces an existing file unless told to, see the package docs)."""

    def encode(self) -> bytes:
        """The verdict as a JSON message."""
        fields: dict[str, Any] = {
            "type": "verdict",
            "name": self.name,
            "ok": self.ok,
            "sha256": self.sha256,
            "error": self.error,
        }
        if self.stored_as is not None:
            fields["stored_as"] = self.stored_as
        return json.dumps(fields).encode()

    @classmethod
    def decode_untrusted(cls, message: bytes) -> Verdict:
        """Parse a verdict from the network; raises only :class:`TransferError`."""
        obj = decode_control(message, "verdict", MAX_VERDICT_SIZE)
        ok, name, digest, error, stored = (
            obj.get(k) for k in ("ok", "name", "sha256", "error", "stored_as")
        )
        if not isinstance(ok, bool) or not isinstance(name, str):
            raise TransferError("malformed verdict from the receiver")
        return cls(
            name,
            ok,
            digest if isinstance(digest, str) else None,
            error if isinstance(error, str) else None,
            stored if isinstance(stored, str) else None,
        )


def decode_control(message: bytes, kind: str, limit: int) -> dict[str, Any]:
    """A JSON object of ``"type": kind`` from at most ``limit`` bytes of UTF-8.

    Size, encoding and nesting depth are checked before ``json.loads`` runs, so
    it never recurses deeply (``[`` x 1100 used to raise ``RecursionError``).
    ``json.loads`` is given text, not bytes: on bytes it would guess UTF-16 or
    UTF-32, which the depth scan below cannot follow.
    """
    if len(message) > limit:
        raise TransferError(f"oversized {kind} message ({len(message)} bytes, at most {limit})")
    try:
        text = bytes(message).decode("utf-8")
    except UnicodeDecodeError:
        raise TransferError(
            f"expected {_article(kind)} {kind} message, got bytes that are not UTF-8"
        ) from None
    if json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise TransferError(f"{kind} message nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        obj = json.loads(text)
    except ValueError:  # JSONDecodeError, and int() of too many digits
        raise TransferError(
            f"expected {_article(kind)} {kind} message, got text that is not JSON"
        ) from None
    if not isinstance(obj, dict) or obj.get("type") != kind:
        raise TransferError(f"expected {_article(kind)} {kind} message")
    return obj


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (one pass, no recursion).

    Malformed text (unbalanced brackets, an unterminated string) is left for
    ``json.loads`` to reject; this scan only has to bound its recursion.
    """
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _article(kind: str) -> str:
    return "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"  # "an end message"


def _is_int(value: object) -> TypeGuard[int]:
    return type(value) is int  # not bool, not float


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _short(value: object, limit: int = 40) -> str:
    """``repr`` cut to ``limit`` characters, for error messages quoting peer input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_name(name: str) -> str:
    """A peer-chosen name as it may appear in a message: quoted, escaped, bounded."""
    return _short(name, 80)


def show_text(text: str) -> str:
    """A peer's free text (a sender's reason) as it may appear in a message, like a name."""
    return _short(text, 200)


def name_limit(directory: Path) -> int:
    """The longest file name, in bytes, ``directory``'s file system allows."""
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or unknown
        return MAX_NAME_BYTES
    return limit if limit > 0 else MAX_NAME_BYTES


def check_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """``name`` if the receiver may create a file of that name, else :class:`TransferError`.

    Accepted: a non-empty base name of printable characters that encodes to at
    most ``limit`` bytes of UTF-8.  Refused, with the reason in the error:
    dotfiles (``.bashrc``, ``..``: hidden or special, and the receiver's own
    partial files start with a dot), path separators (``/``, ``\\``) and drive
    letters (the sender never chooses a directory), NUL and other control or
    unprintable characters, lone surrogates (not encodable), and names the file
    system cannot hold.
    """
    shown = show_name(name)
    if not name:
        raise TransferError("refused file name '': empty")
    if not name.isprintable():  # controls, NUL, lone surrogates, line/paragraph separators
        raise TransferError(f"refused file name {shown}: unprintable character")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # pragma: no cover - isprintable() already refuses surrogates
        raise TransferError(f"refused file name {shown}: not encodable") from None
    if "/" in name or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise TransferError(f"refused file name {shown}: path separator or drive")
    if name.startswith("."):
        raise TransferError(f"refused file name {shown}: starts with a dot")
    if len(encoded) > limit:
        raise TransferError(
            f"refused file name {shown}: {len(encoded)} bytes, the file system allows {limit}"
        )
    return name


def file_sha256(path: str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()
