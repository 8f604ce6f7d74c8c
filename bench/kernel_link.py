"""`make bench-kernel`: rudp beside kernel TCP (BBR, CUBIC) and aioquic on a real kernel link.

The script builds its own path: two network namespaces joined by a veth pair, a tc tbf
rate limit on each direction, and iptables random DROP on both hosts.  For every loss
value it moves the same payload with each transport, every end in its own process run
with ``ip netns exec``, and prints goodput beside the link's limit (1 - p) * rate.

    sudo python bench/kernel_link.py [--rate 100mbit] [--loss 0,0.01,0.05,0.1,0.2]
        [--megabytes 10] [--timeout 120] [--protocols bbr,cubic,aioquic,rudp] [--json [PATH]]

rudp is whatever ``import rudp`` finds here (PYTHONPATH or the installed package): the
workers get the same path, so one script measures the code before and after a change.
Needs root; installs iproute2/iptables/ethtool/kmod with apt-get when they are missing.
The namespaces (``rudpkl-<pid>-s``/``-c``) are removed on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROTOCOLS = ("bbr", "cubic", "aioquic", "rudp", "rudp-psk")
OPTIONAL = "rudp-psk"
"""A column shown only when measured."""
LABELS = {
    "bbr": "TCP BBR",
    "cubic": "TCP CUBIC",
    "aioquic": "aioquic",
    "rudp": "rudp",
    "rudp-psk": "rudp psk=",  # every datagram sealed (ChaCha20-Poly1305), a Noise handshake
}
CHUNK = 256 * 1024
ETHERNET_FRAME = 1514  # MTU 1500 + Ethernet header: what tbf counts for a full packet
TOOLS = {"ip": "iproute2", "tc": "iproute2", "iptables": "iptables", "ethtool": "ethtool"}
TOOLS |= {"modprobe": "kmod"}


# --- the pure part: arguments, commands, table (unit-tested without root) ----------------


def parse_rate(text: str) -> int:
    """``100mbit``, ``1gbit``, ``500kbit`` or bare bits per second, as tc spells them."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:bit)?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"bad rate {text!r} (examples: 100mbit, 1gbit)")
    return int(float(match.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2)])


def parse_losses(text: str) -> list[float]:
    """``0,0.01,5%`` -> [0.0, 0.01, 0.05]; each within 0 <= p < 1."""
    values = []
    for item in (item.strip() for item in text.split(",")):
        try:
            p = float(item.rstrip("%")) / (100 if item.endswith("%") else 1)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad loss {item!r}") from None
        if not 0.0 <= p < 1.0:
            raise argparse.ArgumentTypeError(f"loss {item!r} outside [0, 1)")
        values.append(p)
    return values


