"""Dataplane benchmark: pod->pod through pycalico vs raw baselines, interleaved in one run.

Brings up real calico-labs (one at a time: ``--encap none``, ``vxlan``, ``ipip``; 2 nodes,
sqlite) with pods added by the real CNI, and builds its own baselines in namespaces it
creates (``tests.fixtures.netns.NetnsFactory``):
- raw veth pair: two namespaces joined by one veth;
- raw underlay node->node: the lab's own underlay (node1 eth0 -> bridge -> node2 eth0);
- plain VXLAN pair: a bridge underlay of the lab's shape, with one ``ip link add type vxlan``
  device per node (kernel defaults: MTU = underlay - 50, UDP checksums on), no pycalico.

Per comparison, every metric interleaves system and baselines (:func:`harness.interleave`,
order rotating each round, >= 5 rounds): TCP throughput with 1 and 4 streams (iperf3), and
request/response transactions/s (sockperf ping-pong over TCP, one 14-byte message in flight
= TCP_RR). IPIP: the kernel here has no ``ipip`` module, so pycalico's IPIP runs in its
userspace fallback (``felix/dataplane/uipip.py``): that figure measures the fallback.

It also records, for the explanation in BENCHMARKS.md, each device's MTU and offload
settings (``ethtool -k``: GRO, GSO, TSO, checksums) on the pod veth, the cali veth,
``vxlan.calico`` and the baseline devices, and idle calico-node RSS/CPU of the lab nodes.

All traffic stays inside namespaces this bench created. Labs get a private CALICO_LAB_DIR and
are always taken down. Writes ``bench/results/parts/dataplane.json``.
Usage: ``python bench/dataplane.py [--rounds 5] [--seconds 2] [--only none,vxlan,ipip]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.fixtures.netns import NetnsFactory  # noqa: E402

import harness  # noqa: E402

BIN = Path(sys.executable).parent
CALICO_LAB = str(BIN / "calico-lab")
CMD = "python bench/dataplane.py"
OFFLOADS = (
    "rx-checksumming",
    "tx-checksumming",
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "rx-gro-list",
    "rx-udp-gro-forwarding",
)


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, **kw)


def nsexec(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


class Servers:
    """iperf3 and sockperf servers started by this bench (killed by PID at the end)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.port = 15201

    def start(self, ns: str, ip: str) -> tuple[int, int]:
        """Start one iperf3 and one sockperf server on ``ip`` in ``ns``; their ports."""
        ip_port, rr_port = self.port, self.port + 1
        self.port += 2
        for argv in (
            ["iperf3", "-s", "-B", ip, "-p", str(ip_port)],
            ["sockperf", "server", "--tcp", "-i", ip, "-p", str(rr_port)],
        ):
            self.procs.append(
                subprocess.Popen(
                    nsexec(ns, *argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        time.sleep(0.3)
        return ip_port, rr_port

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()


class Path_:
    """One client->server path: a client namespace and a server address with its servers."""

    def __init__(self, label: str, cli_ns: str, srv_ns: str, ip: str, servers: Servers) -> None:
        self.label, self.cli_ns, self.srv_ns, self.ip = label, cli_ns, srv_ns, ip
        self.ip_port, self.rr_port = servers.start(srv_ns, ip)

    def tcp(self, streams: int, secs: int) -> float:
        """iperf3 TCP throughput in Gbit/s (receiver side)."""
        argv = ["iperf3", "-c", self.ip, "-p", str(self.ip_port), "-t", str(secs), "-J"]
        if streams > 1:
            argv += ["-P", str(streams)]
        for attempt in range(3):
            r = subprocess.run(nsexec(self.cli_ns, *argv), capture_output=True, text=True)
            if r.returncode == 0:
                return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9
            time.sleep(0.3 * (attempt + 1))  # server busy with a previous test's teardown
        raise RuntimeError(f"iperf3 {self.label}: {r.stdout[-400:]} {r.stderr[-400:]}")

    def rr(self, secs: int) -> float:
        """TCP request/response rate: 1 / median round trip of sockperf ping-pong (one
        message in flight, as TCP_RR). The median, not the mean: on a shared machine a few
        scheduling stalls of milliseconds would otherwise decide the figure."""
        argv = ["sockperf", "ping-pong", "--tcp", "-i", self.ip, "-p", str(self.rr_port)]
        out = ""
        for attempt in range(3):  # a loaded machine sometimes times out one connect: retry
            r = subprocess.run(nsexec(self.cli_ns, *argv, "-t", str(secs)), capture_output=True,
                               text=True)  # fmt: skip
            out = r.stdout + r.stderr
            for line in out.splitlines():
                if "percentile 50.000" in line:
                    return 1e6 / float(line.split("=")[-1].strip())
            time.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"sockperf {self.label}: no median in {out[-400:]}")


def devinfo(ns: str, dev: str) -> dict[str, Any]:
    """MTU, link kind details and offload features of ``dev`` in ``ns``."""
    link = json.loads(sh(["ip", "-j", "-d", "-n", ns, "link", "show", dev]).stdout)[0]
    feats: dict[str, str] = {}
    r = subprocess.run(nsexec(ns, "ethtool", "-k", dev), capture_output=True, text=True)
    for line in r.stdout.splitlines():
        k, _, v = line.strip().partition(":")
        if k in OFFLOADS:
            feats[k] = v.strip()
    info = link.get("linkinfo", {})
    out = {"mtu": link["mtu"], "kind": info.get("info_kind", ""), "offloads": feats}
    data = info.get("info_data", {})
    if out["kind"] == "vxlan":
        out["vxlan"] = {
            k: data.get(k) for k in ("port", "udp_csum", "learning", "ttl", "id") if k in data
        }
    out["gso_max_size"] = link.get("gso_max_size")
    out["gro_max_size"] = link.get("gro_max_size")
    return out


# -- labs ------------------------------------------------------------------------------


@contextlib.contextmanager
def lab(name: str, encap: str, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A 2-node lab with pods a, b on node1 and c on node2; yields its state."""
    try:
        sh([CALICO_LAB, "up", "--name", name, "--nodes", "2", "--encap", encap], env=env)
        for node, pod in (("node1", "a"), ("node1", "b"), ("node2", "c")):
            sh([CALICO_LAB, "pod", "add", "--name", name, "--ports", "80/TCP", node,
                f"default/{pod}"], env=env)  # fmt: skip
        state = json.loads((Path(env["CALICO_LAB_DIR"]) / name / "state.json").read_text())
        yield state
    finally:
        subprocess.run([CALICO_LAB, "down", "--name", name], env=env, capture_output=True)


def pods(state: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {p["name"]: (p["netns"], p["ips"][0].split("/")[0]) for p in state["pods"]}


def nodes(state: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {n["name"]: (n["netns"], n["ip"].split("/")[0]) for n in state["nodes"]}


def node_footprint(state: dict[str, Any], settle: float) -> dict[str, float]:
    """calico-node RSS (MiB) and CPU (% of one core) averaged over the lab's nodes, idle."""
    pids = [n["pid"] for n in state["nodes"]]
    c0 = {p: harness.cpu_s(p) for p in pids}
    time.sleep(settle)
    rss = [harness.rss_mb(p) for p in pids]
    cpus = [100 * (harness.cpu_s(p) - c0[p]) / settle for p in pids]
    return {"rss_mib": sum(rss) / len(rss), "cpu_pct": sum(cpus) / len(cpus)}


# -- baselines -------------------------------------------------------------------------


def raw_veth(f: NetnsFactory) -> tuple[str, str, str]:
    """(client ns, server ns, server ip) of one veth pair."""
    a, b = f.netns("va"), f.netns("vb")
    f.veth(a, "eth0", b, "eth0", a_addr="10.251.0.1/24", b_addr="10.251.0.2/24")
    return a.name, b.name, "10.251.0.2"


def vxlan_pair(f: NetnsFactory) -> tuple[str, str, str, list[tuple[str, str]]]:
    """A bridge underlay with two nodes and a plain VXLAN device pair (no pycalico)."""
    ul = f.underlay(2, subnet="198.19.250.0/24")
    n1, n2 = ul.nodes
    ips = ul.node_ips
    for me, mine, peer, ip in (
        (n1, ips[0], ips[1], "10.251.2.1"),
        (n2, ips[1], ips[0], "10.251.2.2"),
    ):
        me.batch([
            f"link add vx0 type vxlan id 42 local {mine} remote {peer} dstport 4789 dev eth0",
            f"addr add {ip}/24 dev vx0",
            "link set vx0 up",
        ])  # fmt: skip
    return n1.name, n2.name, "10.251.2.2", [(n1.name, "vx0"), (n1.name, "eth0")]


# -- measurement -----------------------------------------------------------------------


def compare(
    fid: str,
    title: str,
    sides: dict[str, Path_],
    system: str,
    baselines: list[str],
    args: argparse.Namespace,
    tick: Callable[[], None],
    metrics: tuple[str, ...],
    only: str,
    note: str = "",
    reference: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Interleaved runs of every side per metric; one figure per (system, baseline) and, with
    ``reference``, one baseline-vs-baseline figure (what the kernel alone costs)."""
    out = []
    secs = args.seconds
    for metric in metrics:
        if metric == "rr":
            fns = {k: (lambda p=p: p.rr(secs)) for k, p in sides.items()}
            unit, what = "transactions/s", "TCP request/response rate (1 / median RTT)"
        else:
            n = 1 if metric == "tcp1" else 4
            fns = {k: (lambda p=p, n=n: p.tcp(n, secs)) for k, p in sides.items()}
            unit, what = "Gbit/s", f"TCP throughput, {n} stream{'s' if n > 1 else ''}"
        s = harness.interleave(fns, args.rounds, tick)
        pairs = [(system, b) for b in baselines] + ([reference] if reference else [])
        for a, b in pairs:
            ref = "" if a == system else f"reference.{a.replace(' ', '_')}."
            out.append(
                harness.figure(
                    f"dataplane.{fid}.{metric}.{ref}vs_{b.replace(' ', '_')}",
                    f"{title}: {what}" + (f" (reference: {a} vs {b})" if ref else ""),
                    unit,
                    harness.pair(s, a, b),
                    system=a,
                    baseline=b,
                    command=f"{CMD} --only {only} --rounds {args.rounds} --seconds {secs}",
                    note=note,
                )
            )
    return out


def main() -> None:
    quick = harness.quick()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5 if quick else 7)
    ap.add_argument("--seconds", type=int, default=1 if quick else 2)
    ap.add_argument("--only", default="none,vxlan,ipip")
    args = ap.parse_args()
    only = set(args.only.split(","))
    figures: list[dict[str, Any]] = []
    devices: dict[str, Any] = {}
    footprint: dict[str, Any] = {}
    tag = f"bd{os.getpid() % 100000}"
    metrics = ("tcp1", "rr") if quick else ("tcp1", "tcp4", "rr")
    cross_metrics = ("tcp1",) if quick else metrics  # QUICK: RR only where it is cheapest

    def tick() -> None:
        print("round", flush=True)

    def save() -> None:  # after every comparison: a later failure keeps what was measured
        harness.write_part("dataplane", figures, devices=devices, footprint=footprint,
                           args=vars(args))  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench-dp-") as d, NetnsFactory(tag="bdp") as f:
        env = dict(os.environ, CALICO_LAB_DIR=d)
        servers = Servers()
        try:
            va, vb, vip = raw_veth(f)
            veth = Path_("raw veth", va, vb, vip, servers)
            x1, x2, xip, xdevs = vxlan_pair(f)
            vxp = Path_("plain VXLAN pair", x1, x2, xip, servers)
            for ns, dev in ((va, "eth0"), *xdevs):
                devices[f"baseline {ns.split('-')[-1]}:{dev}"] = devinfo(ns, dev)
            if "none" in only:
                with lab(f"{tag}n", "none", env) as st:
                    footprint["idle_2_nodes_3_pods"] = node_footprint(st, 3 if quick else 10)
                    p, n = pods(st), nodes(st)
                    n1 = n["node1"][0]
                    same = Path_("pod->pod same node", p["a"][0], *p["b"], servers)
                    cross = Path_("pod->pod cross-node", p["a"][0], *p["c"], servers)
                    ul = Path_("underlay node->node", n1, *n["node2"], servers)
                    devices["lab none pod:eth0"] = devinfo(p["a"][0], "eth0")
                    links = json.loads(sh(["ip", "-j", "-n", n1, "link"]).stdout)
                    cali = [k["ifname"] for k in links if k["ifname"].startswith("cali")]
                    if cali:
                        devices["lab none node1:cali"] = devinfo(n1, cali[0])
                    sides = {"pod->pod same node": same, "raw veth": veth}
                    figures += compare("same_node", "pod->pod same node", sides,
                                       "pod->pod same node", ["raw veth"], args, tick,
                                       metrics, "none")  # fmt: skip
                    sides = {"pod->pod cross-node": cross, "underlay": ul}
                    figures += compare("none_cross", "pod->pod cross-node, no encapsulation",
                                       sides, "pod->pod cross-node", ["underlay"], args, tick,
                                       cross_metrics, "none")  # fmt: skip
                    save()
            if "vxlan" in only:
                with lab(f"{tag}v", "vxlan", env) as st:
                    p, n = pods(st), nodes(st)
                    n1 = n["node1"][0]
                    pod = Path_("pod->pod VXLAN", p["a"][0], *p["c"], servers)
                    ul = Path_("underlay node->node", n1, *n["node2"], servers)
                    devices["lab vxlan node1:vxlan.calico"] = devinfo(n1, "vxlan.calico")
                    devices["lab vxlan pod:eth0"] = devinfo(p["a"][0], "eth0")
                    sides = {"pod->pod VXLAN": pod, "plain VXLAN pair": vxp, "underlay": ul}
                    figures += compare("vxlan_cross", "pod->pod cross-node, VXLAN", sides,
                                       "pod->pod VXLAN", ["plain VXLAN pair", "underlay"], args,
                                       tick, metrics, "vxlan",
                                       reference=("plain VXLAN pair", "underlay"))  # fmt: skip
                    save()
            if "ipip" in only:
                with lab(f"{tag}i", "ipip", env) as st:
                    p, n = pods(st), nodes(st)
                    sysname = "pod->pod IPIP (userspace)"
                    pod = Path_(sysname, p["a"][0], *p["c"], servers)
                    ul = Path_("underlay node->node", n["node1"][0], *n["node2"], servers)
                    note = ("no ipip kernel module here: pycalico's userspace IPIP fallback "
                            "(felix/dataplane/uipip.py) carries it")  # fmt: skip
                    figures += compare("ipip_cross", "pod->pod cross-node, IPIP (userspace)",
                                       {sysname: pod, "underlay": ul}, sysname, ["underlay"],
                                       args, tick, cross_metrics[:1] if quick else ("tcp1", "rr"),
                                       "ipip", note)  # fmt: skip
        finally:
            servers.stop()
    path = harness.write_part("dataplane", figures, devices=devices, footprint=footprint,
                              args=vars(args))  # fmt: skip
    for fig in figures:
        r = fig["ratio"]
        print(f"{fig['id']:<50} ratio {r['median']:.3f} [{r['min']:.3f}-{r['max']:.3f}]")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
