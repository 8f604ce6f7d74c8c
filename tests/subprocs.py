"""A subprocess whose output lines are collected by reader threads, for end-to-end tests.

Shared by the CLI and example tests: start a Python program on loopback, wait (bounded)
for a line it prints, stop it with a signal, read everything it said.  No sleeps: waits
block on the line queue with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    """``args`` run from the repository root with unbuffered output and ``env`` added."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out)),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err)),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """The first output line (stdout or stderr) matching ``pattern``; bounded wait."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            match = compiled.search(line)
            if match is not None:
                return match
        raise AssertionError(f"no line matching {compiled.pattern!r}: {self.text}")

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the exit (bounded; killed past it) and for the reader threads."""
        try:
            return self.popen.wait(timeout=timeout)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
            for reader in self.readers:
                reader.join(10)
            for stream in (self.popen.stdout, self.popen.stderr):
                if stream is not None:
                    stream.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` if still running, then ``finish``; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        return self.finish(timeout)

    def stop_quietly(self, sig: int = signal.SIGINT) -> None:
        """``stop`` for fixtures: a process that had to be killed is not an error there."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop(sig)

    @property
    def text(self) -> str:
        """Everything it printed so far, stdout then stderr."""
        return "".join(self.out) + "".join(self.err)
