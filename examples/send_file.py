"""Send one file with the blocking connection API (``rudp.connect``).

    python examples/recv_file.py OUTPUT_DIR        # in one terminal (prints its address)
    python examples/send_file.py PATH HOST:PORT     # in another

It speaks the same little protocol as ``rudp send`` / ``rudp recv`` (see
``rudp/apps/filetransfer/``), so either half also works with the CLI:

1. a JSON header message: name, size, chunk size;
2. the file's bytes as chunk messages -- rudp delivers each message whole, in
   order and exactly once, so no framing, sequence numbers or retries here;
3. a JSON trailer with the SHA-256, computed while the chunks went out (so the
   file is read once and the first byte leaves at once);
4. the receiver answers with a JSON verdict; we exit 0 only if it confirms the
   SHA-256.

``Connection.send`` returns as soon as the message is queued, and blocks only
while too many bytes are unacknowledged (back-pressure), so the file is
streamed from disk, one chunk at a time, never read whole into memory.
"""

import hashlib
import json
import os
import sys

import rudp

CHUNK = 256 * 1024


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: send_file.py PATH HOST:PORT", file=sys.stderr)
        return 2
    path, target = sys.argv[1], sys.argv[2]
    host, _, port = target.rpartition(":")
    size = os.path.getsize(path)

    # The handshake happens here; peer_timeout bounds how long a silent peer is
    # tolerated once connected (rudp.PeerUnreachable is raised after it).
    with rudp.connect((host, int(port)), timeout=10.0, peer_timeout=15.0) as conn:
        header = {
            "type": "file",
            "version": 2,
            "name": os.path.basename(path),
            "size": size,
            "chunk_size": CHUNK,
        }
        conn.send(json.dumps(header).encode())
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                conn.send(block)  # blocks only while the send buffer is full
        # (``rudp send`` also checks that the file did not change meanwhile, and
        # sends "sha256": null with an "error" if it did.)
        conn.send(json.dumps({"type": "end", "sha256": digest.hexdigest()}).encode())

        verdict = json.loads(conn.recv())  # the receiver's answer
        # Leaving the ``with`` block closes gracefully (FIN after all data).

    if verdict.get("ok") and verdict.get("sha256") == digest.hexdigest():
        print(f"sent {path} ({size} bytes), sha256 confirmed by the receiver")
        return 0
    print(f"receiver refused {path}: {verdict.get('error')}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except rudp.PeerUnreachable as exc:
        # .undelivered holds the messages the peer never acknowledged.
        print(f"peer unreachable: {len(exc.undelivered)} messages undelivered", file=sys.stderr)
        sys.exit(1)
