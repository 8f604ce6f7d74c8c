"""Receive one file with the blocking connection API (``rudp.listen``).

    python examples/recv_file.py OUTPUT_DIR

Listens on 127.0.0.1 at ``RUDP_EXAMPLE_PORT`` (default 1060; 0 picks a free
port) and prints the address.  The counterpart is ``send_file.py`` (or ``rudp
send``).  The file is written under a temporary name and renamed only after its
SHA-256 matched the sender's trailer (the message after the last chunk) -- a
file under its final name is always complete.  (The
``rudp recv`` command does the same, for many files and senders.)
"""

import hashlib
import json
import os
import sys
import tempfile

import rudp

PORT = int(os.environ.get("RUDP_EXAMPLE_PORT", "1060"))


def main() -> int:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    with rudp.listen(("127.0.0.1", PORT)) as listener:
        print("Listening at", listener.address, flush=True)
        conn = listener.accept()  # blocks until a sender completed the handshake
        with conn:
            header = json.loads(conn.recv())  # first message: the JSON header
            if header.get("version") != 2:
                raise SystemExit(f"unsupported file protocol version {header.get('version')!r}")
            # Never let the network choose the path: keep the bare file name.
            name = os.path.basename(header["name"])
            if name in ("", ".", ".."):
                raise SystemExit(f"refusing file name {header['name']!r}")

            digest = hashlib.sha256()
            fd, partial = tempfile.mkstemp(prefix=f".{name}.partial-", dir=out_dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    remaining = header["size"]
                    while remaining > 0:
                        chunk = conn.recv()  # one whole chunk message, in order
                        f.write(chunk)
                        digest.update(chunk)
                        remaining -= len(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                # The trailer: the sender's SHA-256, or null and an "error" if it gave up.
                trailer = json.loads(conn.recv())
                ok = digest.hexdigest() == trailer["sha256"]
                if ok:
                    os.replace(partial, os.path.join(out_dir, name))
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)  # mismatch or failure: no partial file left

            verdict = {"type": "verdict", "name": header["name"], "ok": ok}
            error = None if ok else trailer.get("error") or "sha256 mismatch"
            verdict.update(sha256=digest.hexdigest(), error=error)
            conn.send(json.dumps(verdict).encode())
            conn.flush()  # make sure the sender has the verdict before we close
    print(f"received {name} ({header['size']} bytes), sha256 {'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
