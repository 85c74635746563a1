"""calico-lab e2e: IPv6 end to end in dual-stack labs (issue 17, IPv6 part).

One 3-node ``--dual-stack`` lab per mode (``none``: v6 blocks routed by BGP; ``vxlan``: v6
over ``vxlan-v6.calico``), four pods (one per node plus a labelled client on node1), each
with an IPv4 and an IPv6 address. In each mode: with no policy the matrix is all-allowed
over both families; the v6 block routes are BIRD's (proto bird, via the peer's v6 address)
or Felix's over the v6 VTEP, whose address came from IPAM at startup; with a policy whose
rules differ by family (``ipVersion: 6``, a v4-only ``nets``) the live matrix of each family
equals ``calicoctl policy matrix --ip-version``; a pod reaches the v6 underlay router from
its node's v6 address (natOutgoing on the v6 pool); a pod resolves a peer's AAAA record and
connects to it by name over IPv6.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import CALICO_LAB, Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

PORTS = "80/TCP,80/UDP"
PODS = [("node1", "default/p1", ""), ("node2", "default/p2", ""), ("node3", "default/p3", ""),
        ("node1", "default/c1", "role=client")]  # fmt: skip
POLICY = textwrap.dedent(
    """\
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: by-family, namespace: default}
    spec:
      selector: "!has(role)"
      types: [Ingress]
      ingress:
      - {action: Allow, protocol: UDP, ipVersion: 6}
      - {action: Allow, protocol: TCP, source: {nets: [10.244.0.0/16]}}
      - {action: Allow, protocol: TCP, source: {selector: "role == 'client'"}}
    """
)


@pytest.fixture(scope="module", params=["none", "vxlan"])
def lab(request: pytest.FixtureRequest, lab_factory: Callable[[], Lab]) -> Iterator[Lab]:
    lab = lab_factory()
    try:
        lab.up("--nodes", "3", "--dual-stack", "--encap", request.param)
        with ThreadPoolExecutor(len(PODS)) as pool:  # pod adds are safe in parallel
            list(pool.map(lambda p: add_pod(lab, *p), PODS))
        yield lab
    finally:
        lab.down()  # before the next mode's lab comes up


def add_pod(lab: Lab, node: str, key: str, labels: str) -> None:
    lab.run("pod", "add", node, key, "--ports", PORTS, *(["--labels", labels] if labels else []))


def pods(lab: Lab) -> dict[str, dict[str, str]]:
    """pod key -> {"node", "4", "6"} (addresses without prefix length)."""
    out = {}
    for p in lab.state()["pods"]:
        ips = {str(ipaddress.ip_interface(a).version): a.split("/")[0] for a in p["ips"]}
        out[f"{p['namespace']}/{p['name']}"] = {"node": p["node"], **ips}
    return out


def test_every_pod_has_both_families_and_reaches_every_other_over_both(lab: Lab) -> None:
    assert all({"4", "6"} <= set(p) for p in pods(lab).values()), pods(lab)
    for version in (4, 6):
        m = lab.matrix_settled(
            lambda m: bool(m) and set(m.values()) == {"allow"}, ports=PORTS, ip_version=version
        )
        assert len(m) == 4 * 3 * 2 and set(m.values()) == {"allow"}, (version, m)


def test_v6_block_routes_follow_the_mode(lab: Lab) -> None:
    encap = lab.state()["encap"]
    nodes = {n["name"]: n["ip6"].split("/")[0] for n in lab.state()["nodes"]}
    block = ipaddress.ip_network(f"{pods(lab)['default/p2']['6']}/122", strict=False)
    out = ""

    def routed() -> bool:  # the route and the v6 VTEP device, in one look
        nonlocal out
        out = lab.exec("node1", "sh", "-c", f"ip -6 route show {block}; echo ---; "
                       "ip -d link show vxlan-v6.calico 2>&1; true").stdout  # fmt: skip
        return bool(out.split("---")[0].strip())

    assert wait_for(routed, 10), f"no route to p2's v6 block {block} on node1"
    route, link = out.split("---")
    if encap == "none":
        assert f"via {nodes['node2']} dev eth0 proto bird" in route, route
        assert "vxlan" not in link or "does not exist" in link, link
        return
    # vxlan: Felix's route over the v6 VTEP to node2's IPAM-allocated tunnel address
    spec = json.loads(lab.calicoctl("get", "node", "node2", "-o", "json").stdout)["spec"]
    tunnel = spec["ipv6VXLANTunnelAddr"]
    assert ipaddress.ip_address(tunnel) in block and spec["vxlanTunnelMACAddrV6"], spec
    assert f"via {tunnel} dev vxlan-v6.calico proto 80" in route, route
    assert "vxlan id 4096" in link and f"local {nodes['node1']}" in link, link


# Who the underlay router sees: a UDP server in the router's namespace answering with the
# source address of the datagram (the pool is not routed on the underlay, so any answer at
# all needs the masquerade).
SERVER = textwrap.dedent(
    """\
    import socket, sys
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::", 9999))
    print("ready", flush=True)
    while True:
        _, a = s.recvfrom(100); s.sendto(a[0].encode(), a)
    """
)
CLIENT = textwrap.dedent(
    """\
    import socket, sys
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(b"x", (sys.argv[1], 9999)); print(s.recvfrom(100)[0].decode())
    """
)


def test_v6_nat_outgoing_to_the_underlay(lab: Lab) -> None:
    router = "fd00:198:18::254"
    argv = [CALICO_LAB, "exec", "--name", lab.name, "router", "--", sys.executable, "-c", SERVER]
    server = subprocess.Popen(argv, env=lab.env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        node2 = next(n for n in lab.state()["nodes"] if n["name"] == "node2")["ip6"]
        seen = lab.exec("default/p2", sys.executable, "-c", CLIENT, router).stdout.strip()
        assert seen == node2.split("/")[0], seen
    finally:
        server.kill()
        server.wait(10)


def test_aaaa_names_pods_and_connects_over_v6(lab: Lab) -> None:
    p2 = pods(lab)["default/p2"]["6"]
    code = textwrap.dedent(
        """\
        import socket
        (fam, _, _, _, addr), = socket.getaddrinfo("p2", 80, socket.AF_INET6, socket.SOCK_STREAM)
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(2); s.connect(addr[:2])
        print(addr[0], s.recv(64).decode().strip())
        """
    )
    out = lab.exec("default/p1", sys.executable, "-c", code).stdout.split()
    assert out[:2] == [p2, "default/p2"], out


def test_live_matrix_equals_the_model_per_family_with_policy(lab: Lab) -> None:
    """Last in the module: it leaves its policy behind."""
    lab.run("apply", "-f", "-", input=POLICY)
    model = {v: lab.policy_matrix(PORTS, ip_version=v) for v in (4, 6)}
    for version in (4, 6):
        want = model[version]
        assert len(want) == 4 * 3 * 2 and set(want.values()) == {"allow", "deny"}
        live = lab.matrix_settled(lambda m: m == want, 30, PORTS, version)  # noqa: B023
        assert live == want, f"IPv{version}: live != model"
    # the families differ where the rules do: UDP only over v6, TCP from p* only over v4
    flow = ("default/p1", "default/p2", 80)
    assert (model[4][(*flow, "UDP")], model[6][(*flow, "UDP")]) == ("deny", "allow")
    assert (model[4][(*flow, "TCP")], model[6][(*flow, "TCP")]) == ("allow", "deny")
