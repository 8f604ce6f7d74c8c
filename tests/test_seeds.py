"""The seed programs run unchanged on rudp: only the socket constructor line differs.

Python 3 renditions of the programs in /work/shared/seeds/: the "Hello!!"
sender/receiver (seed 000) and *Foundations of Python Network Programming*
chapter 2's ``udp_local.py`` (client/server) and ``udp_remote.py`` (a client
with its own 0.1 s doubling backoff that gives up above 2.0 s, and a server that
drops requests at random at the application level).  Each is written for plain
UDP; ``to_rudp`` derives the rudp version by swapping the constructor (and
importing rudp), and a test checks that nothing else changed.  The scripts run
as subprocesses on loopback with an ephemeral port given on the command line.
"""

from __future__ import annotations

import difflib
import os
import queue
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

WAIT = 30.0
ROOT = Path(__file__).resolve().parent.parent

HELLO_RECEIVER = """\
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", int(sys.argv[1])))
data, address = s.recvfrom(1024)
print(data)
s.close()
"""

HELLO_SENDER = """\
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(("Hello!!").encode(), ("127.0.0.1", int(sys.argv[1])))
s.close()
"""

UDP_LOCAL = """\
import argparse
import socket
from datetime import datetime

MAX_BYTES = 65535


def server(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print("Listening at {}".format(sock.getsockname()), flush=True)
    while True:
        data, address = sock.recvfrom(MAX_BYTES)
        text = data.decode("ascii")
        print("The client at {} says {!r}".format(address, text), flush=True)
        text = "Your data was {} bytes long".format(len(data))
        data = text.encode("ascii")
        sock.sendto(data, address)


def client(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    text = "The time is {}".format(datetime.now())
    data = text.encode("ascii")
    sock.sendto(data, ("127.0.0.1", port))
    print("The OS assigned me the address {}".format(sock.getsockname()))
    data, address = sock.recvfrom(MAX_BYTES)  # Danger!
    text = data.decode("ascii")
    print("The server {} replied {!r}".format(address, text))


if __name__ == "__main__":
    choices = {"client": client, "server": server}
    parser = argparse.ArgumentParser(description="Send and receive UDP locally")
    parser.add_argument("role", choices=choices, help="which role to play")
    parser.add_argument("-p", metavar="PORT", type=int, default=1060, help="UDP port")
    args = parser.parse_args()
    function = choices[args.role]
    function(args.p)
"""

UDP_REMOTE = """\
import argparse
import random
import socket
import sys

MAX_BYTES = 65535


def server(interface, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((interface, port))
    print("Listening at", sock.getsockname(), flush=True)
    while True:
        data, address = sock.recvfrom(MAX_BYTES)
        if random.random() < 0.5:
            print("Pretending to drop packet from {}".format(address), flush=True)
            continue
        text = data.decode("ascii")
        print("The client at {} says {!r}".format(address, text), flush=True)
        message = "Your data was {} bytes long".format(len(data))
        sock.sendto(message.encode("ascii"), address)


def client(hostname, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((hostname, port))
    print("Client socket name is {}".format(sock.getsockname()))

    delay = 0.1  # seconds
    text = "This is another message"
    data = text.encode("ascii")
    while True:
        sock.send(data)
        print("Waiting up to {} seconds for a reply".format(delay))
        sock.settimeout(delay)
        try:
            data = sock.recv(MAX_BYTES)
        except socket.timeout:
            delay *= 2  # wait even longer for the next request
            if delay > 2.0:
                raise RuntimeError("I think the server is down")
        else:
            break  # we are done, and can stop looping

    print("The server says {!r}".format(data.decode("ascii")))


if __name__ == "__main__":
    choices = {"client": client, "server": server}
    parser = argparse.ArgumentParser(description="UDP with packets dropped at random")
    parser.add_argument("role", choices=choices, help="which role to take")
    parser.add_argument("host", help="interface the server listens at; host the client sends to")
    parser.add_argument("-p", metavar="PORT", type=int, default=1060, help="UDP port")
    args = parser.parse_args()
    function = choices[args.role]
    function(args.host, args.p)
"""

SEEDED_RUNNER = """\
import random
import runpy
import sys

random.seed(int(sys.argv.pop(1)))
sys.argv.pop(0)
runpy.run_path(sys.argv[0], run_name="__main__")
"""
"""Runs a script with ``random`` seeded, so the server's drops are reproducible."""


def to_rudp(source: str) -> str:
    """The rudp version of a UDP program: the constructor line, plus the import it needs."""
    return source.replace("import socket\n", "import socket\nimport rudp\n", 1).replace(
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
        "rudp.socket(socket.AF_INET, socket.SOCK_DGRAM)",
    )


def to_rudp_by_import(source: str) -> str:
    """The other one-line change: ``import rudp as socket`` and nothing else."""
    return source.replace("import socket\n", "import rudp as socket\n", 1)


CONVERSIONS = {"constructor": to_rudp, "import": to_rudp_by_import}


