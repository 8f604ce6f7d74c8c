"""A small file-transfer protocol over rudp connections (used by ``rudp send``/``recv``).

The protocol
============

rudp already delivers whole messages, in order, exactly once, so the protocol
is a sequence of messages on one connection.  For each file::

    sender                                   receiver
    header  {"type": "file", "version": 2, "name", "size", "chunk_size"}          ->
    chunk, chunk, ... (raw bytes, each 1..chunk_size, ``size`` bytes in all)      ->
    trailer {"type": "end", "sha256": "<64 lowercase hex>"}                       ->
       or   {"type": "end", "sha256": null, "error": "<why the sender aborted>"}  ->
                 <- verdict {"type": "verdict", "name", "ok", "sha256", "error", "stored_as"}

then the next file, or a graceful close.

Header
    UTF-8 JSON object of at most 4 KiB (``MAX_HEADER_SIZE``), brackets nested at
    most 4 deep (``MAX_JSON_DEPTH``; a header is flat).  ``version`` is the
    integer 2 (a receiver refuses any other); ``name`` a string (see *Names*);
    ``size`` an integer 0..2**63-1; ``chunk_size`` an integer 1024..1 MiB, the
    largest chunk that follows.  Unknown fields are ignored.
Chunks
    Each chunk is one message of 1..``chunk_size`` bytes; together exactly
    ``size`` bytes (none for an empty file).  Anything else is a protocol error.
Trailer
    UTF-8 JSON object of at most 4 KiB (``MAX_TRAILER_SIZE``), flat like the
    header, right after the last chunk.  ``sha256`` is 64 lowercase hex digits,
    the digest of the ``size`` bytes sent; or ``null`` with ``error``, a string
    saying why the sender aborted the file, which the receiver then discards.
    A missing or malformed trailer is a protocol error.
Verdict
    UTF-8 JSON object of at most 64 KiB.  ``name`` echoes the header's name
    (``""`` for a verdict about the connection rather than a file); ``ok`` is
    true only if the receiver stored the file and its SHA-256 matched;
    ``sha256`` is the digest of what it received (``null`` if it refused the
    file before reading it); ``error`` says why not, in words meant for the
    user; ``stored_as`` (with ``ok``) is the name the file was stored under.

The sender reports success only after the receiver's verdict says the SHA-256
of what it wrote matches the trailer: rudp's CRC-32 guards each datagram, the
SHA-256 guards the whole file (disk, a bug anywhere in between).

The digest comes last because the sender computes it while it sends: the first
byte leaves at once, and the file is read once (version 1 put it in the header,
which cost a whole extra read of the file before anything moved).  A file
modified while being sent is still never stored: the sender compares
``os.fstat`` (size, modification and change times, inode) after the last chunk
with what it was when the file was opened, and if they differ sends the
trailer with ``error`` "file changed while being sent" instead of a digest.  A
file that ends before its announced size is made up to it with zeros (so the
next file lines up) and aborted the same way: "file shrank while being sent".

Refusals and errors
    A file the receiver refuses (a bad name, no room, an I/O error such as
    ``ENOSPC`` while writing, a digest mismatch, a trailer with ``error``) is
    answered at once with an error verdict -- ``"receiver's disk is full: ..."``
    for ``ENOSPC`` -- and whatever is left of it (chunks, the trailer) is read
    and discarded, so the next file lines up.  A protocol error (a header or
    trailer that does not parse or validate, a chunk that does not fit the
    header, a close before the trailer) is answered with an error verdict where
    possible and ends the connection.  A connection-level refusal (the
    receiver is busy, the connection idled out) is a verdict with an empty name
    followed by the close; a sender whose send fails reads it from what already
    arrived and reports it instead of "peer closed".

Names
    The sender never chooses where a file lands.  A name is accepted only if
    it is a non-empty string of printable characters (no NUL, no control
    characters, no lone surrogates), encodable as UTF-8 within the directory's
    ``NAME_MAX`` (``os.pathconf``, else 255 bytes), without ``/`` or ``\\``
    or a drive letter, and not starting with ``.`` (no dotfiles such as
    ``.bashrc``, no ``..``).  Anything else is refused with the reason.
Existing files
    The receiver never replaces a file unless run with ``overwrite`` (``rudp
    recv --overwrite``).  A name that exists gets the first free ``name (1).ext``,
    ``name (2).ext``, ... (the number goes before the extension, ``.tar.gz``
    kept whole; at most 9999).  The choice is atomic (a hard link that fails if
    the name exists), so two connections storing the same name at once cannot
    collide either.  Two files of one name on one connection never collapse
    into one, even with ``overwrite``: the second is numbered like an existing
    name.  The verdict's ``stored_as`` tells the sender the name used.

Streaming and durability
    The sender reads one chunk at a time (``Connection.send`` blocks while the
    send buffer is full) and hashes it on the way; the receiver writes each
    chunk to ``DIR/.NAME.partial-XXXXXXXX``, fsyncs, and gives it its final
    name only after the trailer's digest matched.  A failed or interrupted
    transfer deletes the partial file, so a file under its final name is always
    complete and verified; partial files a killed receiver left behind are
    removed by :func:`remove_stale_partials` when it starts again.
Many senders
    :func:`serve` gives each connection its own thread, at most
    ``max_senders`` (16) at once; one more is answered "receiver busy" and
    closed.  A connection that delivers no message for ``idle_timeout``
    (30 s) is told so and closed: keepalive pings do not count.

Modules: :mod:`.protocol` (messages, limits, name checks), :mod:`.sending`,
:mod:`.receiving`, :mod:`.server`.
"""

from __future__ import annotations

from rudp.apps.filetransfer.protocol import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_HEADER_SIZE,
    MAX_JSON_DEPTH,
    MAX_TRAILER_SIZE,
    MIN_CHUNK_SIZE,
    PROTOCOL_VERSION,
    FileHeader,
    FileTrailer,
    IdleTimeout,
    TransferError,
    Verdict,
    check_name,
    file_sha256,
    show_name,
)
from rudp.apps.filetransfer.receiving import (
    PARTIAL_MARK,
    numbered_name,
    receive_files,
    remove_stale_partials,
)
from rudp.apps.filetransfer.sending import (
    FileTransferResult,
    MessageConnection,
    Progress,
    ProgressFactory,
    send_file,
    send_files,
)
from rudp.apps.filetransfer.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SENDERS,
    serve,
)

safe_name = check_name
"""The name check under its former name (it no longer reduces ``dir/x`` to ``x``: it refuses)."""

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_SENDERS",
    "MAX_CHUNK_SIZE",
    "MAX_HEADER_SIZE",
    "MAX_JSON_DEPTH",
    "MAX_TRAILER_SIZE",
    "MIN_CHUNK_SIZE",
    "PARTIAL_MARK",
    "PROTOCOL_VERSION",
    "FileHeader",
    "FileTrailer",
    "FileTransferResult",
    "IdleTimeout",
    "MessageConnection",
    "Progress",
    "ProgressFactory",
    "TransferError",
    "Verdict",
    "check_name",
    "file_sha256",
    "numbered_name",
    "receive_files",
    "remove_stale_partials",
    "safe_name",
    "send_file",
    "send_files",
    "serve",
    "show_name",
]
