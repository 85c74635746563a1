"""calico-lab e2e resilience: datastore outage, dataplane drift, agent kill/stop.

One 3-node lab over etcd for the module (tests run in file order) with namespace isolation
applied, and Felix's nftables refresh and the route refresh at 2 s (``FELIX_*`` in ``up``'s
environment, recorded by the lab for every later agent start):
- etcd stopped for 30 s: established flows keep going, the live matrix stays the policy's;
  once etcd is back every node is ready again and a new pod works under the same policy;
- routes (proto bird: a remote block and the local block's blackhole; proto 80: a workload
  route) and the ``ip calico`` nftables table deleted by hand on a node are put back;
- ``calico-lab node kill`` (SIGKILL) then ``node start``: BIRD is adopted (same process, the
  peers' sessions never flap) and flows through the node keep going; ``node stop``/``start``
  (graceful) keeps flows too.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, wait_for
from tests.e2e.flows import CLIENT, PodFlow, pod_ip

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow, pytest.mark.etcd]

PODS = [("node1", "blue/a1"), ("node2", "blue/a2"), ("node1", "red/b1"), ("node3", "red/b3")]

ISOLATION = "".join(
    textwrap.dedent(
        f"""\
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {{name: same-namespace-only, namespace: {ns}}}
        spec:
          selector: all()
          types: [Ingress]
          ingress:
          - action: Allow
            source: {{selector: all()}}
        """
    )
    for ns in ("blue", "red")
)


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Iterator[Lab]:
    lab = lab_factory()
    lab.env.update(FELIX_NFTABLESREFRESHINTERVAL="2", FELIX_ROUTEREFRESHINTERVAL="2")
    lab.up("--nodes", "3", "--datastore", "etcd")
    for node, key in PODS:
        lab.pod(node, key)
    lab.run("apply", "-f", "-", input=ISOLATION)
    yield lab


class Flow(PodFlow):
    """A long-lived TCP flow from pod ``src`` to a server in pod ``dst``."""

    def __init__(self, lab: Lab, src: str, dst: str, seconds: float) -> None:
        super().__init__(lab, src, dst, CLIENT, [pod_ip(lab, dst), str(seconds)], tries=20)

    def result(self, timeout: float = 60) -> tuple[int, str]:
        assert self.client is not None
        out, _ = self.client.communicate(timeout=timeout)
        return self.client.returncode, out.strip()


@pytest.fixture
def flow(lab: Lab) -> Iterator[Callable[[str, str, float], Flow]]:
    flows: list[Flow] = []

    def make(src: str, dst: str, seconds: float) -> Flow:
        f = Flow(lab, src, dst, seconds)
        flows.append(f)
        return f

    try:
        yield make
    finally:
        for f in flows:
            f.close()


def _expected(lab: Lab) -> dict[tuple[str, str, int, str], str]:
    expected = lab.policy_matrix()
    for (src, dst, _, _), verdict in expected.items():
        assert verdict == ("allow" if src.split("/")[0] == dst.split("/")[0] else "deny")
    return expected


def _all_ready(lab: Lab) -> bool:
    return all(n["ready"] for n in lab.status()["nodes"])


def test_isolation_in_force(lab: Lab) -> None:
    expected = _expected(lab)
    assert lab.matrix_settled(lambda m: m == expected, timeout=30) == expected


def test_etcd_outage_loses_nothing(lab: Lab, flow: Callable[[str, str, float], Flow]) -> None:
    expected = _expected(lab)
    f = flow("blue/a1", "blue/a2", 40)
    lab.run("etcd", "stop")
    assert lab.state()["etcd_pid"] == 0
    t0 = time.monotonic()
    assert lab.matrix() == expected  # at once ...
    time.sleep(max(0.0, 25 - (time.monotonic() - t0)))
    assert lab.matrix() == expected  # ... and 25 s into the outage
    time.sleep(max(0.0, 30 - (time.monotonic() - t0)))
    lab.run("etcd", "start")
    rc, out = f.result()
    assert rc == 0 and out.startswith("ok"), out
    assert wait_for(lambda: _all_ready(lab), 60, 1.0), lab.status()
    # new pods work again: CNI (IPAM, endpoint) through etcd, then Felix programs them
    lab.pod("node3", "blue/a3")
    lab.pod("node2", "red/b2")
    expected = _expected(lab)
    assert len(expected) == 30
    assert lab.matrix_settled(lambda m: m == expected, timeout=30) == expected


def test_hand_deleted_routes_and_table_are_repaired(lab: Lab) -> None:
    own_block = pod_ip(lab, "blue/a1").rsplit(".", 1)[0]  # node1's pods share its /26
    routes = lab.exec("node1", "ip", "-4", "route", "show").stdout.splitlines()
    remote = next(r.split()[0] for r in routes if "proto bird" in r and " via " in r)
    blackhole = next(r.split()[1] for r in routes if r.startswith("blackhole") and own_block in r)
    workload = next(r.split()[0] for r in routes if "proto 80" in r)
    lab.exec("node1", "ip", "route", "del", remote, "proto", "bird")
    lab.exec("node1", "ip", "route", "del", "blackhole", blackhole, "proto", "bird")
    lab.exec("node1", "ip", "route", "del", workload, "proto", "80")
    lab.exec("node1", "nft", "delete", "table", "ip", "calico")
    # (each ``del`` succeeded, so each route was there and went; BIRD may put its routes back
    # at once, on the kernel's notification, so there is no window to assert the gap in)

    def repaired() -> bool:
        r = lab.exec("node1", "ip", "-4", "route", "show").stdout
        tables = lab.exec("node1", "nft", "list", "tables").stdout.splitlines()
        return (
            f"{remote} via" in r
            and f"blackhole {blackhole} proto bird" in r
            and f"{workload} dev cali" in r
            and "table ip calico" in tables
        )

    assert wait_for(repaired, 20, 0.5), (
        lab.exec("node1", "ip", "-4", "route", "show").stdout,
        lab.exec("node1", "nft", "list", "tables").stdout,
    )
    expected = _expected(lab)
    assert lab.matrix_settled(lambda m: m == expected, timeout=20) == expected


def _bird_pid(lab: Lab, node: str) -> int:
    out = subprocess.run(
        ["ip", "netns", "pids", f"{lab.state()['prefix']}{node}"], capture_output=True, text=True
    ).stdout.split()
    birds = [int(p) for p in out if Path(f"/proc/{p}/comm").read_text().strip() == "bird"]
    assert len(birds) == 1, out
    return birds[0]


def _session(lab: Lab, node: str, peer_node: str) -> dict[str, str]:
    st = {n["name"]: n for n in lab.status()["nodes"]}
    peer_ip = st[peer_node]["ip"]
    rows = [b for b in st[node]["bgp"] if b["peer"] == peer_ip]
    assert len(rows) == 1, st[node]["bgp"]
    return dict(rows[0])


def test_kill9_then_start_adopts_bird_and_keeps_flows(
    lab: Lab, flow: Callable[[str, str, float], Flow]
) -> None:
    bird = _bird_pid(lab, "node2")
    before = _session(lab, "node1", "node2")
    assert before["info"] == "Established"
    f = flow("blue/a1", "blue/a2", 10)
    lab.run("node", "kill", "node2")
    assert lab.state()["nodes"][1]["pid"] == 0
    assert not next(n for n in lab.status()["nodes"] if n["name"] == "node2")["ready"]
    time.sleep(2)
    assert lab.run("probe", "blue/a1", "blue/a2", "80/TCP", check=False).returncode == 0
    assert lab.run("probe", "red/b1", "blue/a2", "80/TCP", check=False).returncode == 1
    lab.run("node", "start", "node2")
    assert _all_ready(lab)
    rc, out = f.result()
    assert rc == 0 and out.startswith("ok"), out
    assert _bird_pid(lab, "node2") == bird  # the new agent adopted the running BIRD
    after = _session(lab, "node1", "node2")
    assert after["info"] == "Established" and after["since"] == before["since"]
    expected = _expected(lab)
    assert lab.matrix_settled(lambda m: m == expected, timeout=20) == expected


def test_graceful_stop_start_keeps_flows(lab: Lab, flow: Callable[[str, str, float], Flow]) -> None:
    f = flow("red/b1", "red/b3", 10)
    lab.run("node", "stop", "node3")
    time.sleep(2)
    assert lab.run("probe", "red/b1", "red/b3", "80/TCP", check=False).returncode == 0
    assert lab.run("probe", "blue/a1", "red/b3", "80/TCP", check=False).returncode == 1
    lab.run("node", "restart", "node3")
    rc, out = f.result()
    assert rc == 0 and out.startswith("ok"), out
    assert wait_for(lambda: _all_ready(lab), 30, 1.0), lab.status()
    expected = _expected(lab)
    assert lab.matrix_settled(lambda m: m == expected, timeout=20) == expected
