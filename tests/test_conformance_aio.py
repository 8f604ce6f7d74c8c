"""Run the conformance suite (tests/conformance.py) against the asyncio driver (rudp.aio).

The suite is synchronous; this adapter runs one event loop in a background
thread per pair and bridges every ``Side`` call onto it with
``asyncio.run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

import rudp.aio
from rudp.errors import ConnectionFailed
from rudp.testing.conformance import CHECKS, TIMEOUT, PairFactory, cases, checks_for

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread, with a blocking ``call``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (bounded)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(TIMEOUT * 2 if timeout is None else timeout)

    def stop(self) -> None:
        """Shut down as ``asyncio.run`` does, then stop and close the loop.

        Tasks still running (a client socket sitting out its TIME_WAIT linger)
        are cancelled and awaited, so their cleanup closes every transport.
        """
        self.call(self._cancel_everything())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()

    @staticmethod
    async def _cancel_everything() -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()


class AioSide:
    """Adapter: a ``rudp.aio.Connection`` seen through the synchronous Side protocol."""

    def __init__(self, runner: LoopThread, conn: rudp.aio.Connection) -> None:
        self.runner = runner
        self.conn = conn

    def send(self, data: bytes) -> None:
        self.runner.call(self.conn.send(data))

    def recv(self, timeout: float) -> bytes:
        # asyncio.wait_for raises TimeoutError (the builtin, in 3.11): what the suite expects.
        return self.runner.call(asyncio.wait_for(self.conn.recv(), timeout))

    def flush(self, timeout: float) -> None:
        self.runner.call(asyncio.wait_for(self.conn.flush(), timeout))

    def close(self) -> None:
        self.runner.call(self.conn.close())


@contextlib.contextmanager
def aio_pair(**options: Any) -> Iterator[tuple[AioSide, AioSide]]:
    """A ``rudp.aio.connect`` client and the connection a ``rudp.aio.serve`` handler got."""
    runner = LoopThread()
    try:
        release: asyncio.Event | None = None

        async def open_pair() -> tuple[Any, rudp.aio.Connection, rudp.aio.Connection]:
            nonlocal release
            release = asyncio.Event()
            accepted: asyncio.Future[rudp.aio.Connection] = (
                asyncio.get_running_loop().create_future()
            )

            async def handler(conn: rudp.aio.Connection) -> None:
                accepted.set_result(conn)
                await release.wait()  # keep the connection open for the check

            server = await rudp.aio.serve(handler, "127.0.0.1", 0, **options)
            client = await rudp.aio.connect(server.address, **options)
            return server, client, await accepted

        server, client, accepted = runner.call(open_pair())

        async def close_pair() -> None:
            assert release is not None
            # Client first, as a real client would: the server's side then ends
            # without a TIME_WAIT, so wait_closed() has no linger to sit out.
            with contextlib.suppress(ConnectionFailed):
                await client.close()
            release.set()
            await server.wait_closed()

        try:
            yield AioSide(runner, client), AioSide(runner, accepted)
        finally:
            runner.call(close_pair())
    finally:
        runner.stop()


FACTORIES: dict[str, Callable[..., Any]] = {"aio": aio_pair}

CASES = cases(FACTORIES)


@pytest.mark.parametrize(("factory", "check"), CASES)
def test_conformance(factory: PairFactory, check: Callable[[PairFactory], None]) -> None:
    check(factory)


def test_every_check_runs_for_aio() -> None:
    assert checks_for(aio_pair) == CHECKS
