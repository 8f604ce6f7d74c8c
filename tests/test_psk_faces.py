"""The pre-shared-key mode (``psk=``, ``--psk-file``) through every public face, on loopback.

``rudp.connect``/``rudp.listen``, ``rudp.socket`` and ``rudp.aio`` over real sockets, and
the ``rudp`` command in subprocesses (specs/protocol.md sections 3.7, 6.8 and 17.6).  With
the same key both sides exchange messages as without one; with different keys, or a key on
one side only, the handshake never completes: the client fails with ``PeerUnreachable``
once its small handshake budget (``FAIL_FAST``) is spent and the server accepts nothing.
Every wait is bounded by a face's timeout argument or a subprocess deadline; no sleeps.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_aio import FAST, echo, run
from test_cli import LISTENING, CliProc, make_file, sha256
from test_cli import procs as procs  # the fixture: kills what a test started

import rudp
import rudp.aio
from rudp.apps import cli
from rudp.core import wire
from rudp.errors import ConnectionReset, PeerUnreachable
from rudp.events import FailureKind
from rudp.psk import PSK_FILE_ENV, load_psk, write_psk_file

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
WAIT = 10.0
"""Generous bound for any blocking call on loopback."""
FAIL_FAST = {"max_retransmits": 2, "initial_rto": 0.05}
"""A handshake budget of about 0.35 s (0.05 + 0.1 + 0.2): a refused client fails fast."""
FAIL_WITHIN = 5.0
"""What ``FAIL_FAST`` must take at most, with room for a loaded machine."""
KEYED = "only senders holding the pre-shared key can connect"

MISMATCHES = pytest.mark.parametrize(
    ("client_key", "server_key"),
    [(KEY, OTHER_KEY), (KEY, None), (None, KEY)],
    ids=["other-key", "unkeyed-server", "unkeyed-client"],
)


@pytest.fixture(autouse=True)
def _no_inherited_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``$RUDP_PSK_FILE`` of the developer's must not key the unkeyed subprocesses."""
    monkeypatch.delenv(PSK_FILE_ENV, raising=False)


# --- rudp.connect / rudp.listen -------------------------------------------------------


def test_same_key_delivers_both_ways_exactly_once_in_order() -> None:
    # Sizes from empty to several datagrams: sealed fragments must fit the datagram size.
    sizes = [0, 1, 100, 1300, 1400, 5000, 20_000]
    requests = [bytes([i % 251]) * sizes[i % len(sizes)] + b"%d" % i for i in range(150)]
    replies = [b"re:" + message[-8:] for message in requests]
    with (
        rudp.listen(("127.0.0.1", 0), psk=KEY) as listener,
        rudp.connect(listener.address, timeout=WAIT, psk=KEY) as client,
        listener.accept(timeout=WAIT) as server,
    ):
        for message in requests:
            client.send(message)
        assert [server.recv(timeout=WAIT) for _ in requests] == requests
        for message in replies:
            server.send(message)
        assert [client.recv(timeout=WAIT) for _ in replies] == replies
        client.flush(timeout=WAIT)
        server.flush(timeout=WAIT)
        for conn in (client, server):  # exactly once: nothing more is queued
            with pytest.raises(rudp.Timeout):
                conn.recv(timeout=0.05)
        client_stats, server_stats = client.stats, server.stats
    for stats, delivered in ((server_stats, requests), (client_stats, replies)):
        assert stats.messages_delivered == len(delivered)
        assert stats.datagrams_unauthenticated == 0
        assert stats.replays_dropped == 0
        assert stats.datagrams_received > 0
    assert server_stats.data_packets_received >= len(requests)
    assert client_stats.messages_acked == len(requests)
    assert server_stats.messages_acked == len(replies)


@MISMATCHES
def test_without_the_same_key_connect_fails_and_nothing_is_accepted(
    client_key: bytes | None, server_key: bytes | None
) -> None:
    with rudp.listen(("127.0.0.1", 0), psk=server_key) as listener:
        started = time.monotonic()
        with pytest.raises(PeerUnreachable) as info:
            rudp.connect(listener.address, timeout=WAIT, psk=client_key, **FAIL_FAST)
        assert time.monotonic() - started < FAIL_WITHIN
        assert info.value.kind is FailureKind.UNREACHABLE
        assert info.value.undelivered == ()
        with pytest.raises(rudp.Timeout):
            listener.accept(timeout=0.2)
        # The refused handshakes left the listener working for a client with its key.
        with rudp.connect(listener.address, timeout=WAIT, psk=server_key) as good:
            with listener.accept(timeout=WAIT) as server:
                good.send(b"with the right key")
                assert server.recv(timeout=WAIT) == b"with the right key"
            with pytest.raises(rudp.Timeout):  # the refused client never got in
                listener.accept(timeout=0.05)


