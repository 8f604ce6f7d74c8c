"""atheris harness: the file-transfer app's parsers of peer messages.

``rudp recv`` reads a JSON header and trailer from an untrusted sender and ``rudp send``
a JSON verdict from an untrusted receiver (``rudp.apps.filetransfer``).  For every input:

- ``FileHeader.decode_untrusted``, ``FileTrailer.decode_untrusted`` and
  ``Verdict.decode_untrusted`` raise nothing but ``TransferError`` (their documented error);
- an accepted header re-encodes (``FileHeader.encode``) to a header that decodes to the
  same value, and so do an accepted trailer and verdict;
- an accepted trailer carries either a 64-digit lowercase hex SHA-256 or, without one,
  the sender's reason as a string;
- ``safe_name`` on an accepted header's name raises only ``TransferError``, and a name it
  accepts is a bare, non-empty file name (no separator, no ``..``, no control character)
  that the receiver can actually create: it encodes to the file-system encoding
  (``os.fsencode``, what ``tempfile.mkstemp`` / ``os.replace`` do with it) and to UTF-8
  (what the CLI prints).

Inputs are used two ways, chosen by the first byte: the raw bytes as the message (odd),
or (even) a well-formed header whose name (and then size, chunk size, and a nesting
depth) come from the fuzzer, so odd names get past ``json.loads`` often, or a well-formed
trailer whose digest and reason do.

Known bugs (being fixed elsewhere) are findings: by default the harness crashes on them.
With ``RUDP_FUZZ_SKIP_KNOWN=1`` it counts and skips them instead, so a run can look for
new ones:

- ``RecursionError`` from ``json.loads`` on deeply nested JSON (``_decode_json`` catches
  only ``ValueError``);
- ``UnicodeEncodeError`` on a name with a lone surrogate (``"\\ud800"`` in JSON):
  ``safe_name`` accepts it and the receiver's ``mkstemp`` / the CLI's print then raise.
"""

from __future__ import annotations

import json
import os
import re
import sys

import atheris

with atheris.instrument_imports():
    from rudp.apps import filetransfer
    from rudp.apps.filetransfer import FileHeader, FileTrailer, TransferError, Verdict, safe_name

SHA256 = re.compile(r"[0-9a-f]{64}")
SKIP_KNOWN = os.environ.get("RUDP_FUZZ_SKIP_KNOWN", "") not in ("", "0")
known_hits: dict[str, int] = {}


class KnownIssue(Exception):
    """A finding already reported (see the module docstring)."""


def _known(kind: str, exc: BaseException) -> None:
    if not SKIP_KNOWN:
        raise exc
    count = known_hits[kind] = known_hits.get(kind, 0) + 1
    if count in (1, 10, 100, 1000, 10_000, 100_000):
        # libFuzzer ends the process with exit(): report as we go, not at the end.
        print(f"\n[fuzz_file_header] known issue {kind}, hit {count}x: {exc!r}", file=sys.stderr)
    raise KnownIssue(kind)


def _parse(decode: object, message: bytes) -> object | None:
    assert callable(decode)
    try:
        return decode(message)
    except TransferError:
        return None
    except RecursionError as exc:
        _known("RecursionError (deeply nested JSON)", exc)
    return None  # unreachable


def check_name(name: str) -> None:
    try:
        base = safe_name(name)
    except TransferError:
        return
    assert isinstance(base, str) and base, repr(base)
    assert "/" not in base and "\\" not in base and base not in (".", ".."), repr(base)
    assert not any(ord(c) < 32 or c == "\x7f" for c in base), repr(base)
    try:
        os.fsencode(base)
        base.encode("utf-8")
    except UnicodeEncodeError as exc:
        _known("UnicodeEncodeError (lone surrogate in a file name)", exc)


def check_message(message: bytes) -> None:
    header = _parse(FileHeader.decode_untrusted, message)
    if header is not None:
        assert isinstance(header, FileHeader)
        assert FileHeader.decode_untrusted(header.encode()) == header
        check_name(header.name)
    trailer = _parse(FileTrailer.decode_untrusted, message)
    if trailer is not None:
        assert isinstance(trailer, FileTrailer)
        assert FileTrailer.decode_untrusted(trailer.encode()) == trailer
        if trailer.sha256 is None:
            assert isinstance(trailer.error, str), repr(trailer)
        else:
            assert SHA256.fullmatch(trailer.sha256) and trailer.error is None, repr(trailer)
    verdict = _parse(Verdict.decode_untrusted, message)
    if verdict is not None:
        assert isinstance(verdict, Verdict)
        assert Verdict.decode_untrusted(verdict.encode()) == verdict


def header_fields(fdp: atheris.FuzzedDataProvider) -> dict[str, object]:
    name = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 300))
    return {
        "type": "file",
        "version": filetransfer.PROTOCOL_VERSION,
        "name": name,
        "size": fdp.ConsumeIntInRange(-2, 1 << 70) if fdp.ConsumeBool() else 1234,
        "chunk_size": (filetransfer.DEFAULT_CHUNK_SIZE if fdp.ConsumeBool() else fdp.ConsumeInt(4)),
    }


def trailer_fields(fdp: atheris.FuzzedDataProvider) -> dict[str, object]:
    digest = fdp.PickValueInList(["ab" * 32, None, "digest"])
    fields: dict[str, object] = {
        "type": "end",
        "sha256": fdp.ConsumeUnicode(64) if digest == "digest" else digest,
    }
    if fdp.ConsumeBool():
        # Up to 1000 characters: escaped (\uXXXX), enough to cross MAX_TRAILER_SIZE.
        fields["error"] = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 1000))
    return fields


def structured(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    obj = trailer_fields(fdp) if fdp.ConsumeBool() else header_fields(fdp)
    text = json.dumps(obj, ensure_ascii=fdp.ConsumeBool())
    # JSON nests: json.loads is C code the fuzzer gets no coverage from, so depth must be
    # a mutation of its own.
    depth = fdp.ConsumeIntInRange(0, 3000) if fdp.ConsumeBool() else 0
    text = "[" * depth + text + "]" * depth
    return text.encode("utf-8", "surrogatepass")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    message = data[1:] if data[0] & 1 else structured(data[1:])
    try:
        check_message(message)
    except KnownIssue:
        return


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
