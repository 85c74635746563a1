"""The lab's optional top-of-rack router: FRR (zebra, bgpd, bfdd) in namespace ``<prefix>tor``.

``198.18.0.253/24`` on subnet 0's bridge (default route via the lab router, so nodes of a
second subnet reach it too), AS 64513, one eBGP neighbor per node (remote-as 64512,
``ebgp-multihop`` because Calico's BIRD peers multihop). It originates :data:`TOR_PREFIX`
(``network`` with the import check off), which every node must learn. The lab's datastore
gets the global BGPPeer ``tor`` (see :mod:`pycalico.lab.nodes`).

FRR's runtime directory (configs, PID files, zserv and vty sockets, logs) is a private
directory under ``/tmp`` owned by ``frr`` — zebra drops to that user and must reach it, which
a lab directory under a 0700 parent would not allow. ``<lab dir>/tor`` links to it; ``down``
removes it. Nodes of the second subnet resolve the ToR's next hop through their default
route (BIRD learns the kernel's non-pool routes), and zebra resolves theirs likewise
(``ip nht resolve-via-default``). With ``--subnets 2 --encap none`` pod traffic across the
router still needs an encapsulating (CrossSubnet) pool: the lab router knows no pod routes.
``bfdd`` runs too, so a test can turn BFD on per neighbor (``neighbor <ip> bfd``).
Invariant: the three daemons' PIDs are in ``state.tor_pids`` before ``start`` returns.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pycalico.lab.netns import LabError, in_ns, ip_batch, run
from pycalico.lab.state import LabState
from pycalico.lab.topology import TOR_HOST, UNDERLAY, add_netns, router_ip

TOR_AS = 64513
NODE_AS = 64512
TOR_PREFIX = "203.0.113.0/24"
ZEBRA = "/usr/lib/frr/zebra"
BGPD = "/usr/lib/frr/bgpd"
BFDD = "/usr/lib/frr/bfdd"  # idle until a neighbor is given "bfd" (``calico-lab tor ...``)
FRR_USER = "frr"


def tor_ip() -> str:
    return UNDERLAY.format(subnet=0, host=TOR_HOST)


def bgpd_conf(state: LabState, runtime: Path) -> str:
    lines = [
        "hostname tor",
        f"log file {runtime / 'bgpd.log'}",
        f"router bgp {TOR_AS}",
        f" bgp router-id {tor_ip()}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
    ]
    ips = [n.ip.split("/")[0] for n in state.nodes]
    for ip in ips:
        lines += [
            f" neighbor {ip} remote-as {NODE_AS}",
            f" neighbor {ip} ebgp-multihop 4",
            f" neighbor {ip} timers connect 1",
        ]
    lines += [" address-family ipv4 unicast", f"  network {TOR_PREFIX}"]
    lines += [f"  neighbor {ip} activate" for ip in ips]
    lines += [" exit-address-family", ""]
    return "\n".join(lines)


def zebra_conf(runtime: Path) -> str:
    # Next hops of nodes on the other subnet resolve through the default route.
    return f"hostname tor\nlog file {runtime / 'zebra.log'}\nip nht resolve-via-default\n"


def runtime_dir(state: LabState) -> Path:
    return state.path / "tor"


def _make_runtime(state: LabState) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f"calico-lab-{state.prefix}frr-", dir="/tmp"))
    link = runtime_dir(state)
    link.unlink(missing_ok=True)
    link.symlink_to(d)
    d.chmod(0o755)
    return d


def _chown_frr(d: Path) -> None:
    uid, gid = pwd.getpwnam(FRR_USER).pw_uid, grp.getgrnam(FRR_USER).gr_gid
    os.chown(d, uid, gid)
    for p in d.iterdir():
        os.chown(p, uid, gid)


def _read_pid(path: Path, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise LabError(f"FRR did not write {path}")


def start(state: LabState) -> None:
    """Create the ToR namespace and start zebra, bgpd and bfdd (nodes must be in the state)."""
    ns = state.prefix + "tor"
    add_netns(state, ns)
    ul = state.prefix + "ul"
    run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "tor", "netns", ul])
    ip_batch(["link set tor master br0", "link set tor up"], netns=ul)
    ip_batch(
        [
            f"addr add {tor_ip()}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {router_ip(0)} dev eth0",
        ],
        netns=ns,
    )
    d = _make_runtime(state)
    (d / "zebra.conf").write_text(zebra_conf(d))
    (d / "bgpd.conf").write_text(bgpd_conf(state, d))
    _chown_frr(d)
    common = ["-z", str(d / "zserv.api"), "--vty_socket", str(d), "-P", "0"]
    zebra = [ZEBRA, "-d", "-u", FRR_USER, "-g", FRR_USER, "-f", str(d / "zebra.conf"),
             "-i", str(d / "zebra.pid"), *common]  # fmt: skip
    run(in_ns(ns, zebra))
    zebra_pid = _read_pid(d / "zebra.pid")
    state.update(lambda s: s.tor_pids.append(zebra_pid))
    bgpd = [BGPD, "-d", "-S", "-f", str(d / "bgpd.conf"), "-i", str(d / "bgpd.pid"), *common]
    run(in_ns(ns, bgpd))
    bgpd_pid = _read_pid(d / "bgpd.pid")
    state.update(lambda s: s.tor_pids.append(bgpd_pid))
    bfdd = [BFDD, "-d", "-u", FRR_USER, "-g", FRR_USER, "-i", str(d / "bfdd.pid"), *common]
    run(in_ns(ns, bfdd))
    bfdd_pid = _read_pid(d / "bfdd.pid")
    state.update(lambda s: s.tor_pids.append(bfdd_pid))


def remove_runtime(state_dir: Path) -> None:
    link = state_dir / "tor"
    if link.is_symlink():
        target = link.resolve()
        if target.name.startswith("calico-lab-") and target.parent == Path("/tmp"):
            shutil.rmtree(target, ignore_errors=True)


def vtysh_argv(state: LabState, *commands: str) -> list[str]:
    argv = ["vtysh", "--vty_socket", str(runtime_dir(state).resolve())]
    for c in commands:
        argv += ["-c", c]
    return in_ns(state.prefix + "tor", argv)


def vtysh_json(state: LabState, command: str) -> Any:
    out = run(vtysh_argv(state, command)).stdout
    try:
        return json.loads(out)
    except ValueError as e:
        raise LabError(f"vtysh {command!r}: not JSON: {out[:200]}") from e


def summary(state: LabState) -> dict[str, Any]:
    """The ToR's view for ``calico-lab status``: its address, AS and each neighbor's state."""
    out: dict[str, Any] = {"ip": tor_ip(), "as": TOR_AS, "peers": {}}
    try:
        data = vtysh_json(state, "show bgp summary json")
    except LabError as e:
        out["error"] = str(e)
        return out
    peers = (data.get("ipv4Unicast") or {}).get("peers") or {}
    out["peers"] = {ip: str(p.get("state", "")) for ip, p in peers.items()}
    return out
