"""Tests of rudp.drivers.static_key: the persistent per-user static key (spec section 6.6)."""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import pytest

import rudp
from rudp.drivers import static_key
from rudp.drivers._common import DriverOptions, split_options


def test_tests_never_use_the_real_home() -> None:
    path = static_key.static_key_path()
    assert os.environ["RUDP_STATIC_KEY_FILE"] == str(path)
    assert Path.home() not in path.parents


def test_path_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUDP_STATIC_KEY_FILE")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert static_key.static_key_path() == tmp_path / "state" / "rudp" / "static-key"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "state" / "rudp" / "static-key"
    assert static_key.static_key_path() == expected


def test_created_once_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "static-key"
    key = static_key.load_static_key(path)
    assert len(key) == 32
    assert path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert static_key.load_static_key(path) == key
    # As a restarted process would read it (the cache forgotten):
    static_key._cache.clear()
    assert static_key.load_static_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["static-key"]  # no temporary left


def test_an_existing_key_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "static-key"
    path.write_bytes(b"k" * 32)
    assert static_key.load_static_key(path) == b"k" * 32


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "static-key"
    keys: list[bytes] = []

    def load() -> None:
        # Bypass the per-process cache and lock, as separate processes would.
        key = static_key._read(path) or static_key._create(path)
        keys.append(key)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(keys) == 8 and set(keys) == {path.read_bytes()}


def test_unusable_file_falls_back_to_an_in_memory_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(static_key, "_fallback", None)
    damaged = tmp_path / "static-key"
    damaged.write_bytes(b"short")
    with caplog.at_level(logging.WARNING, logger="rudp"):
        key = static_key.load_static_key(damaged)
    assert len(key) == 32 and damaged.read_bytes() == b"short"  # left alone
    assert "in memory" in caplog.text
    blocked = tmp_path / "not-a-dir"
    blocked.write_bytes(b"")
    assert static_key.load_static_key(blocked / "static-key") == key  # the same process key


def test_explicit_static_key_option() -> None:
    _, options = split_options({"static_key": b"s" * 32})
    assert options.endpoint_static_key() == b"s" * 32
    with pytest.raises(ValueError):
        DriverOptions(static_key=b"short")
    assert DriverOptions().endpoint_static_key() == static_key.load_static_key()


def test_faces_hand_the_key_to_their_endpoint() -> None:
    with rudp.listen(("127.0.0.1", 0), static_key=b"L" * 32) as listener:
        assert listener._engine.endpoint.static_key == b"L" * 32
    with rudp.listen(("127.0.0.1", 0)) as listener:
        assert listener._engine.endpoint.static_key == static_key.load_static_key()


def test_socket_and_asyncio_faces_take_the_option() -> None:
    import asyncio

    import rudp.aio

    sock = rudp.socket(static_key=b"S" * 32)
    try:
        sock.bind(("127.0.0.1", 0))
        assert sock._engine.endpoint.static_key == b"S" * 32
    finally:
        sock.close()

    async def handler(conn: object) -> None:  # pragma: no cover - no client connects
        pass

    async def main() -> bytes:
        async with rudp.aio.serve(handler, "127.0.0.1", 0, static_key=b"A" * 32) as server:
            assert server._protocol is not None
            return server._protocol.endpoint.static_key

    assert asyncio.run(main()) == b"A" * 32