def test_the_key_is_not_in_a_config_repr() -> None:
    text = repr(rudp.Config(psk=KEY))
    assert "psk" not in text and KEY.hex() not in text and repr(KEY) not in text


# --- injection on real sockets (spec section 3.7-2) -------------------------------------


def _forgeries(server: rudp.Connection, client: rudp.Connection) -> dict[str, bytes]:
    """What an attacker who sees the traffic would send the server: plaintext packets with
    the server's connection id (in clear even in sealed headers), the sequence number it
    expects next, the ack fields of the client's latest datagram (its cumulative ack and
    the server's largest packet number) and the client's reset token (visible without a
    key, sealed with one)."""
    engine = server._assoc.connection
    with server._engine.cond:  # read while the I/O thread cannot change them
        connection_id = engine.local_connection_id
        seq = engine._receiver.rcv_next
        sender = engine._sender
        acks = wire.AckFields(sender.snd_una, 64, sender.recovery.next_pn - 1, 0)
        token = engine._opening.peer_reset_token
    assert connection_id == client._assoc.connection.remote_connection_id
    number = 1 << 20  # a packet number above any the client has used yet
    kinds = wire.PacketType
    return {
        "DATA": wire.encode_fields(kinds.DATA, 0, connection_id, number, seq, acks, b"forged"),
        "FIN": wire.encode_fields(kinds.FIN, 0, connection_id, number, seq, acks),
        "RESET": wire.encode_fields(kinds.RESET, 0, connection_id, number, seq, acks, token),
    }


