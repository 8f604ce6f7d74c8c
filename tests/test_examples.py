"""Every example in examples/ runs to completion on loopback, bounded in time.

Servers are started with ``RUDP_EXAMPLE_PORT=0`` and announce the port the OS
picked; the one example that prints nothing before receiving (hello_recv.py)
gets a port found free just before.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from subprocs import ROOT, Proc

EXAMPLES = ROOT / "examples"


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop_quietly()


def run(procs: list[Proc], *args: str, port: int | None = None) -> Proc:
    env = {"RUDP_EXAMPLE_BIND": "127.0.0.1"}
    if port is not None:
        env["RUDP_EXAMPLE_PORT"] = str(port)
    proc = Proc([sys.executable, *args], env)
    procs.append(proc)
    return proc


def announced_port(proc: Proc, pattern: str) -> int:
    """Parse the address tuple a server prints, e.g. "Listening at ('127.0.0.1', 4242)"."""
    match = proc.wait_for(pattern + r"\s*(\(.*\))")
    address = ast.literal_eval(match.group(1))
    return int(address[1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hello_send_and_receive(procs: list[Proc]) -> None:
    port = free_port()
    receiver = run(procs, "examples/hello_recv.py", port=port)
    sender = run(procs, "examples/hello_send.py", port=port)
    assert sender.finish() == 0, sender.text
    assert receiver.finish() == 0, receiver.text
    assert receiver.out == ["b'Hello!!'\n"]


def test_udp_local(procs: list[Proc]) -> None:
    server = run(procs, "examples/udp_local.py", "server", port=0)
    port = announced_port(server, "Listening at")
    client = run(procs, "examples/udp_local.py", "client", port=port)
    assert client.finish() == 0, client.text
    assert client.out[0] == "Address before sending: ('0.0.0.0', 0)\n"
    assert client.out[-1] == f"The server ('127.0.0.1', {port}) says b'Your data was 18 bytes'\n"
    server.wait_for(r"The client at \('127.0.0.1', \d+\) says b'This is my message'")


def test_udp_remote_client_backs_off_while_the_server_pretends_to_drop(
    procs: list[Proc],
) -> None:
    # The server drops at random; seed 4 makes it drop the first request and
    # answer the second (random.randint(0, 1) gives 0, then 1), so both paths run.
    # The example itself stays untouched: it is run through runpy.
    launcher = (
        "import random, runpy, sys; random.seed(4); "
        "sys.argv = ['udp_remote.py', 'server', '127.0.0.1']; "
        "runpy.run_path('examples/udp_remote.py', run_name='__main__')"
    )
    server = run(procs, "-c", launcher, port=0)
    port = announced_port(server, "Listening at")
    client = run(procs, "examples/udp_remote.py", "client", "127.0.0.1", port=port)
    assert client.finish() == 0, client.text
    # The first request is dropped, so the client waits 0.1 s, then 0.2 s (more
    # waits only if this machine is slow to answer the second request).
    waits = [line for line in client.out if line.startswith("Waiting up to")]
    assert waits[:2] == [
        "Waiting up to 0.1 seconds for a reply\n",
        "Waiting up to 0.2 seconds for a reply\n",
    ]
    assert client.out[-1] == "The server says b'Your data was 23 bytes'\n"
    server.wait_for(r"Pretending to drop packet from \('127.0.0.1', \d+\)")
    server.wait_for(r"says: b'This is another message'")


def test_udp_remote_usage(procs: list[Proc]) -> None:
    usage = run(procs, "examples/udp_remote.py")
    assert usage.finish() == 2
    assert "usage: udp_remote.py" in usage.text


def test_send_file_and_recv_file(tmp_path: Path, procs: list[Proc]) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    out = tmp_path / "out"
    out.mkdir()
    receiver = run(procs, "examples/recv_file.py", str(out), port=0)
    port = announced_port(receiver, "Listening at")
    sender = run(procs, "examples/send_file.py", str(src), f"127.0.0.1:{port}")
    assert sender.finish() == 0, sender.text
    assert receiver.finish() == 0, receiver.text
    assert "sha256 confirmed" in sender.text
    assert os.listdir(out) == ["payload.bin"]
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert hashlib.sha256((out / "payload.bin").read_bytes()).hexdigest() == digest


def test_send_file_example_talks_to_the_cli_receiver(tmp_path: Path, procs: list[Proc]) -> None:
    src = tmp_path / "doc.txt"
    src.write_bytes(b"interoperable\n" * 1000)
    out = tmp_path / "out"
    out.mkdir()
    receiver = run(procs, "-m", "rudp", "recv", "--listen", "127.0.0.1:0", "--output", str(out),
                   "--once", "-q")  # fmt: skip
    port = int(receiver.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
    sender = run(procs, "examples/send_file.py", str(src), f"127.0.0.1:{port}")
    assert sender.finish() == 0, sender.text
    assert receiver.finish() == 0, receiver.text
    assert (out / "doc.txt").read_bytes() == src.read_bytes()


def test_recv_file_example_takes_a_file_from_the_cli_sender(
    tmp_path: Path, procs: list[Proc]
) -> None:
    src = tmp_path / "cli.bin"
    src.write_bytes(os.urandom(300_000))
    out = tmp_path / "out"
    out.mkdir()
    receiver = run(procs, "examples/recv_file.py", str(out), port=0)
    port = announced_port(receiver, "Listening at")
    sender = run(procs, "-m", "rudp", "send", str(src), f"127.0.0.1:{port}", "-q")
    assert sender.finish() == 0, sender.text
    assert receiver.finish() == 0, receiver.text
    assert "sha256 ok" in receiver.text
    assert os.listdir(out) == ["cli.bin"]
    assert (out / "cli.bin").read_bytes() == src.read_bytes()


def test_aio_echo(procs: list[Proc]) -> None:
    server = run(procs, "examples/aio_echo_server.py", port=0)
    port = announced_port(server, "Serving on")
    client = run(procs, "examples/aio_echo_client.py", str(port))
    assert client.finish() == 0, client.text
    assert client.out[-1] == "all 4 messages echoed in order\n"
    assert "echoed 100000 bytes\n" in client.out


def test_demo_small(procs: list[Proc]) -> None:
    demo = run(procs, "examples/demo.py", "--size", "1", "--loss", "0.1", "--timeout", "100")
    assert demo.finish(110) == 0, demo.text
    assert "demo: SHA-256 matched" in demo.text
    assert re.search(r"goodput [0-9.]+ MB/s", demo.text)
    assert re.search(r"the proxy dropped \d+", demo.text)