def parse_protocols(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not set(names) <= set(PROTOCOLS):
        raise argparse.ArgumentTypeError(f"protocols are among {','.join(PROTOCOLS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rate", type=parse_rate, default=parse_rate("100mbit"), help="each way (100mbit)")
    add("--loss", type=parse_losses, default=parse_losses("0,0.01,0.05,0.1,0.2"))
    add("--megabytes", type=float, default=10.0, help="payload per transfer (10)")
    add("--timeout", type=float, default=120.0, help="seconds per transfer (120)")
    add("--protocols", type=parse_protocols, default=list(PROTOCOLS))
    add("--repeat", type=int, default=1, help="transfers per cell, the median counts (1)")
    add("--queue-ms", type=float, default=50.0, help="tbf queue, in ms at --rate (50)")
    add("--keep-offloads", action="store_true", help="leave gso/tso/gro on (see setup_commands)")
    add("--json", nargs="?", const="", metavar="PATH", help="write results (to bench/out/)")
    return parser


@dataclass(frozen=True)
class Host:
    ns: str
    dev: str
    address: str


def hosts(tag: str) -> tuple[Host, Host]:
    """(server, client) of one run; the pid in the names keeps parallel runs apart, and
    interface names stay within IFNAMSIZ (15 bytes)."""
    server = Host(f"rudpkl-{tag}-s", f"kl{tag}s", "10.77.0.1")
    return server, Host(f"rudpkl-{tag}-c", f"kl{tag}c", "10.77.0.2")


def sh(line: str) -> list[str]:
    """A command line from words (no name built here holds a space)."""
    return line.split()


def tbf_command(host: Host, rate_bps: int, queue_ms: float) -> list[str]:
    # burst: tokens bank up to this many bytes while tbf waits for its timer.  A wake-up
    # that comes late (a busy 2-core box) loses no capacity as long as the bucket covers
    # the delay, so it holds 4 ms of traffic (the classic rate/HZ rule at HZ=250); the
    # price is that one burst may exceed the rate, 50 kB at 100 Mbit/s, 0.5% of a 10 MB
    # transfer.  Never under a few full frames, or tbf would refuse whole packets.
    # latency: the queue in front of the limiter (limit = rate * latency + burst).  50 ms
    # is a common router buffer: loss-based senders keep the link busy instead of being
    # starved by drops at the queue, so a shortfall is the protocol's, not the buffer's.
    burst = max(int(rate_bps / 8 * 0.004), 4 * ETHERNET_FRAME)
    return sh(
        f"ip netns exec {host.ns} tc qdisc replace dev {host.dev} root tbf"
        f" rate {rate_bps}bit burst {burst} latency {queue_ms:g}ms"
    )


def setup_commands(tag: str, rate_bps: int, queue_ms: float, offloads: bool) -> list[list[str]]:
    server, client = hosts(tag)
    commands = [sh(f"ip netns add {server.ns}"), sh(f"ip netns add {client.ns}")]
    commands += [sh(f"ip link add {server.dev} netns {server.ns} type veth peer {client.dev}")]
    commands[-1] += sh(f"netns {client.ns}")
    for host in (server, client):
        commands.append(sh(f"ip -n {host.ns} addr add {host.address}/24 dev {host.dev}"))
        commands.append(sh(f"ip -n {host.ns} link set lo up"))
        commands.append(sh(f"ip -n {host.ns} link set {host.dev} up"))
        if not offloads:
            # With offloads on, TCP hands the veth 64 kB super-packets: tbf would meter
            # and iptables would drop them whole (one "packet" lost = ~45 segments),
            # while every rudp and QUIC datagram is its own packet.  Off, every
            # transport meets the limiter and the dice one wire-sized packet at a time.
            commands.append(sh(f"ip netns exec {host.ns} ethtool -K {host.dev} gso off tso off"))
            commands[-1] += ["gro", "off"]
        commands.append(tbf_command(host, rate_bps, queue_ms))
    return commands


def loss_commands(tag: str, p: float) -> list[list[str]]:
    """iptables rules that drop each packet arriving on either host with probability p.

    INPUT, not OUTPUT: a packet dropped on the way out never uses the link, and the
    sender learns of it at once (sendto() fails with EPERM, TCP backs off locally).
    Dropped on arrival it has crossed the rate limit and vanishes silently, like a
    loss on the wire after the bottleneck.  No ``-p``: every protocol meets the same
    dice, handshakes included.  Loss 0 adds no rule at all.
    """
    rule = f"-m statistic --mode random --probability {p:g} -j DROP"
    add = "iptables -w -A INPUT -i"
    return [sh(f"ip netns exec {h.ns} {add} {h.dev} {rule}") for h in hosts(tag)] if p > 0 else []


def clear_loss_commands(tag: str) -> list[list[str]]:
    return [sh(f"ip netns exec {h.ns} iptables -w -F INPUT") for h in hosts(tag)]


def transfer_commands(
    tag: str, proto: str, port: int, size: int, timeout: float, files: dict[str, str]
) -> tuple[list[str], list[str]]:
    """(server, client) command lines of one transfer, each inside its namespace."""
    server_host, client_host = hosts(tag)
    me = [sys.executable, str(Path(__file__).resolve()), "_worker"]  # these may hold spaces
    common = f"--host {server_host.address} --port {port} --bytes {size} --timeout {timeout:g}"
    if proto.startswith("rudp"):
        # The receiver is the real CLI, SHA-256 check, rename and all; it gives up on its own.
        keyed = f" --psk-file {files['psk']}" if proto == "rudp-psk" else ""
        server = [sys.executable, *sh(f"-m rudp recv --listen {server_host.address}:{port}")]
        server += sh(f"--once --quiet --output {files['outdir']} --timeout {timeout + 10:g}")
        server += sh(keyed)
        client = [*me, *sh(f"rudp-send {common} --file {files['payload']}{keyed}")]
    elif proto == "aioquic":
        server = [*me, *sh(f"quic-server {common} --cert {files['cert']} --key {files['key']}")]
        client = [*me, *sh(f"quic-client {common}")]
    else:
        server = [*me, *sh(f"tcp-server {common} --cc {proto}")]
        client = [*me, *sh(f"tcp-client {common} --cc {proto}")]
    return [*sh(f"ip netns exec {server_host.ns}"), *server], [
        *sh(f"ip netns exec {client_host.ns}"),
        *client,
    ]


@dataclass
class Result:
    """One transfer.  ``seconds`` runs from the established connection to the receiver's
    confirmation, so a lost SYN or handshake packet (1 s timers everywhere) does not
    swamp a one-second transfer; ``connect_seconds`` is kept beside it in the JSON."""

    proto: str
    loss: float
    size: int
    ok: bool = False
    timed_out: bool = False
    seconds: float = 0.0
    connect_seconds: float = 0.0
    moved: int = 0  # bytes the receiver got (all of them unless it failed)
    sender_cpu: float = 0.0  # CPU seconds of the sending process over ``seconds``
    cpu_seconds: float = 0.0  # both processes, start to exit (imports included)
    sender_view: dict[str, object] = field(default_factory=dict)  # rudp: its own counters
    note: str = ""

    @property
    def mbps(self) -> float | None:
        return self.size * 8 / self.seconds / 1e6 if self.ok and self.seconds > 0 else None


def summarize(results: list[Result]) -> Result:
    """The median run of a cell if all succeeded, else the first one that did not."""
    bad = [r for r in results if not r.ok]
    return bad[0] if bad else sorted(results, key=lambda r: r.seconds)[len(results) // 2]


def cell(result: Result | None) -> str:
    if result is None:
        return "-"
    if result.mbps is not None:
        return f"{result.mbps:.1f}"
    return f"t/o {result.moved / 1e6:.1f}MB" if result.timed_out else "failed"


def format_table(cells: dict[float, dict[str, Result]], rate_bps: int) -> str:
    """Mbit/s of goodput per loss and transport, and rudp's ratios to BBR and the limit."""

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}" if a is not None and b else "-"

    # The keyed column only when it was measured: the four peers' always, "-" if left out.
    keyed = any(OPTIONAL in row for row in cells.values())
    shown = [p for p in PROTOCOLS if p != OPTIONAL or keyed]
    header = f"{'loss':>5} {'limit':>7}" + "".join(f" {LABELS[p]:>13}" for p in shown)
    lines = [header + f" {'rudp/BBR':>9} {'rudp/limit':>10}"]
    lines.append("-" * len(lines[0]))
    for loss, row in cells.items():
        limit = (1 - loss) * rate_bps / 1e6
        line = f"{loss:>5.0%} {limit:>7.1f}" + "".join(f" {cell(row.get(p)):>13}" for p in shown)
        rudp = row["rudp"].mbps if "rudp" in row else None
        bbr = row["bbr"].mbps if "bbr" in row else None
        lines.append(line + f" {ratio(rudp, bbr):>9} {ratio(rudp, limit):>10}")
    lines.append("Mbit/s of payload, connection established -> receiver confirmed; t/o: timed out")
    return "\n".join(lines)


# --- the part that needs root: tools, namespaces, processes -------------------------------


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fail(message: str) -> None:
    sys.exit(f"kernel_link: {message}")


def run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        fail(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def ensure_preconditions(need_ethtool: bool) -> None:
    if os.geteuid() != 0:
        fail("needs root (namespaces, tc, iptables): run it with sudo or as root")
    tools = [cmd for cmd in TOOLS if need_ethtool or cmd != "ethtool"]
    missing = sorted({TOOLS[cmd] for cmd in tools if shutil.which(cmd) is None})
    if missing:
        if shutil.which("apt-get") is None:
            fail(f"missing packages {', '.join(missing)} and no apt-get to install them")
        say(f"installing {' '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (sh("apt-get update -qq"), sh("apt-get install -y -qq") + missing):
            if subprocess.run(command, env=env, capture_output=True, timeout=900).returncode:
                fail(f"`{' '.join(command)}` failed: install {', '.join(missing)} by hand")
    if absent := [cmd for cmd in tools if shutil.which(cmd) is None]:
        fail(f"still missing after apt-get install: {', '.join(absent)}")
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
    for cc in ("bbr", "cubic"):
        if cc not in available.read_text().split():
            run(["modprobe", f"tcp_{cc}"], check=False)
        if cc not in available.read_text().split():
            fail(f"no TCP {cc} (modprobe tcp_{cc} failed); have {available.read_text().strip()}")


def remove_stale_namespaces() -> None:
    """Namespaces of an earlier run that was killed -9 (its pid is gone)."""
    for line in run(sh("ip netns list"), check=False).stdout.splitlines():
        match = re.match(r"(rudpkl-(\d+)-[sc])\b", line)
        if match and not Path(f"/proc/{match.group(2)}").exists():
            run(sh(f"ip netns del {match.group(1)}"), check=False)


def wait_bound(pid: int, ns: str, port: int, udp: bool, timeout: float = 20.0) -> bool:
    """True once process ``pid`` has bound ``port`` inside ``ns``.  /proc/PID/net shows the
    process's own namespace, checked by inode first: until `ip netns exec` has switched,
    it is ours."""
    want = f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]"
    table, suffix = f"/proc/{pid}/net/{'udp' if udp else 'tcp'}", f":{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == want:
                with open(table) as handle:  # sl local_address rem_address st ...
                    rows = [line.split() for line in handle.readlines()[1:]]
                if any(r[1].endswith(suffix) and (udp or r[3] == "0A") for r in rows):
                    return True
        except OSError:
            return False  # the process is gone
        time.sleep(0.02)
    return False


def loss_seen(tag: str) -> list[tuple[int, int]]:
    """(packets the rule dropped, packets that arrived) on each host: the loss the dice
    really made, reported beside the one asked for."""
    counts = []
    for host in hosts(tag):
        rules = run(sh(f"ip netns exec {host.ns} iptables -w -L INPUT -v -x -n")).stdout
        dropped = sum(int(line.split()[0]) for line in rules.splitlines() if " DROP " in line)
        rx = f"/sys/class/net/{host.dev}/statistics/rx_packets"  # counted before the rules
        counts.append((dropped, int(run(sh(f"ip netns exec {host.ns} cat {rx}")).stdout)))
    return counts


def last_json(text: str) -> dict[str, float]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}  # type: ignore[no-any-return]


def stop(process: subprocess.Popen[str], grace: float) -> tuple[str, str]:
    """Give a process ``grace`` seconds to end, then SIGTERM, then SIGKILL: (stdout, stderr)."""
    for ending, wait in ((None, grace), (process.terminate, 5.0)):
        if ending is not None:
            ending()
        try:
            return process.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    return process.communicate()


def run_transfer(
    tag: str, proto: str, loss: float, port: int, args: argparse.Namespace, files: dict[str, str]
) -> Result:
    result = Result(proto, loss, int(args.megabytes * 1e6))
    server_cmd, client_cmd = transfer_commands(tag, proto, port, result.size, args.timeout, files)
    outdir = Path(files["outdir"])
    for old in outdir.iterdir():
        old.unlink()
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = subprocess.Popen(server_cmd, **pipes)  # type: ignore[call-overload]
    client = None
    try:
        udp = proto == "aioquic" or proto.startswith("rudp")
        if not wait_bound(server.pid, hosts(tag)[0].ns, port, udp=udp):
            result.note = "server did not start: " + "".join(stop(server, 0))[-300:]
            return result
        client = subprocess.Popen(client_cmd, **pipes)  # type: ignore[call-overload]
        try:  # the worker keeps its own deadline; this one is the backstop
            out, err = client.communicate(timeout=args.timeout + 30)
        except subprocess.TimeoutExpired:
            client.kill()
            out, err = client.communicate()
        report = last_json(out)
        result.ok = bool(report.get("ok")) and client.returncode == 0
        result.timed_out = bool(report.get("timed_out")) or client.returncode == -signal.SIGKILL
        for name in ("seconds", "connect_seconds", "sender_cpu"):
            setattr(result, name, float(report.get(name, 0.0)))
        for name in ("retransmissions", "timeouts", "spurious", "srtt", "min_rtt"):
            if name in report:
                result.sender_view[name] = report[name]
        if not result.ok and not result.timed_out:
            result.note = (err or out).strip()[-300:]
        # What reached the rudp receiver: its (partial) file, read before it is stopped.
        result.moved = sum(f.stat().st_size for f in outdir.iterdir())
        served, served_err = stop(server, 10 if result.ok else 0)
        if not proto.startswith("rudp"):
            result.moved = int(last_json(served).get("received", 0))
        elif result.ok and server.returncode != 0:
            result.ok, result.note = False, "receiver failed: " + served_err.strip()[-300:]
    finally:
        for process in (client, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.cpu_seconds = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return result


def measure(tag: str, args: argparse.Namespace, files: dict[str, str], record: Any) -> None:
    """Every loss, every protocol, into ``record`` as it goes (a Ctrl-C keeps what is done)."""
    for command in setup_commands(tag, args.rate, args.queue_ms, args.keep_offloads):
        run(command)
    for index, loss in enumerate(args.loss):
        for command in clear_loss_commands(tag) + loss_commands(tag, loss):
            run(command)
        before = loss_seen(tag)
        record["cells"][loss] = {}
        for offset, proto in enumerate(args.protocols):
            runs = []
            for attempt in range(args.repeat):
                # A fresh port per transfer: stray packets of the last one find no one.
                port = 20000 + 100 * index + 10 * offset + attempt
                runs.append(r := run_transfer(tag, proto, loss, port, args, files))
                how = (
                    f" Mbit/s, sender CPU {r.sender_cpu / r.seconds:.0%}" if r.ok else " " + r.note
                )
                if r.sender_view:
                    how += " " + " ".join(
                        f"{k}={v:.4g}"
                        for k, v in r.sender_view.items()
                        if isinstance(v, int | float)
                    )
                say(f"  loss {loss:.0%} {LABELS[proto]}: {cell(r)}{how}")
                if not r.ok:
                    break  # a timeout or failure decides the cell: no need to wait again
            record["results"] += runs
            record["cells"][loss][proto] = summarize(runs)
        seen = [d / (n - n0 or 1) for (d, n), (_, n0) in zip(loss_seen(tag), before, strict=True)]
        record["loss_seen"][f"{loss:g}"] = seen
        say(f"  loss {loss:.0%}: dropped {seen[0]:.2%} at the server, {seen[1]:.2%} at the client")


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the same way out as Ctrl-C: through the cleanup


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = importlib.util.find_spec("rudp")
    if spec is None or spec.origin is None:
        fail("cannot import rudp: set PYTHONPATH or install the package (make bench-kernel does)")
    rudp_root = str(Path(spec.origin).resolve().parent.parent)
    # The workers import exactly the rudp this process found, whatever their directory.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [rudp_root, os.getenv("PYTHONPATH")]))
    if "aioquic" in args.protocols and importlib.util.find_spec("aioquic") is None:
        fail("aioquic is not installed (pip install '.[bench]'), or leave it out with --protocols")
    ensure_preconditions(need_ethtool=not args.keep_offloads)
    remove_stale_namespaces()
    tag, status, started = str(os.getpid()), 0, time.monotonic()
    signal.signal(signal.SIGTERM, interrupt)
    head = run(sh(f"git -C {rudp_root} rev-parse HEAD"), check=False).stdout.strip() or None
    environment = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "rudp": rudp_root,
        "rudp_commit": head,
    } | {name: value for name, value in vars(args).items() if name != "json"}
    record: Any = {"environment": environment, "cells": {}, "results": [], "loss_seen": {}}
    say(f"rudp under test: {rudp_root} ({head}); {args.megabytes:g} MB per transfer")
    say(f"tbf {args.rate / 1e6:g} Mbit/s each way, queue {args.queue_ms:g} ms")
    work = tempfile.mkdtemp(prefix="rudpkl-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        files = {"payload": os.path.join(work, "payload.bin"), "outdir": os.path.join(work, "out")}
        os.mkdir(files["outdir"])
        Path(files["payload"]).write_bytes(os.urandom(int(args.megabytes * 1e6)))
        sys.path.insert(0, str(HERE))
        from peers import _self_signed_certificate  # the certificate bench/run.py's QUIC uses

        files["cert"], files["key"] = _self_signed_certificate(work)
        from rudp.psk import write_psk_file

        files["psk"] = os.path.join(work, "psk")
        write_psk_file(files["psk"])
        measure(tag, args, files, record)
    except KeyboardInterrupt:
        say("interrupted: cleaning up, then the table so far")
        status = 130
    finally:
        for host in hosts(tag):
            run(sh(f"ip netns del {host.ns}"), check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(format_table(record.pop("cells"), args.rate))
    record["elapsed_seconds"] = elapsed = time.monotonic() - started
    print(f"full run: {elapsed:.0f} s")
    if args.json is not None:
        name = time.strftime("kernel_link-%Y%m%d-%H%M%S.json")
        path = Path(args.json) if args.json else HERE / "out" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        record["results"] = [asdict(r) | {"mbps": r.mbps} for r in record["results"]]
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")
    return status


# --- workers: one end of one transfer, run inside a namespace by the code above -----------
# Each prints one JSON line (os.write: safe from a signal handler) and keeps its own deadline.

STATE: dict[str, float] = {"received": 0, "reported": 0, "ok": 0, "cpu": 0.0}


def emit(**fields: object) -> None:
    STATE["reported"] = 1
    os.write(1, (json.dumps(fields) + "\n").encode())


def deadline(seconds: float, server: bool) -> None:
    """After ``seconds`` (or SIGTERM, for a server) report what is known and exit: a server
    the bytes received so far, a client that it timed out (unless it reported already)."""

    def expire(*_: object) -> None:
        if not STATE["reported"]:
            emit(received=STATE["received"]) if server else emit(ok=False, timed_out=True)
        os._exit(0 if server or STATE["ok"] else 3)

    signal.signal(signal.SIGALRM, expire)
    if server:
        signal.signal(signal.SIGTERM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def connected() -> float:
    STATE["cpu"] = time.process_time()  # all threads of the sender, from here on
    return time.perf_counter()


def finished(t0: float, t1: float, **extra: object) -> None:
    """The client's report; afterwards a graceful close gets 10 s more at most."""
    STATE["ok"], cpu, seconds = 1, time.process_time() - STATE["cpu"], time.perf_counter() - t1
    emit(ok=True, connect_seconds=t1 - t0, seconds=seconds, sender_cpu=cpu, **extra)
    signal.setitimer(signal.ITIMER_REAL, 10.0)


def tcp_client(a: argparse.Namespace) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, a.cc.encode())
    t0 = time.perf_counter()
    sock.connect((a.host, a.port))
    t1 = connected()
    cc = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    if cc != a.cc:
        sys.exit(f"congestion control is {cc}, not {a.cc}")
    block = memoryview(os.urandom(CHUNK))
    for sent in range(0, a.bytes, CHUNK):
        sock.sendall(block[: min(CHUNK, a.bytes - sent)])
    sock.shutdown(socket.SHUT_WR)
    confirmed = b""
    while len(confirmed) < 8 and (data := sock.recv(8 - len(confirmed))):
        confirmed += data
    if int.from_bytes(confirmed, "big") != a.bytes:
        sys.exit(f"receiver confirmed {confirmed!r}, not {a.bytes} bytes")
    finished(t0, t1, cc=cc)


def tcp_server(a: argparse.Namespace) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, a.cc.encode())
    listener.bind((a.host, a.port))
    listener.listen(1)
    conn, _ = listener.accept()
    # Confirm as soon as the last byte is in, not at the client's FIN (which may be lost).
    while STATE["received"] < a.bytes and (data := conn.recv(1 << 20)):
        STATE["received"] += len(data)
    conn.sendall(int(STATE["received"]).to_bytes(8, "big"))
    emit(received=STATE["received"])
    conn.close()  # the kernel still delivers the confirmation after we exit


async def quic_client(a: argparse.Namespace) -> None:
    import ssl

    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(is_client=True, alpn_protocols=["bench"])
    config.verify_mode = ssl.CERT_NONE  # the server's certificate is self-signed
    t0 = time.perf_counter()
    async with connect(a.host, a.port, configuration=config) as client:
        t1 = connected()
        reader, writer = await client.create_stream()
        block = os.urandom(CHUNK)
        for sent in range(0, a.bytes, CHUNK):
            writer.write(block[: min(CHUNK, a.bytes - sent)])
            await writer.drain()
        writer.write_eof()
        if int.from_bytes(await reader.readexactly(8), "big") != a.bytes:
            sys.exit("receiver confirmed a different byte count")
        finished(t0, t1, congestion_control=config.congestion_control_algorithm)


async def quic_server(a: argparse.Namespace) -> None:
    from aioquic.asyncio import serve
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated, StreamDataReceived

    done, closed = asyncio.Event(), asyncio.Event()

    class Sink(QuicConnectionProtocol):
        def quic_event_received(self, event: object) -> None:
            if isinstance(event, StreamDataReceived):
                STATE["received"] += len(event.data)
                if event.end_stream:  # confirm on the same stream, like the TCP server
                    count = int(STATE["received"]).to_bytes(8, "big")
                    self._quic.send_stream_data(event.stream_id, count, end_stream=True)
                    self.transmit()
                    done.set()
            elif isinstance(event, ConnectionTerminated):
                closed.set()

    config = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
    config.load_cert_chain(a.cert, a.key)
    server = await serve(a.host, a.port, configuration=config, create_protocol=Sink)
    await done.wait()
    emit(received=STATE["received"])
    await closed.wait()  # keep retransmitting the confirmation until the client closes
    server.close()


def rudp_send(a: argparse.Namespace) -> None:
    # The CLI's own send path (filetransfer.send_file: header, chunks hashed as they go,
    # the SHA-256 trailer, the receiver's verdict), with a clock between the handshake
    # and the verdict that `python -m rudp send` does not expose; the receiver is the
    # unmodified CLI.
    import rudp
    from rudp.apps import filetransfer
    from rudp.psk import load_psk

    t0 = time.perf_counter()
    psk = None if a.psk_file is None else load_psk(a.psk_file)
    conn = rudp.connect((a.host, a.port), timeout=a.timeout, psk=psk)
    t1 = connected()
    filetransfer.send_file(conn, a.file)  # returns only once the receiver verified the digest
    stats = conn.stats
    # The sender's view goes into the JSON: why a slow run was slow.
    finished(
        t0,
        t1,
        retransmissions=stats.retransmissions,
        timeouts=stats.timeouts,
        spurious=stats.spurious_retransmissions,
        srtt=stats.srtt,
        min_rtt=stats.min_rtt,
    )
    conn.close()


def worker(argv: list[str]) -> None:
    roles = {"tcp-client": tcp_client, "tcp-server": tcp_server, "rudp-send": rudp_send}
    coroutines = {"quic-client": quic_client, "quic-server": quic_server}
    parser = argparse.ArgumentParser(prog="kernel_link.py _worker")
    parser.add_argument("role", choices=[*roles, *coroutines])
    for name in ("--host", "--cc", "--file", "--cert", "--key", "--psk-file"):
        parser.add_argument(name)
    for name, kind in (("--port", int), ("--bytes", int), ("--timeout", float)):
        parser.add_argument(name, type=kind, required=True)
    a = parser.parse_args(argv)
    server = a.role.endswith("server")
    deadline(a.timeout + 20 if server else a.timeout, server)  # a server outlives its client
    if a.role in roles:
        roles[a.role](a)
    else:
        asyncio.run(coroutines[a.role](a))
    os._exit(0)  # skip interpreter teardown: aioquic's loop and rudp's threads are done


if __name__ == "__main__":
    if sys.argv[1:2] == ["_worker"]:
        worker(sys.argv[2:])
    else:
        sys.exit(main())