@pytest.fixture(params=sorted(CONVERSIONS))
def conversion(request: pytest.FixtureRequest) -> str:
    """Which one-line change turns a UDP program into a rudp program."""
    name: str = request.param
    return name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write(tmp_path: Path, name: str, source: str, conversion: str = "constructor") -> str:
    path = tmp_path / name
    path.write_text(CONVERSIONS[conversion](source))
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=_env(),
        check=False,
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Background:
    """A subprocess whose stdout lines are read by a thread (no sleeps to synchronise)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-W", "error", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        line = self.lines.get(timeout=WAIT)
        if line is None:
            assert self.process.stderr is not None
            raise AssertionError("process ended early: " + self.process.stderr.read())
        return line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(WAIT)
        self._reader.join(WAIT)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for process in started:
        process.stop()


@pytest.mark.parametrize("source", [HELLO_RECEIVER, HELLO_SENDER, UDP_LOCAL, UDP_REMOTE])
def test_only_the_constructor_line_changes(source: str) -> None:
    changed = [
        line
        for line in difflib.unified_diff(source.splitlines(), to_rudp(source).splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    removed = [line[1:] for line in changed if line.startswith("-")]
    added = [line[1:] for line in changed if line.startswith("+")]
    assert added.count("import rudp") == 1
    assert len(removed) == len(added) - 1 >= 1
    for old in removed:
        assert "socket.socket(socket.AF_INET, socket.SOCK_DGRAM)" in old
        assert old.replace("socket.socket(", "rudp.socket(") in added


@pytest.mark.parametrize("source", [HELLO_RECEIVER, HELLO_SENDER, UDP_LOCAL, UDP_REMOTE])
def test_import_conversion_changes_exactly_one_line(source: str) -> None:
    before, after = source.splitlines(), to_rudp_by_import(source).splitlines()
    assert len(before) == len(after)
    assert [(a, b) for a, b in zip(before, after, strict=True) if a != b] == [
        ("import socket", "import rudp as socket")
    ]


def test_hello_sender_started_before_its_receiver(
    tmp_path: Path, background: list[Background], conversion: str
) -> None:
    """UDP would lose this message; rudp retries the handshake until the receiver binds."""
    port = str(free_port())
    sender = Background(write(tmp_path, "send.py", HELLO_SENDER, conversion), port)
    background.append(sender)
    receiver = run(write(tmp_path, "receive.py", HELLO_RECEIVER, conversion), port)
    assert receiver.returncode == 0, receiver.stderr
    assert receiver.stdout.splitlines() == ["b'Hello!!'"]
    assert sender.process.wait(WAIT) == 0


def test_udp_local_client_and_server(
    tmp_path: Path, background: list[Background], conversion: str
) -> None:
    script = write(tmp_path, "udp_local.py", UDP_LOCAL, conversion)
    port = str(free_port())
    server = Background(script, "server", "-p", port)
    background.append(server)
    assert server.next_line() == f"Listening at ('127.0.0.1', {port})"
    for _ in range(2):  # two clients in turn: the server keeps serving
        client = run(script, "client", "-p", port)
        assert client.returncode == 0, client.stderr
        assigned, replied = client.stdout.splitlines()
        assert assigned.startswith("The OS assigned me the address ('0.0.0.0', ")
        assert replied.startswith(f"The server ('127.0.0.1', {port}) replied 'Your data was ")
        assert server.next_line().startswith("The client at ('127.0.0.1', ")


def drop_pattern_seed(drops: int) -> int:
    """A seed whose first ``drops`` draws are below 0.5 (dropped) and the next is not."""
    for seed in range(10_000):
        draws = random.Random(seed)
        if all(draws.random() < 0.5 for _ in range(drops)) and draws.random() >= 0.5:
            return seed
    raise AssertionError("no such seed")  # pragma: no cover


@pytest.mark.parametrize("drops", [0, 2, 4])
def test_udp_remote_client_retries_against_a_dropping_server(
    tmp_path: Path, background: list[Background], drops: int, conversion: str
) -> None:
    """The server drops requests at the application level; the client's own backoff copes."""
    script = write(tmp_path, "udp_remote.py", UDP_REMOTE, conversion)
    runner = tmp_path / "seeded.py"
    runner.write_text(SEEDED_RUNNER)
    port = str(free_port())
    server = Background(
        str(runner), str(drop_pattern_seed(drops)), script, "server", "127.0.0.1", "-p", port
    )
    background.append(server)
    assert server.next_line() == f"Listening at ('127.0.0.1', {port})"
    client = run(script, "client", "127.0.0.1", "-p", port)
    assert client.returncode == 0, client.stderr
    lines = client.stdout.splitlines()
    assert lines[0].startswith("Client socket name is ('127.0.0.1', ")
    waits = [line for line in lines if line.startswith("Waiting up to")]
    # One wait per dropped request plus the answered one (a reply slower than
    # the client's 0.1 s first timeout on a loaded machine only adds waits).
    expected = [f"Waiting up to {0.1 * 2**i} seconds for a reply" for i in range(drops + 1)]
    assert waits[: drops + 1] == expected
    assert lines[-1] == "The server says 'Your data was 23 bytes long'"
    for _ in range(drops):
        assert server.next_line().startswith("Pretending to drop packet from ")
    assert server.next_line().startswith("The client at ('127.0.0.1', ")


def test_udp_remote_client_gives_up_when_the_server_drops_everything(
    tmp_path: Path, background: list[Background]
) -> None:
    script = write(tmp_path, "udp_remote.py", UDP_REMOTE)
    runner = tmp_path / "seeded.py"
    runner.write_text(SEEDED_RUNNER)
    port = str(free_port())
    server = Background(
        str(runner), str(drop_pattern_seed(5)), script, "server", "127.0.0.1", "-p", port
    )
    background.append(server)
    server.next_line()
    client = run(script, "client", "127.0.0.1", "-p", port)
    assert client.returncode == 1
    assert "RuntimeError: I think the server is down" in client.stderr
