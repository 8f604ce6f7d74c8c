"""Write the seed corpora of the atheris harnesses under ``fuzz/corpus/`` (git-ignored).

- ``corpus/wire/``: every datagram of two recorded conversations (``scenarios``): a lossy
  simulated transfer (SYN, SYN_ACK, DATA, ACK with SACK blocks, PING, FIN) and an
  endpoint conversation (PATH_CHALLENGE, PATH_RESPONSE, STATELESS_RESET, RESET), one
  file each;
- ``corpus/connection/``: the same conversations in ``fuzz_connection.py``'s record
  format, aimed at each state: the peer's datagrams in order, whole and in windows;
- ``corpus/file_header/``: real file headers, trailers and verdicts (raw mode) and a few
  seeds of the structured mode.

Usage: ``python fuzz/make_corpus.py [OUTPUT_DIR]``.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scenarios  # noqa: E402
from scenarios import STATES, encode_records  # noqa: E402

from rudp.apps.filetransfer import (  # noqa: E402
    DEFAULT_CHUNK_SIZE,
    FileHeader,
    FileTrailer,
    Verdict,
)

WINDOW = 8
"""Datagrams per windowed connection seed."""


def write(folder: Path, data: bytes) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha1(data).hexdigest()
    if path.exists():
        return False
    path.write_bytes(data)
    return True


def connection_seeds(
    state: int, datagrams: list[bytes], controls: tuple[int, ...] = (0,)
) -> list[bytes]:
    seeds = []
    for control in controls:
        records = [(control, d) for d in datagrams]
        seeds.append(encode_records(state, records[:64]))
        for start in range(0, len(records), WINDOW // 2):
            seeds.append(encode_records(state, records[start : start + WINDOW]))
        # With the timer fired after each datagram (control bit 2) and time moving.
        seeds.append(encode_records(state, [(control | 0x14, d) for d in datagrams[:WINDOW]]))
    return seeds


def main(out: Path) -> None:
    transfer = scenarios.recorded_transfer()
    endpoint = scenarios.recorded_endpoint()
    counts = {"wire": 0, "connection": 0, "file_header": 0}

    for _side, datagram in transfer + endpoint:
        counts["wire"] += write(out / "wire", datagram)

    from_client = [d for side, d in transfer if side == "client"]
    from_server = [d for side, d in transfer if side == "server"]
    endpoint_client = [d for side, d in endpoint if side == "client"]
    endpoint_server = [d for side, d in endpoint if side == "server"]
    keyed = scenarios.recorded_transfer(scenarios.KEYED_CONFIG)
    for _side, datagram in keyed:
        counts["wire"] += write(out / "wire", datagram)
    keyed_client = [d for side, d in keyed if side == "client"]
    keyed_server = [d for side, d in keyed if side == "server"]
    for index, name in enumerate(STATES):
        if name in scenarios.ENDPOINT_STATES:
            feeds = [(endpoint_client, (0, 8)), (from_client, (0,)), (endpoint_server, (0,))]
        elif name.startswith("keyed"):  # sealed datagrams, replayed and reordered
            feeds = [(keyed_client if name.endswith("server") else keyed_server, (0, 4))]
        elif name.endswith("server"):
            feeds = [(from_client, (0,)), (endpoint_client, (0,))]
        else:
            feeds = [(from_server, (0,)), (endpoint_server, (0,))]
        for datagrams, controls in feeds:
            for seed in connection_seeds(index, datagrams, controls):
                counts["connection"] += write(out / "connection", seed)

    rng = random.Random(1)
    headers = [
        FileHeader("notes.txt", 1234, DEFAULT_CHUNK_SIZE),
        FileHeader("dir/sub/report.pdf", 0, 1024),
        FileHeader("ünïcødé ☃.bin", 5 << 30, 4 * 1024 * 1024),
        FileHeader("..", 1, 2048),
    ]
    trailers = [
        FileTrailer("ab" * 32),
        FileTrailer(None, "file changed while being sent"),
    ]
    verdicts = [
        Verdict("notes.txt", ok=True, sha256="ab" * 32),
        Verdict("x", ok=False, error="sha256 mismatch"),
        Verdict("y", ok=False),
    ]
    for message in [m.encode() for m in (*headers, *trailers, *verdicts)]:
        counts["file_header"] += write(out / "file_header", b"\x01" + message)
    for _ in range(8):
        counts["file_header"] += write(out / "file_header", b"\x00" + rng.randbytes(40))

    for kind, count in counts.items():
        print(f"{kind}: {count} new seeds in {out / kind}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus")
