"""calico-lab e2e: 3 nodes, full BGP mesh, no encapsulation, sqlite; two pods per node.

One lab for the module (tests run in file order): full reachability; namespace isolation
whose live matrix must equal ``calicoctl policy matrix``; then kill -9 of a calico-node,
which must keep established flows and the policy, and recover after a restart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import Lab, wait_for
from tests.e2e.flows import CLIENT, SERVER, pod_ip

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

PODS = [
    ("node1", "blue/a1"),
    ("node1", "red/b1"),
    ("node2", "blue/a2"),
    ("node2", "red/b2"),
    ("node3", "blue/a3"),
    ("node3", "red/b3"),
]

ISOLATION = textwrap.dedent(
    """\
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: same-namespace-only, namespace: blue}
    spec:
      selector: all()
      types: [Ingress]
      ingress:
      - action: Allow
        source: {selector: all()}
    ---
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: same-namespace-only, namespace: red}
    spec:
      selector: all()
      types: [Ingress]
      ingress:
      - action: Allow
        source: {selector: all()}
    """
)


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Iterator[Lab]:
    lab = lab_factory()
    lab.up("--nodes", "3")
    for node, key in PODS:
        lab.pod(node, key)
    yield lab


def test_nodes_ready_with_established_mesh(lab: Lab) -> None:
    st = lab.status()
    assert [n["ready"] for n in st["nodes"]] == [True, True, True]
    for n in st["nodes"]:
        assert len(n["bgp"]) == 2
        assert {b["info"] for b in n["bgp"]} == {"Established"}
        assert {b["type"] for b in n["bgp"]} == {"node-to-node mesh"}


def test_calico_node_status_reports_each_node_as_calicoctl_would(lab: Lab) -> None:
    """A CalicoNodeStatus per node is filled by that node's calico-node (Agent, BGP, Routes);
    the console's ReportedStatus reads the same reports as ready with the mesh up."""
    import json

    from pycalico.ui.sources import status_from_report

    docs = [
        "apiVersion: projectcalico.org/v3\nkind: CalicoNodeStatus\n"
        f"metadata: {{name: {n}-status}}\n"
        f"spec: {{node: {n}, classes: [Agent, BGP, Routes], updatePeriodSeconds: 1}}\n"
        for n in ("node1", "node2", "node3")
    ]
    lab.run("apply", "-f", "-", input="---\n".join(docs))
    reports: dict[str, dict[str, object]] = {}

    def reported() -> bool:
        out = lab.calicoctl("get", "caliconodestatus", "-o", "json").stdout
        data = json.loads(out)
        items = data.get("items", []) if isinstance(data, dict) else data
        reports.clear()
        reports.update({i["spec"]["node"]: i for i in items if i.get("status")})
        return len(reports) == 3 and all(
            r["status"]["bgp"].get("numberEstablishedV4") == 2 for r in reports.values()
        )

    assert wait_for(reported, 30, 0.5), reports
    blocks: set[str] = set()
    for node, res in reports.items():
        st = res["status"]
        assert st["agent"]["birdV4"]["state"] == "Ready"
        peers = st["bgp"]["peersV4"]
        assert {p["type"] for p in peers} == {"NodeMesh"}
        assert {p["state"] for p in peers} == {"Established"}
        mesh = [r for r in st["routes"]["routesV4"] if r["learnedFrom"]["sourceType"] == "NodeMesh"]
        assert mesh and all(r["type"] == "FIB" and r["gateway"] for r in mesh), (node, mesh)
        blocks.update(r["destination"] for r in mesh)
        doc = status_from_report(res, time.time())
        assert doc is not None and doc["ready"] is True and len(doc["bgp"]) == 2
    assert len(blocks) >= 3  # each node's block is learned by the two others
    for n in ("node1", "node2", "node3"):
        lab.calicoctl("delete", "caliconodestatus", f"{n}-status")


def test_every_pod_reaches_every_other(lab: Lab) -> None:
    m = lab.matrix_settled(lambda m: set(m.values()) == {"allow"})
    assert len(m) == 30
    denied = sorted(k for k, v in m.items() if v != "allow")
    assert denied == []


def test_namespace_isolation_live_matrix_equals_calicoctl(lab: Lab) -> None:
    lab.run("apply", "-f", "-", input=ISOLATION)
    expected = lab.policy_matrix()
    # sanity of the model itself: same-namespace allowed, cross-namespace denied
    for (src, dst, _, _), verdict in expected.items():
        same = src.split("/")[0] == dst.split("/")[0]
        assert verdict == ("allow" if same else "deny"), (src, dst, verdict)
    live: dict[tuple[str, str, int, str], str] = {}

    def converged() -> bool:
        nonlocal live
        live = lab.matrix()
        return live == expected

    assert wait_for(converged, 30, 1.0), sorted(
        (k, live.get(k), v) for k, v in expected.items() if live.get(k) != v
    )


# nodes.start() hands the restarted agent to the lab (it is stopped by calico-lab down), so
# its Popen object is dropped while the process runs.
@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
def test_kill9_keeps_established_flows_and_recovers(lab: Lab) -> None:
    from pycalico.lab import nodes as nodemod
    from pycalico.lab.state import LabState

    os.environ["CALICO_LAB_DIR"] = str(lab.dir)
    state = LabState.load(lab.name)
    server_ns = state.pod("blue/a2").netns
    client_ns = state.pod("blue/a1").netns
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = None
    try:
        time.sleep(0.5)
        client = subprocess.Popen(
            ["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT,
             pod_ip(lab, "blue/a2"), "8"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "connected"
        node2 = state.node("node2")
        nodemod.stop(state, node2, hard=True)  # kill -9 of calico-node on the server's node
        time.sleep(2)
        # while the agent is dead, routes and policy stay: same namespace allowed, other denied
        assert lab.run("probe", "blue/a1", "blue/a2", "80/TCP", check=False).returncode == 0
        assert lab.run("probe", "red/b1", "blue/a2", "80/TCP", check=False).returncode == 1
        nodemod.start(state, node2)
        nodemod.wait_ready(state, [node2], 60)
        out, _ = client.communicate(timeout=30)
        assert client.returncode == 0, out
        assert out.strip().startswith("ok")
    finally:
        for p in (client, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)
    st = {n["name"]: n for n in lab.status()["nodes"]}
    assert st["node2"]["ready"]
    # policy was enforced throughout and still is after the restart
    expected = lab.policy_matrix()
    assert lab.matrix_settled(lambda m: m == expected) == expected
