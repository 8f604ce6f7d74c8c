"""Restart detection on real loopback sockets (specs/protocol.md section 6.6).

``rudp recv`` (a subprocess) receives a large file; it is killed with SIGKILL mid-transfer
and restarted on the same port with the same static-key file.  The restarted receiver
has no state for the sender's connection, answers its next retransmission with a
stateless reset carrying the token announced before the crash, and the sender fails
with a reset error within a few seconds instead of after ``peer_timeout`` (30 s).

One test checks the restarted receiver's part alone (it answers with the token announced
before the crash), the other the whole story through the sender's failure.  No sleeps:
every wait is on process output, an event or a thread, with a timeout.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from subprocs import Proc

import rudp
from rudp.apps import filetransfer
from rudp.core import wire

LISTENING = re.compile(r"listening on \[?([^\]\s]+?)\]?:(\d+)")
FILE_SIZE = 256 * 1024 * 1024  # far more than the receiver gets before the kill
KILL_AFTER = 2 * 1024 * 1024


def _receiver(port: int, out: Path, env: dict[str, str]) -> Proc:
    args = [sys.executable, "-m", "rudp", "recv", "--listen", f"127.0.0.1:{port}"]
    return Proc([*args, "--output", str(out), "-q"], env)


def test_restarted_receiver_answers_with_the_token_it_announced(tmp_path: Path) -> None:
    """The part that needs no core support: same key file, same token after a restart."""
    env = {"RUDP_STATIC_KEY_FILE": str(tmp_path / "static-key")}
    (tmp_path / "out").mkdir()
    receiver = _receiver(0, tmp_path / "out", env)
    try:
        port = int(receiver.wait_for(LISTENING, timeout=20).group(2))
        with rudp.connect(("127.0.0.1", port), timeout=10, close_linger=0.1) as conn:
            remote = conn._assoc.connection.remote_connection_id
            token = conn._assoc.connection._opening.peer_reset_token
            receiver.popen.kill()
            receiver.finish(10)
            restarted = _receiver(port, tmp_path / "out", env)
            try:
                restarted.wait_for(LISTENING, timeout=20)
                # What the sender's next retransmission would draw:
                ack = wire.encode(wire.Packet(wire.PacketType.ACK, 0, remote, 1, 1, 64, 0, (), b""))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(10)
                    sock.sendto(ack, ("127.0.0.1", port))
                    reply, _ = sock.recvfrom(2048)
                packet = wire.decode(reply)
                assert packet.type is wire.PacketType.STATELESS_RESET
                assert packet.connection_id == remote and packet.payload == token
            finally:
                restarted.stop()
    finally:
        if receiver.popen.poll() is None:
            receiver.popen.kill()
        receiver.finish(10)


def test_sender_to_a_restarted_receiver_fails_fast(tmp_path: Path) -> None:
    """Section 6.6: kill -9 and restart the receiver; the sender fails with a reset, fast."""
    env = {"RUDP_STATIC_KEY_FILE": str(tmp_path / "static-key")}
    out = tmp_path / "out"
    out.mkdir()
    big = tmp_path / "big.bin"
    with big.open("wb") as file:
        file.truncate(FILE_SIZE)
    receiver = _receiver(0, out, env)
    restarted: Proc | None = None
    flowing = threading.Event()
    outcome: dict[str, Any] = {}

    class Bar:
        done = 0

        def update(self, n: int) -> None:
            self.done += n
            if self.done >= KILL_AFTER:
                flowing.set()

        def close(self) -> None:
            pass

    try:
        port = int(receiver.wait_for(LISTENING, timeout=20).group(2))

        def send() -> None:
            try:
                conn = rudp.connect(("127.0.0.1", port), timeout=10, peer_timeout=30.0)
                try:
                    filetransfer.send_files(conn, [big], progress=lambda name, total: Bar())
                finally:
                    outcome["ended"] = time.monotonic()
                    with contextlib.suppress(rudp.ConnectionFailed):  # raises the reset again
                        conn.close()
            except BaseException as exc:
                outcome["error"] = exc

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        assert flowing.wait(30), "the transfer never got going"
        receiver.popen.kill()  # SIGKILL: no close, no reset, state gone
        receiver.finish(10)
        killed = time.monotonic()
        restarted = _receiver(port, out, env)
        restarted.wait_for(LISTENING, timeout=20)
        listening = time.monotonic()
        sender.join(25)
        assert not sender.is_alive(), "the sender did not notice the restart"
        error = outcome.get("error")
        assert isinstance(error, rudp.ConnectionFailed), repr(error)
        assert not isinstance(error, rudp.PeerUnreachable), error  # a reset, not silence
        detection = outcome["ended"] - listening
        print(
            f"restart detected {detection:.3f} s after the restarted receiver listened "
            f"({outcome['ended'] - killed:.3f} s after the kill): {error!r}",
            file=sys.__stderr__,
        )
        assert outcome["ended"] - killed < 10.0  # today: peer_timeout, 30 s
    finally:
        for proc in (receiver, restarted):
            if proc is not None:
                if proc.popen.poll() is None:
                    proc.popen.kill()
                proc.finish(10)
