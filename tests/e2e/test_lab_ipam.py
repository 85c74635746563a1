"""calico-lab e2e: IPAM by namespace (issue 17), pool split and the release cooldown.

One 2-node lab for the module (tests run in file order). The default pool is narrowed to
namespaces without a ``tenant`` label and a second pool serves ``tenant == 'a'`` (Calico
3.31's IPPool ``namespaceSelector``): pods of the tenant namespace, on both nodes, get
addresses only from its pool, the others only from the default pool, a namespace no pool
selects gets no address (the CNI error says why), and every pod reaches every other (the
tenant pool's blocks are routed like any other). Then the tenant pool is split in two under
the datastore lock and a new tenant pod lands in a child; last, with ``ipCooldownSeconds``
set, a deleted pod's address is reported in cooldown instead of free.
"""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Lab
from tests.e2e.flows import pod_ip

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

DEFAULT_POOL = ipaddress.ip_network("10.244.0.0/16")
TENANT_POOL = ipaddress.ip_network("10.246.0.0/24")
SETUP = textwrap.dedent(
    f"""\
    apiVersion: v1
    kind: Namespace
    metadata: {{name: tenant-a, labels: {{tenant: a}}}}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {{name: tenant-b, labels: {{tenant: b}}}}
    ---
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {{name: default-ipv4-ippool}}
    spec:
      cidr: {DEFAULT_POOL}
      blockSize: 26
      natOutgoing: true
      allowedUses: [Workload]
      namespaceSelector: "!has(tenant)"
    ---
    apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {{name: tenant-a}}
    spec:
      cidr: {TENANT_POOL}
      blockSize: 26
      namespaceSelector: tenant == 'a'
    """
)
PODS = [
    ("node1", "tenant-a/a1"),
    ("node2", "tenant-a/a2"),
    ("node1", "tenant-a/a3"),
    ("node2", "tenant-a/a4"),
    ("node1", "plain/p1"),
    ("node2", "plain/p2"),
]


@pytest.fixture(scope="module")
def lab(lab_factory: object) -> Iterator[Lab]:
    lab: Lab = lab_factory()  # type: ignore[operator]
    lab.up("--nodes", "2")
    lab.run("apply", "-f", "-", input=SETUP)
    for node, key in PODS:
        lab.pod(node, key)
    yield lab


def test_pods_get_addresses_only_from_the_pool_selecting_their_namespace(lab: Lab) -> None:
    got = {key: ipaddress.ip_address(pod_ip(lab, key)) for _, key in PODS}
    print(f"\npod addresses: { {k: str(v) for k, v in got.items()} }")
    for key, ip in got.items():
        want = TENANT_POOL if key.startswith("tenant-a/") else DEFAULT_POOL
        assert ip in want, f"{key} got {ip}, outside {want}"
    blocks = lab.calicoctl("ipam", "show", "--show-blocks").stdout
    assert str(TENANT_POOL) in blocks


def test_a_namespace_no_pool_selects_gets_no_address(lab: Lab) -> None:
    p = lab.run("pod", "add", "node1", "tenant-b/b1", check=False)
    assert p.returncode != 0
    assert "no usable IPv4 pools" in p.stdout + p.stderr
    assert not [x for x in lab.state()["pods"] if x["namespace"] == "tenant-b"]


def test_tenant_pods_reach_and_are_reached_by_the_others(lab: Lab) -> None:
    m = lab.matrix_settled(lambda m: all(v == "allow" for v in m.values()))
    bad = {k: v for k, v in m.items() if v != "allow"}
    assert len(m) == len(PODS) * (len(PODS) - 1) and not bad, bad


def test_split_the_tenant_pool_under_the_lock(lab: Lab) -> None:
    # --cidr: calico-lab's own --name would take a pool --name
    split = ("ipam", "split", "2", "--cidr", str(TENANT_POOL))
    p = lab.run("calicoctl", "--name", lab.name, *split, check=False)
    assert p.returncode != 0 and "datastore is not locked" in p.stdout + p.stderr
    lab.calicoctl("datastore", "migrate", "lock")
    try:
        out = lab.calicoctl(*split).stdout
    finally:
        lab.calicoctl("datastore", "migrate", "unlock")
    assert "IP Pool tenant-a was successfully split into 2 smaller pools." in out
    pools = lab.calicoctl("get", "ippools", "-o", "wide").stdout
    assert "split-tenant-a-0" in pools and "split-tenant-a-1" in pools
    lab.pod("node2", "tenant-a/a5")
    ip = ipaddress.ip_address(pod_ip(lab, "tenant-a/a5"))
    assert ip in TENANT_POOL, ip


def test_a_released_address_cools_down(lab: Lab) -> None:
    lab.calicoctl("ipam", "configure", "--ip-cooldown-seconds=600")
    ip = pod_ip(lab, "plain/p2")
    lab.run("pod", "del", "plain/p2")
    out = lab.calicoctl("ipam", "show", "--ip", ip).stdout
    assert f"IP {ip} is in cooldown" in out, out
    lab.pod("node2", "plain/p3")
    assert pod_ip(lab, "plain/p3") != ip
