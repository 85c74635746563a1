"""calico-lab e2e: the encapsulation matrix (issue 8 acceptance).

One lab per encapsulation mode (3 nodes, one pod per node; the CrossSubnet modes over two
underlay subnets: node1, node2 on 198.18.0.0/24, node3 on 198.18.1.0/24 behind the lab
router). In each: every pod reaches every other over TCP and UDP (``calico-lab matrix``),
and what crosses the underlay bridge is what the mode promises — captured with tcpdump in
the ``underlay`` namespace while probes run: IP-in-IP (protocol 4) or VXLAN (UDP 4789)
between the node addresses, or the pod packets themselves (native). For the CrossSubnet
modes, same-subnet traffic (node1 -> node2) is native and cross-subnet traffic (node1 ->
node3) is encapsulated; each capture also checks the two other forms are absent.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import CALICO_LAB, Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

PORTS = "80/TCP,80/UDP"
CAPTURE_SECONDS = 3
FORMS = ("native", "ipip", "vxlan")

# encap -> (underlay subnets, form of node1->node2 traffic, form of node1->node3 traffic)
ENCAPS = {
    "none": (1, "native", "native"),
    "vxlan": (1, "vxlan", "vxlan"),
    "vxlan-crosssubnet": (2, "native", "vxlan"),
    "ipip": (1, "ipip", "ipip"),
    "ipip-crosssubnet": (2, "native", "ipip"),
}


@pytest.fixture(scope="module", params=sorted(ENCAPS))
def lab(request: pytest.FixtureRequest, lab_factory: Callable[[], Lab]) -> Iterator[Lab]:
    encap: str = request.param
    lab = lab_factory()
    try:
        lab.up("--nodes", "3", "--subnets", str(ENCAPS[encap][0]), "--encap", encap)
        for i in (1, 2, 3):
            lab.pod(f"node{i}", f"default/p{i}", ports=PORTS)
        yield lab
    finally:
        lab.down()  # before the next mode's lab comes up


def encap_of(lab: Lab) -> str:
    return str(lab.state()["encap"])


def pod_ip(lab: Lab, key: str) -> str:
    for p in lab.state()["pods"]:
        if f"{p['namespace']}/{p['name']}" == key:
            return str(p["ips"][0]).split("/")[0]
    raise KeyError(key)


def node_ip(lab: Lab, node: str) -> str:
    for n in lab.state()["nodes"]:
        if n["name"] == node:
            return str(n["ip"]).split("/")[0]
    raise KeyError(node)


def bpf(form: str, nodes: tuple[str, str], pods: tuple[str, str]) -> str:
    """A tcpdump filter matching only packets of the flow between ``pods`` in ``form`` (the
    filter sees outer headers only: an encapsulated packet's addresses are the nodes')."""
    if form == "ipip":
        return f"ip proto 4 and host {nodes[0]} and host {nodes[1]}"
    if form == "vxlan":
        return f"udp port 4789 and host {nodes[0]} and host {nodes[1]}"
    return f"host {pods[0]} and host {pods[1]}"


def capture(lab: Lab, src: str, dst: str, bridge: str = "br0") -> dict[str, list[str]]:
    """Form -> packet lines seen on the underlay ``bridge`` while ``src`` probes ``dst``.

    One tcpdump per form runs in the underlay namespace (``-c 1``, at most
    ``CAPTURE_SECONDS``); probes (TCP and UDP) run until every capture has finished."""
    nodes = {p["namespace"] + "/" + p["name"]: p["node"] for p in lab.state()["pods"]}
    node_pair = (node_ip(lab, nodes[src]), node_ip(lab, nodes[dst]))
    pod_pair = (pod_ip(lab, src), pod_ip(lab, dst))
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for form in FORMS:
            argv = [CALICO_LAB, "exec", "--name", lab.name, "underlay", "--", "timeout",
                    str(CAPTURE_SECONDS), "tcpdump", "-ni", bridge, "-c", "1",
                    bpf(form, node_pair, pod_pair)]  # fmt: skip
            p = subprocess.Popen(
                argv, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            procs[form] = p
        for p in procs.values():  # all started first: arming one never eats another's window
            assert p.stderr is not None
            for line in p.stderr:  # tcpdump says "listening on" once the capture is armed
                if "listening on" in line:
                    break
        n = 0
        while any(p.poll() is None for p in procs.values()):
            lab.run("probe", src, dst, ("80/TCP", "80/UDP")[n % 2], check=False)
            n += 1
        assert n > 0
        out = {form: p.communicate(timeout=10)[0] for form, p in procs.items()}
        # (tcpdump stopped by ``timeout`` prints an empty line)
        return {form: [ln for ln in text.splitlines() if ln.strip()] for form, text in out.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)


def test_every_pod_reaches_every_other_tcp_and_udp(lab: Lab) -> None:
    m: dict[tuple[str, str, int, str], str] = {}

    def all_allowed() -> bool:
        nonlocal m
        m = lab.matrix(PORTS)
        return set(m.values()) == {"allow"}

    wait_for(all_allowed, 15, 1.0)
    assert len(m) == 3 * 2 * 2  # ordered pairs x (TCP, UDP)
    assert sorted(k for k, v in m.items() if v != "allow") == [], encap_of(lab)


@pytest.mark.parametrize(
    ("dst", "column"), [("default/p2", 1), ("default/p3", 2)], ids=["node1-node2", "node1-node3"]
)
def test_underlay_carries_the_expected_form(lab: Lab, dst: str, column: int) -> None:
    encap = encap_of(lab)
    expected = ENCAPS[encap][column]
    seen = capture(lab, "default/p1", dst)
    assert seen[expected], f"{encap}: no {expected} packets on the underlay for p1 -> {dst}"
    others = {f: lines for f, lines in seen.items() if f != expected and lines}
    assert others == {}, f"{encap}: p1 -> {dst} also seen as {sorted(others)}"
    if expected != "native":
        # the encapsulated packet carries the pod addresses inside (tcpdump decodes it)
        inner = " ".join(seen[expected])
        assert pod_ip(lab, "default/p1") in inner or pod_ip(lab, dst) in inner, inner
