"""``make demo``: an 8 MB file through a 10%-loss network, verified end to end.

What it does, all on loopback with ephemeral ports and bounded in time:

1. writes 8 MB of random bytes in a temporary directory;
2. starts a receiver (``rudp recv --once``) and the lossy proxy (``rudp proxy
   --loss 0.1``) as subprocesses, each on a port the OS picks;
3. sends the file through the proxy with the connection API (``rudp.connect``
   plus ``rudp.apps.filetransfer.send_file``);
4. prints the goodput, the retransmissions, the proxy's drop counts and whether
   the received file's SHA-256 matches; exits non-zero on any failure.

Options: ``--size MB`` (default 8), ``--loss P`` (default 0.1), ``--delay``
(default 0ms), ``--seed N`` (default 1), ``--timeout S`` (default 180).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rudp
from rudp.apps import filetransfer

ADDRESS = re.compile(r"listening on (\S+):(\d+)")


def start(args: list[str]) -> tuple[subprocess.Popen[str], int]:
    """Start ``python -m rudp ARGS`` and read the port it announces on stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rudp", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the first line names the address (or the error)
    match = ADDRESS.search(line)
    if match is None:
        proc.kill()
        raise SystemExit(f"demo: could not start rudp {args[0]}: {line.strip()}")
    return proc, int(match.group(2))


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM (a clean stop for both commands), then collect stderr; bounded."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=float, default=8.0, help="file size in MB")
    parser.add_argument("--loss", default="0.1", help="loss probability per datagram")
    parser.add_argument("--delay", default="0ms", help="one-way delay, e.g. 5ms")
    parser.add_argument("--seed", default="1")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this long")
    opts = parser.parse_args()

    # A hard bound on the whole demo, whatever happens below.
    watchdog = threading.Timer(opts.timeout, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()

    with tempfile.TemporaryDirectory(prefix="rudp-demo-") as tmp:
        src = Path(tmp, "random.bin")
        with open(src, "wb") as f:
            left = int(opts.size * 1_000_000)
            while left:
                block = os.urandom(min(left, 1 << 20))
                f.write(block)
                left -= len(block)
        out = Path(tmp, "received")
        out.mkdir()
        print(f"demo: {src.stat().st_size / 1e6:.1f} MB of random bytes, {opts.loss} loss")

        receiver, recv_port = start(
            ["recv", "--listen", "127.0.0.1:0", "--output", str(out), "--once", "-q",
             "--timeout", f"{opts.timeout}s"]
        )  # fmt: skip
        proxy, proxy_port = start(
            ["proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{recv_port}",
             "--loss", opts.loss, "--delay", opts.delay, "--seed", opts.seed]
        )  # fmt: skip
        print(f"demo: receiver on port {recv_port}, lossy proxy on port {proxy_port}")
        ok = False
        try:
            started = time.monotonic()
            with rudp.connect(("127.0.0.1", proxy_port), timeout=10, peer_timeout=20) as conn:
                result = filetransfer.send_file(conn, src)
                stats = conn.stats
            elapsed = time.monotonic() - started
            received = out / src.name
            ok = received.is_file() and filetransfer.file_sha256(received) == result.sha256
            print(f"demo: goodput {result.size / elapsed / 1e6:.2f} MB/s ({elapsed:.1f} s)")
            print(
                f"demo: {stats.data_packets_sent} data packets sent, "
                f"{stats.retransmissions} retransmissions "
                f"({stats.fast_retransmits} fast, {stats.timeouts} timeouts)"
            )
        except (rudp.RudpError, OSError) as exc:
            print(f"demo: transfer failed: {exc}", file=sys.stderr)
        finally:
            if ok:  # the receiver exits by itself once its verdict is acknowledged
                with contextlib.suppress(subprocess.TimeoutExpired):
                    receiver.wait(timeout=15)
            recv_log = stop(receiver)
            proxy_log = stop(proxy)
        drops = re.findall(r"dropped_loss (\d+)", proxy_log)
        print(f"demo: the proxy dropped {' + '.join(drops) or '?'} datagrams (data + acks)")
        if not ok:
            print(recv_log.strip(), file=sys.stderr)
        print(f"demo: SHA-256 {'matched' if ok else 'DID NOT MATCH'}")
    watchdog.cancel()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
