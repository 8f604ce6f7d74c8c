"""atheris harness: the receive path of ``SansIOConnection`` and ``Endpoint``.

The input picks a state (``scenarios.CONNECTION_STATES`` then ``ENDPOINT_STATES``: a fresh
server, a client that sent its SYN, established and mid-transfer connections on both
sides, a closing client, keyed (``Config.psk``) server and client states, a fresh and an
established accepting ``Endpoint``) and is then split into datagrams, each preceded by a
control byte and a length::

    byte 0          state index (modulo the number of states)
    then, repeated: control (1 byte)  length (2 bytes, big-endian)  datagram (length bytes)

    control bit 0   replace the last 4 bytes with the CRC-32 of the rest (reach the fields)
    control bit 1   write the target's connection id into bytes 4..12 (reach the state)
    control bit 2   after the datagram, fire the connection's timer
    control bit 3   (endpoint) the datagram comes from a second address (a migration)
    control 4..7    advance the clock by that many times 50 ms first

After each datagram the harness calls ``datagrams_to_send``, reads every event, and checks
that nothing escaped and that memory stays bounded by the configuration: held
out-of-order packets within ``receive_window``, reassembly within ``max_message_size``,
packets in flight within ``max_send_window``, pending server connections within the
backlog, and a sane timer.  ``make_corpus.py`` writes the recorded conversations in this
format (seeded identically, so their connection ids and sequence numbers match).
"""

from __future__ import annotations

import math
import os
import sys
import zlib

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports():
    import scenarios

    from rudp.core.connection import SansIOConnection
    from rudp.core.endpoint import Endpoint

STATES = scenarios.STATES
CONFIG = scenarios.CONFIG
BACKLOG = 4
TIME_STEP = 0.05


def mutate(control: int, datagram: bytes, connection_id: int | None) -> bytes:
    if control & 2 and connection_id is not None and len(datagram) >= 12:
        datagram = datagram[:4] + connection_id.to_bytes(8, "big") + datagram[12:]
    if control & 1 and len(datagram) >= 4:
        body = datagram[:-4]
        datagram = body + zlib.crc32(body).to_bytes(4, "big")
    return datagram


def check_connection(conn: SansIOConnection) -> None:
    receiver = conn._receiver
    sender = conn._sender
    assert len(receiver._held) <= CONFIG.receive_window, len(receiver._held)
    assert len(receiver.ranges) <= CONFIG.receive_window, len(receiver.ranges)
    if receiver._parts is not None:
        assert len(receiver._parts) <= CONFIG.max_message_size, len(receiver._parts)
    in_flight = sender.snd_nxt - sender.snd_una
    assert 0 <= in_flight <= CONFIG.max_send_window + 1, in_flight
    assert len(sender._sent) <= CONFIG.max_send_window + 1, len(sender._sent)
    assert len(sender._sacked) <= CONFIG.max_send_window + 1, len(sender._sacked)
    timer = conn.get_timer()
    assert timer is None or math.isfinite(timer), timer
    assert len(conn._events) < 10_000


def drain_connection(conn: SansIOConnection, now: float) -> None:
    conn.datagrams_to_send(now)
    while conn.next_event() is not None:
        pass
    check_connection(conn)


def fire(target: SansIOConnection | Endpoint, now: float) -> float:
    """Run ``target``'s next timer (a connection or an endpoint: the same two calls)."""
    timer = target.get_timer()
    if timer is not None:
        now = max(now, timer)
        target.handle_timer(now)
    return now


def run_connection(conn: SansIOConnection, recs: list[tuple[int, bytes]]) -> None:
    now = 1.0
    for control, datagram in recs:
        now += (control >> 4) * TIME_STEP
        conn.receive_datagram(mutate(control, datagram, conn.local_connection_id), now)
        drain_connection(conn, now)
        if control & 4:
            now = fire(conn, now)
            drain_connection(conn, now)
    for _ in range(3):
        now = fire(conn, now)
        drain_connection(conn, now)


def check_endpoint(endpoint: Endpoint) -> None:
    assert endpoint.pending_count <= BACKLOG, endpoint.pending_count
    assert len(endpoint) <= BACKLOG + 1, len(endpoint)
    for assoc in endpoint.associations:
        check_connection(assoc.connection)
    timer = endpoint.get_timer()
    assert timer is None or math.isfinite(timer), timer


def drain_endpoint(endpoint: Endpoint, now: float) -> None:
    endpoint.datagrams_to_send(now)
    while endpoint.next_event() is not None:
        pass
    check_endpoint(endpoint)


def run_endpoint(endpoint: Endpoint, recs: list[tuple[int, bytes]], now: float) -> None:
    for control, datagram in recs:
        now += (control >> 4) * TIME_STEP
        associations = endpoint.associations
        target = associations[0].connection.local_connection_id if associations else None
        address = scenarios.OTHER_ADDRESS if control & 8 else scenarios.CLIENT_ADDRESS
        endpoint.receive_datagram(mutate(control, datagram, target), address, now)
        drain_endpoint(endpoint, now)
        if control & 4:
            now = fire(endpoint, now)
            drain_endpoint(endpoint, now)
    for _ in range(3):
        now = fire(endpoint, now)
        drain_endpoint(endpoint, now)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    name = STATES[data[0] % len(STATES)]
    recs = scenarios.records(data)
    if name in scenarios.CONNECTION_STATES:
        run_connection(scenarios.CONNECTION_STATES[name](), recs)
    else:
        scene = scenarios.ENDPOINT_STATES[name]()
        run_endpoint(scene.endpoint, recs, scene.now + 1.0)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
