"""tc guard benchmark: what the fail-closed tc guard (felix/dataplane/tcguard.py) costs a
forwarded pod -> pod flow, what marking established packets in nft costs, and what the
local-delivery guard (system/nfbpf.py, a netfilter BPF program on the input hook) costs a
pod -> host flow.

One node namespace with two pods wired Calico-style (tests/netns/test_felix_dataplane.py's
``Cluster``), three dataplane variants switched between samples and interleaved
(:func:`harness.interleave`, order rotating each round, >= 5 rounds):

- ``mark-after-est``: a forward chain ``ct state established,related accept`` then the
  evaluated mark (the ``calico`` table's order before the tc guard);
- ``mark-first``: the mark first, then the established accept (the order now);
- ``mark-first+guard``: the same plus the tc guard (eBPF on the pods' cali* ingress and
  egress and on the node's uplink egress).

Pod -> host (servers on an address of the node itself), two variants, both with the tc guard
and a table marking input packets first: ``local-guard`` (the netfilter BPF link attached)
and ``no-local-guard`` (detached).

Metrics: TCP throughput, 1 stream (iperf3), and TCP request/response rate (sockperf
ping-pong). All traffic stays in namespaces this bench creates. Writes
``bench/results/parts/tcguard.json``. Usage: ``python bench/tcguard.py [--rounds 5]
[--seconds 2]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from tests.fixtures.netns import NetnsFactory  # noqa: E402
from tests.netns.test_felix_dataplane import Cluster  # noqa: E402

import harness  # noqa: E402
from dataplane import Path_, Servers  # noqa: E402
from pycalico.felix.dataplane.tcguard import GuardDataplane  # noqa: E402
from pycalico.felix.rules.policy import MARK_EVALUATED  # noqa: E402
from pycalico.system.process import SubprocessRunner  # noqa: E402
from pycalico.system.tc import TcKernel  # noqa: E402

CMD = "python bench/tcguard.py"
MARK = f"meta mark set meta mark | {MARK_EVALUATED:#x}"
EST = "ct state established,related accept"


def table(first: str, second: str) -> str:
    return (
        "table ip benchguard\ndelete table ip benchguard\ntable ip benchguard {\n"
        "  chain f { type filter hook forward priority 0; "
        f"{first}; {second}; }}\n"
        f"  chain i {{ type filter hook input priority 0; {MARK}; {EST}; }}\n}}\n"
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=2)
    args = p.parse_args()
    servers = Servers()
    with tempfile.TemporaryDirectory() as tmp, NetnsFactory("tcg") as f:
        c = Cluster(f, Path(tmp) / "calico.db")
        c.add_pod("a", "10.66.0.1")
        c.add_pod("b", "10.66.0.2")
        tc = TcKernel(SubprocessRunner(), netns=c.node.name)
        guard = GuardDataplane(tc, "cali")
        path = Path_("a->b", c.pods["a"][0].name, c.pods["b"][0].name, "10.66.0.2", servers)
        c.node.ip("addr", "add", "10.66.255.1/32", "dev", "lo")
        host = Path_("a->host", c.pods["a"][0].name, c.node.name, "10.66.255.1", servers)

        def variant(first: str, second: str, guarded: bool) -> None:
            c.node.exec("nft", "-f", "-", input=table(first, second))
            if guarded:
                assert guard.apply() == []
            else:
                for dev in tc.list_links():
                    tc.del_guard(dev)

        def side(first: str, second: str, guarded: bool, metric: str) -> Callable[[], float]:
            def run() -> float:
                variant(first, second, guarded)
                return path.tcp(1, args.seconds) if metric == "tcp" else path.rr(args.seconds)

            return run

        def to_host(local: bool, metric: str) -> Callable[[], float]:
            def run() -> float:
                variant(MARK, EST, True)
                if not local:
                    tc.set_local_guard(frozenset())
                return host.tcp(1, args.seconds) if metric == "tcp" else host.rr(args.seconds)

            return run

        figures = []
        try:
            for metric, unit in (("tcp", "Gbit/s"), ("rr", "transactions/s")):
                samples = harness.interleave(
                    {
                        "mark-after-est": side(EST, MARK, False, metric),
                        "mark-first": side(MARK, EST, False, metric),
                        "mark-first+guard": side(MARK, EST, True, metric),
                    },
                    args.rounds,
                )
                for system, baseline, what in (
                    ("mark-first+guard", "mark-first", "tc guard"),
                    ("mark-first", "mark-after-est", "evaluated mark on established packets"),
                ):
                    fig = harness.figure(
                        f"tcguard_{metric}_{system}",
                        f"{what}: pod->pod {metric} ({system} / {baseline})",
                        unit,
                        harness.pair(samples, system, baseline),
                        system=system,
                        baseline=baseline,
                        command=CMD,
                    )
                    figures.append(fig)
                    print(f"{fig['title']}: ratio {fig['ratio']}")
                samples = harness.interleave(
                    {"local-guard": to_host(True, metric),
                     "no-local-guard": to_host(False, metric)},
                    args.rounds,
                )  # fmt: skip
                fig = harness.figure(
                    f"tcguard_{metric}_local_guard",
                    f"local-delivery guard: pod->host {metric} (local-guard / no-local-guard)",
                    unit,
                    harness.pair(samples, "local-guard", "no-local-guard"),
                    system="local-guard",
                    baseline="no-local-guard",
                    command=CMD,
                )
                figures.append(fig)
                print(f"{fig['title']}: ratio {fig['ratio']}")
        finally:
            servers.stop()
    print(harness.write_part("tcguard", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