def _inject(datagrams: list[bytes], address: Any) -> None:
    """Send ``datagrams`` from a UDP socket of their own, before the caller's next send.

    On loopback ``sendto`` queues the datagram on the receiving socket before it returns,
    so the server reads these before anything the client sends afterwards."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.bind(("127.0.0.1", 0))
        for datagram in datagrams:
            attacker.sendto(datagram, address)


@contextlib.contextmanager
def _pair(key: bytes | None) -> Iterator[tuple[rudp.Connection, rudp.Connection, Any]]:
    """A connected client and server; closes that fail (a forged reset) are not errors."""
    with rudp.listen(("127.0.0.1", 0), psk=key) as listener:
        client = rudp.connect(listener.address, timeout=WAIT, psk=key, linger=0.5, close_linger=0.2)
        try:
            server = listener.accept(timeout=WAIT)
            server.linger = 0.5
            try:
                yield client, server, listener.address
            finally:
                with contextlib.suppress(rudp.ConnectionFailed):
                    server.close()
        finally:
            with contextlib.suppress(rudp.ConnectionFailed):
                client.close()


def test_plaintext_forgeries_are_dropped_on_a_keyed_connection() -> None:
    with _pair(KEY) as (client, server, address):
        client.send(b"one")
        assert server.recv(timeout=WAIT) == b"one"
        before = server.stats.datagrams_unauthenticated
        _inject(list(_forgeries(server, client).values()), address)
        client.send(b"two")  # takes the sequence number the forged DATA and FIN claimed
        assert server.recv(timeout=WAIT) == b"two"
        client.flush(timeout=WAIT)  # not reset: the forged RESET changed nothing
        server.send(b"still open")
        assert client.recv(timeout=WAIT) == b"still open"
        assert server.stats.datagrams_unauthenticated == before + 3
        assert client.stats.datagrams_unauthenticated == 0


@pytest.mark.parametrize("kind", ["DATA", "FIN", "RESET"])
def test_the_same_forgeries_work_without_a_key(kind: str) -> None:
    """The control for the test above: each forged packet is valid, so only the key stops
    it (spec section 17.4: without a key an on-path attacker can inject, close, reset)."""
    with _pair(None) as (client, server, address):
        client.send(b"one")
        assert server.recv(timeout=WAIT) == b"one"
        _inject([_forgeries(server, client)[kind]], address)
        client.send(b"two")  # a duplicate of the forged DATA or FIN now
        if kind == "DATA":
            assert server.recv(timeout=WAIT) == b"forged"
        else:
            expected = ConnectionReset if kind == "RESET" else rudp.ConnectionClosed
            with pytest.raises(expected):
                server.recv(timeout=WAIT)
        assert server.stats.datagrams_unauthenticated == 0


# --- rudp.socket ------------------------------------------------------------------------


def test_socket_round_trip_with_the_same_key() -> None:
    with rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM, psk=KEY) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(WAIT)
        with rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM, psk=KEY) as client:
            client.settimeout(WAIT)
            client.sendto(b"Hello!!", server.getsockname())
            data, address = server.recvfrom(1024)
            assert data == b"Hello!!"
            server.sendto(b"Your data was %d bytes" % len(data), address)
            assert client.recvfrom(1024) == (b"Your data was 7 bytes", server.getsockname())
            client.flush(WAIT)
        assert client.undelivered == ()


@MISMATCHES
def test_socket_without_the_same_key_reports_the_message_undelivered(
    client_key: bytes | None, server_key: bytes | None
) -> None:
    with rudp.socket(psk=server_key) as server:
        server.bind(("127.0.0.1", 0))
        with rudp.socket(psk=client_key, linger=0, **FAIL_FAST) as client:
            client.sendto(b"refused", server.getsockname())
            with pytest.raises(PeerUnreachable) as info:
                client.flush(FAIL_WITHIN)
            assert info.value.undelivered == (b"refused",)
        server.settimeout(0.1)
        with pytest.raises(rudp.Timeout):
            server.recvfrom(1024)


# --- rudp.aio ---------------------------------------------------------------------------


def test_aio_round_trip_with_the_same_key() -> None:
    async def main() -> Any:
        async with rudp.aio.serve(echo, "127.0.0.1", 0, psk=KEY, **FAST) as server:
            conn = await rudp.aio.connect(server.address, timeout=WAIT, psk=KEY, **FAST)
            async with conn:
                await conn.send(b"ping")
                assert await conn.recv() == b"ping"
                await conn.flush()
                return conn.stats

    stats = run(main)
    assert stats.messages_delivered == 1 and stats.messages_acked == 1
    assert stats.datagrams_unauthenticated == 0


@MISMATCHES
def test_aio_without_the_same_key_connect_fails(
    client_key: bytes | None, server_key: bytes | None
) -> None:
    handled: list[rudp.aio.Connection] = []

    async def record(conn: rudp.aio.Connection) -> None:
        handled.append(conn)

    async def main() -> None:
        async with rudp.aio.serve(record, "127.0.0.1", 0, psk=server_key, **FAST) as server:
            with pytest.raises(PeerUnreachable):
                await rudp.aio.connect(
                    server.address, timeout=WAIT, psk=client_key, **FAST, **FAIL_FAST
                )
            assert server.connections == []

    run(main, timeout=FAIL_WITHIN + WAIT)
    assert handled == []


# --- the rudp command -------------------------------------------------------------------


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    write_psk_file(path, KEY)
    return path


def test_genpsk_creates_a_private_key_file_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.key"
    assert cli.main(["genpsk", str(path)]) == 0
    assert capsys.readouterr().err.startswith(f"rudp: wrote a new pre-shared key to {path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_psk(path)
    assert len(key) == 32 and key != bytes(32)
    content = path.read_bytes()

    assert cli.main(["genpsk", str(path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("rudp: cannot write") and str(path) in err
    assert path.read_bytes() == content

    other = tmp_path / "other.key"
    assert cli.main(["genpsk", str(other)]) == 0
    assert load_psk(other) != key  # a fresh key each time


def _receiver(out: Path, *options: str, env: dict[str, str] | None = None) -> CliProc:
    args = ["recv", "--listen", "127.0.0.1:0", "--output", str(out), "--once", "-q"]
    return CliProc([sys.executable, "-m", "rudp", *args, *options], env)


def _keyed_receiver(
    tmp_path: Path, procs: list[CliProc], *options: str, env: dict[str, str] | None = None
) -> tuple[Path, CliProc, int]:
    """A ``recv --once`` into a fresh ``out`` folder, listening with a key: (out, it, port)."""
    out = tmp_path / "out"
    out.mkdir()
    receiver = _receiver(out, "--timeout", "60s", *options, env=env)
    procs.append(receiver)
    port = receiver.port()
    receiver.wait_for(re.escape(KEYED))
    return out, receiver, port


def _sender(src: Path, port: int, *options: str, env: dict[str, str] | None = None) -> CliProc:
    args = ["send", str(src), f"127.0.0.1:{port}", "-q"]
    return CliProc([sys.executable, "-m", "rudp", *args, *options], env)


@pytest.mark.parametrize("via", ["flag", "env"])
def test_cli_transfer_with_the_key(
    tmp_path: Path, key_path: Path, procs: list[CliProc], via: str
) -> None:
    src = make_file(tmp_path / "data.bin", 300_000, seed=5)
    flag = ("--psk-file", str(key_path)) if via == "flag" else ()
    env = {PSK_FILE_ENV: str(key_path)} if via == "env" else None
    out, receiver, port = _keyed_receiver(tmp_path, procs, *flag, env=env)
    sender = _sender(src, port, *flag, env=env)
    procs.append(sender)
    assert sender.finish(60) == 0, sender.text
    assert "sha256 verified by the receiver" in sender.text
    assert receiver.finish(30) == 0, receiver.text
    assert os.listdir(out) == ["data.bin"]
    assert sha256(out / "data.bin") == sha256(src)


@pytest.mark.parametrize("sender_key", ["none", "other"])
def test_cli_sender_without_the_key_fails_and_nothing_is_stored(
    tmp_path: Path, key_path: Path, procs: list[CliProc], sender_key: str
) -> None:
    src = make_file(tmp_path / "data.bin", 50_000, seed=6)
    out, receiver, port = _keyed_receiver(tmp_path, procs, "--psk-file", str(key_path))
    key_option: tuple[str, ...] = ()
    if sender_key == "other":
        other = tmp_path / "other.key"
        write_psk_file(other, OTHER_KEY)
        key_option = ("--psk-file", str(other))
    budget = ["-o", f"max_retransmits={FAIL_FAST['max_retransmits']}"]
    budget += ["-o", f"initial_rto={FAIL_FAST['initial_rto']}"]
    sender = _sender(src, port, "--connect-timeout", "5s", *budget, *key_option)
    procs.append(sender)
    assert sender.finish(30) == 1, sender.text
    assert re.search(
        r"^rudp: could not connect to 127\.0\.0\.1:\d+: peer unreachable", sender.text, re.M
    )
    assert "verified" not in sender.text
    assert receiver.terminate() == 0, receiver.text
    assert os.listdir(out) == []
    assert "received" not in receiver.text


DEFECTS = {
    "world-readable": (KEY.hex() + "\n", 0o644, "other users"),
    "group-readable": (KEY.hex() + "\n", 0o640, "other users"),
    "malformed": ("not a key\n", 0o600, "does not hold a key"),
    "short": (KEY.hex()[:-2] + "\n", 0o600, "does not hold a key"),
}


@pytest.mark.parametrize("command", ["send", "recv"])
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_cli_bad_key_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, defect: str
) -> None:
    content, mode, reason = DEFECTS[defect]
    path = tmp_path / "bad.key"
    path.write_text(content)
    os.chmod(path, mode)
    out = tmp_path / "out"
    out.mkdir()
    if command == "send":
        src = make_file(tmp_path / "data.bin", 1000)
        argv = ["send", str(src), "127.0.0.1:9", "--psk-file", str(path)]
    else:
        argv = ["recv", "--listen", "127.0.0.1:0", "--output", str(out), "--psk-file", str(path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rudp: ") and str(path) in err and reason in err
    assert os.listdir(out) == []


@pytest.mark.parametrize("command", ["send", "recv"])
def test_cli_bad_key_file_from_the_environment_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    missing = tmp_path / "missing.key"
    monkeypatch.setenv(PSK_FILE_ENV, str(missing))
    src = make_file(tmp_path / "data.bin", 1000)
    if command == "send":
        argv = ["send", str(src), "127.0.0.1:9"]
    else:
        argv = ["recv", "--listen", "127.0.0.1:0", "--output", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rudp: cannot read the key file") and str(missing) in err


def test_cli_key_file_flag_wins_over_the_environment(
    tmp_path: Path, key_path: Path, procs: list[CliProc]
) -> None:
    """``--psk-file`` is used when given, so a stale ``$RUDP_PSK_FILE`` does not matter."""
    out, receiver, port = _keyed_receiver(tmp_path, procs, "--psk-file", str(key_path))
    src = make_file(tmp_path / "data.bin", 10_000, seed=7)
    stale = {PSK_FILE_ENV: str(tmp_path / "missing.key")}
    sender = _sender(src, port, "--psk-file", str(key_path), env=stale)
    procs.append(sender)
    assert sender.finish(60) == 0, sender.text
    assert receiver.finish(30) == 0, receiver.text
    assert sha256(out / "data.bin") == sha256(src)


def test_recv_without_a_key_does_not_claim_one(tmp_path: Path, procs: list[CliProc]) -> None:
    receiver = _receiver(tmp_path, "--timeout", "0.5s")
    procs.append(receiver)
    receiver.wait_for(LISTENING)
    assert receiver.finish(30) == 1  # --once and nothing came
    assert KEYED not in receiver.text
