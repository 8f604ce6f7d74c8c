"""The pure parts of bench/kernel_link.py: arguments, the commands it would run, its table.

Nothing here needs root, namespaces or a network: the benchmark itself is run by hand
(`make bench-kernel`), since pass/fail tests must not hang on timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "bench" / "kernel_link.py"
spec = importlib.util.spec_from_file_location("kernel_link", PATH)
assert spec is not None and spec.loader is not None
kl = importlib.util.module_from_spec(spec)
sys.modules["kernel_link"] = kl  # dataclasses look their module up by name
spec.loader.exec_module(kl)

TAG = "4242"
SERVER, CLIENT = kl.hosts(TAG)


def _drop_probability(command: list[str]) -> float:
    assert command[command.index("-j") + 1] == "DROP"
    assert command[command.index("--mode") + 1] == "random"
    return float(command[command.index("--probability") + 1])


def test_loss_rules_drop_on_arrival_at_both_hosts() -> None:
    rules = kl.loss_commands(TAG, 0.1)
    assert len(rules) == 2
    for rule, host in zip(rules, (SERVER, CLIENT), strict=True):
        assert rule[:4] == ["ip", "netns", "exec", host.ns]
        assert rule[rule.index("-A") + 1] == "INPUT"
        assert rule[rule.index("-i") + 1] == host.dev
        assert "-p" not in rule  # every protocol meets the same loss
        assert _drop_probability(rule) == 0.1
    assert SERVER.ns != CLIENT.ns


def test_loss_zero_adds_no_rule_and_clearing_flushes_both() -> None:
    assert kl.loss_commands(TAG, 0.0) == []
    clear = kl.clear_loss_commands(TAG)
    assert [c[3] for c in clear] == [SERVER.ns, CLIENT.ns]
    assert all(c[-2:] == ["-F", "INPUT"] for c in clear)


def test_setup_limits_both_directions_and_turns_offloads_off() -> None:
    commands = kl.setup_commands(TAG, 100_000_000, 50.0, offloads=False)
    tbf = [c for c in commands if "tbf" in c]
    assert [c[3] for c in tbf] == [SERVER.ns, CLIENT.ns]
    assert [c[c.index("dev") + 1] for c in tbf] == [SERVER.dev, CLIENT.dev]
    for command in tbf:
        assert command[command.index("rate") + 1] == "100000000bit"
        burst = int(command[command.index("burst") + 1])
        assert 3 * 1514 <= burst <= 100_000  # holds frames, yet under 1% of 10 MB
        assert command[command.index("latency") + 1] == "50ms"
    ethtool = [c for c in commands if "ethtool" in c]
    assert len(ethtool) == 2 and all("gso" in c and "tso" in c and "gro" in c for c in ethtool)
    assert not any("ethtool" in c for c in kl.setup_commands(TAG, 10**8, 50.0, offloads=True))
    assert all(len(host.dev) < 16 for host in kl.hosts("4194304"))  # IFNAMSIZ, largest pid


def test_transfers_run_inside_their_namespaces() -> None:
    files = {"outdir": "/o", "payload": "/p", "cert": "/c", "key": "/k"}
    server, client = kl.transfer_commands(TAG, "rudp", 20001, 10**7, 120, files)
    assert server[:4] == ["ip", "netns", "exec", SERVER.ns]
    assert client[:4] == ["ip", "netns", "exec", CLIENT.ns]
    assert server[4:8] == [sys.executable, "-m", "rudp", "recv"] and "--once" in server
    assert server[server.index("--listen") + 1] == f"{SERVER.address}:20001"
    assert client[client.index("--host") + 1] == SERVER.address
    server, client = kl.transfer_commands(TAG, "bbr", 20002, 10**7, 120, files)
    assert client[client.index("--cc") + 1] == "bbr" and "tcp-client" in client
    assert client[client.index("--bytes") + 1] == str(10**7)


def test_arguments() -> None:
    args = kl.build_parser().parse_args(["--loss", "0,1%,0.05", "--rate", "50mbit"])
    assert args.loss == [0.0, 0.01, 0.05]
    assert args.rate == 50_000_000
    defaults = kl.build_parser().parse_args([])
    assert defaults.loss == [0.0, 0.01, 0.05, 0.1, 0.2]
    assert defaults.rate == 100_000_000 and defaults.megabytes == 10 and defaults.json is None
    assert kl.build_parser().parse_args(["--json"]).json == ""  # the default place
    for bad in ("1.5", "x", "-0.1"):
        with pytest.raises(argparse.ArgumentTypeError):
            kl.parse_losses(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        kl.parse_protocols("bbr,sctp")


def _ok(proto: str, loss: float, mbps: float) -> object:
    size = 10_000_000
    return kl.Result(proto, loss, size, ok=True, seconds=size * 8 / (mbps * 1e6), moved=size)


def test_table_limits_and_ratios() -> None:
    cells = {
        0.1: {
            "bbr": _ok("bbr", 0.1, 80.0),
            "cubic": _ok("cubic", 0.1, 40.0),
            "aioquic": kl.Result("aioquic", 0.1, 10**7, timed_out=True, moved=3_400_000),
            "rudp": _ok("rudp", 0.1, 45.0),
        }
    }
    row = kl.format_table(cells, 100_000_000).splitlines()[2].split()
    # loss, limit (1 - p) * rate, BBR, CUBIC, aioquic (timed out), rudp, rudp/BBR, rudp/limit
    assert row == ["10%", "90.0", "80.0", "40.0", "t/o", "3.4MB", "45.0", "0.56", "0.50"]


def test_table_has_no_ratio_without_both_figures() -> None:
    cells = {0.0: {"bbr": kl.Result("bbr", 0.0, 10**7, note="failed"), "rudp": _ok("rudp", 0, 90)}}
    row = kl.format_table(cells, 100_000_000).splitlines()[2].split()
    assert row == ["0%", "100.0", "failed", "-", "-", "90.0", "-", "0.90"]


def test_summary_is_the_median_unless_a_run_failed() -> None:
    runs = [_ok("rudp", 0, m) for m in (50.0, 90.0, 70.0)]
    assert kl.summarize(runs).mbps == pytest.approx(70.0)
    bad = kl.Result("rudp", 0, 10**7, timed_out=True, moved=5)
    assert kl.summarize([*runs, bad]) is bad


def test_table_shows_the_keyed_column_only_when_measured() -> None:
    cells = {0.2: {"bbr": _ok("bbr", 0.2, 64.0), "rudp": _ok("rudp", 0.2, 72.0)}}
    assert "rudp psk=" not in kl.format_table(cells, 100_000_000)
    cells[0.2]["rudp-psk"] = _ok("rudp-psk", 0.2, 70.0)
    table = kl.format_table(cells, 100_000_000).splitlines()
    assert "rudp psk=" in table[0]
    assert table[2].split() == ["20%", "80.0", "64.0", "-", "-", "72.0", "70.0", "1.12", "0.90"]
