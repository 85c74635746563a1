"""calico-lab e2e: workload DNS (issue 9 acceptance) on a 2-node lab.

One lab for the module (tests run in file order). A pod resolves a same-namespace pod by its
short name and another namespace's pod by ``name.namespace``, on its own and on the other
node; a new pod resolves within 1 s of ``pod add`` returning and a deleted one stops
resolving within 1 s of ``pod del`` returning (the measured latencies are printed); a
default-deny egress policy blocks lookups and an egress rule allowing UDP and TCP 53 to the
workload DNS address restores them (last test: it leaves policy behind).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from pycalico.dnsconf import DEFAULT_ZONE, DNS_ADDRESS
from tests.e2e.conftest import CALICO_LAB, Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

PODS = [
    ("node1", "blue/client1"),
    ("node2", "blue/client2"),
    ("node1", "blue/web1"),
    ("node2", "blue/web2"),
    ("node1", "red/db1"),
    ("node2", "red/db2"),
]
# The acceptance bound for a pod add/delete to show in DNS answers.
DNS_LATENCY_BOUND = 1.0

DENY_EGRESS = textwrap.dedent(
    """\
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: default-deny-egress, namespace: blue}
    spec:
      selector: app == 'client'
      types: [Egress]
    """
)
ALLOW_DNS = textwrap.dedent(
    f"""\
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {{name: allow-dns, namespace: blue}}
    spec:
      selector: app == 'client'
      types: [Egress]
      egress:
      - action: Allow
        protocol: UDP
        destination: {{nets: [{DNS_ADDRESS}/32], ports: [53]}}
      - action: Allow
        protocol: TCP
        destination: {{nets: [{DNS_ADDRESS}/32], ports: [53]}}
    """
)

# An A query over TCP (glibc only falls back to TCP on truncation): exit 0 with the answer.
TCP_QUERY = textwrap.dedent(
    """\
    import socket, struct, sys
    from dnslib import DNSRecord
    q = DNSRecord.question(sys.argv[1]).pack()
    s = socket.create_connection((sys.argv[2], 53), timeout=2)
    s.sendall(struct.pack("!H", len(q)) + q)
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(2)
        buf += chunk
    r = DNSRecord.parse(buf[2:])
    print(" ".join(str(a.rdata) for a in r.rr))
    sys.exit(0 if r.rr else 1)
    """
)


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Iterator[Lab]:
    lab = lab_factory()
    lab.up("--nodes", "2")
    for node, key in PODS:
        labels = "app=client" if "client" in key else "app=server"
        lab.run("pod", "add", node, key, "--labels", labels, "--ports", "80/TCP")
    yield lab


def pod_ip(lab: Lab, key: str) -> str:
    for p in lab.state()["pods"]:
        if f"{p['namespace']}/{p['name']}" == key:
            return str(p["ips"][0]).split("/")[0]
    raise KeyError(key)


def lookup(lab: Lab, client: str, name: str, timeout: float = 10) -> tuple[int, str]:
    """``getent hosts NAME`` in pod ``client``: (exit code, stdout)."""
    p = lab.exec(
        client, "--", "timeout", str(timeout), "getent", "hosts", name, check=False,
        timeout=timeout + 10,
    )  # fmt: skip
    return p.returncode, p.stdout


@contextmanager
def dns_watch(lab: Lab, client: str, name: str, appear: bool) -> Iterator[Callable[[], float]]:
    """A poller inside pod ``client`` (``getent hosts NAME`` every 5 ms) started before the
    body runs; the yielded function returns the wall-clock time at which NAME first resolved
    (``appear``) or first stopped resolving."""
    loop = "until" if appear else "while"
    script = f'echo ready; {loop} getent hosts "$1" >/dev/null; do sleep 0.005; done; date +%s.%N'
    argv = [CALICO_LAB, "exec", "--name", lab.name, client, "--", "timeout", "20", "sh", "-c",
            script, "sh", name]  # fmt: skip
    p = subprocess.Popen(argv, env=lab.env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"

        def changed_at() -> float:
            out = p.communicate(timeout=30)[0].strip()
            assert out, f"{name!r} did not {'appear' if appear else 'go away'} within 20 s"
            return float(out)

        yield changed_at
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


@pytest.mark.parametrize("client", ["blue/client1", "blue/client2"])
@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("web1", "blue/web1"),  # same namespace, short name
        ("web2", "blue/web2"),
        ("db1.red", "red/db1"),  # other namespace: name.namespace
        ("db2.red", "red/db2"),
        (f"db2.red.{DEFAULT_ZONE}", "red/db2"),  # fully qualified
    ],
)
def test_pod_resolves_pods_by_name(lab: Lab, client: str, name: str, target: str) -> None:
    rc, out = lookup(lab, client, name)
    assert rc == 0, (client, name, out)
    ns, _, pod = target.partition("/")
    assert out.split() == [pod_ip(lab, target), f"{pod}.{ns}.{DEFAULT_ZONE}"]


def test_other_namespace_needs_the_namespace(lab: Lab) -> None:
    # a short name is searched in the client's own namespace only
    rc, out = lookup(lab, "blue/client1", "db1")
    assert rc == 2, out  # getent: key not found
    rc, out = lookup(lab, "blue/client1", "nosuch.red")
    assert rc == 2, out


@pytest.mark.parametrize(("node", "key"), [("node1", "blue/late1"), ("node2", "red/late2")])
def test_new_pod_resolves_within_a_second(lab: Lab, node: str, key: str) -> None:
    ns, _, name = key.partition("/")
    short = name if ns == "blue" else f"{name}.{ns}"
    assert lookup(lab, "blue/client1", short)[0] == 2
    with dns_watch(lab, "blue/client1", short, appear=True) as changed_at:
        lab.run("pod", "add", node, key, "--ports", "80/TCP")
        returned = time.time()
        delta = changed_at() - returned
    latency = max(0.0, delta)
    print(f"\nDNS: {key} on {node} resolvable from node1 {delta:+.3f}s after pod add returned")
    assert latency <= DNS_LATENCY_BOUND
    rc, out = lookup(lab, "blue/client1", short)
    assert (rc, out.split()[0]) == (0, pod_ip(lab, key))


@pytest.mark.parametrize("key", ["blue/late1", "red/late2"])
def test_deleted_pod_stops_resolving_within_a_second(lab: Lab, key: str) -> None:
    ns, _, name = key.partition("/")
    short = name if ns == "blue" else f"{name}.{ns}"
    assert lookup(lab, "blue/client1", short)[0] == 0
    with dns_watch(lab, "blue/client1", short, appear=False) as changed_at:
        lab.run("pod", "del", key)
        returned = time.time()
        delta = changed_at() - returned
    latency = max(0.0, delta)
    print(f"\nDNS: {key} gone from node1's answers {delta:+.3f}s after pod del returned")
    assert latency <= DNS_LATENCY_BOUND
    assert lookup(lab, "blue/client1", short)[0] == 2


def tcp_lookup(lab: Lab, client: str, fqdn: str) -> tuple[int, str]:
    p = lab.exec(client, "--", sys.executable, "-c", TCP_QUERY, fqdn, DNS_ADDRESS, check=False)
    return p.returncode, p.stdout.strip()


def test_default_deny_egress_blocks_dns_until_port_53_allowed(lab: Lab) -> None:
    fqdn = f"web2.blue.{DEFAULT_ZONE}"
    web2 = pod_ip(lab, "blue/web2")
    assert lookup(lab, "blue/client1", "web2")[0] == 0
    assert tcp_lookup(lab, "blue/client1", fqdn) == (0, web2)

    lab.run("apply", "-f", "-", input=DENY_EGRESS)
    # blocked (the policy takes a moment to reach Felix): UDP lookups time out, TCP too
    assert wait_for(lambda: lookup(lab, "blue/client1", "web2", timeout=3)[0] != 0, 15, 0.2)
    assert lookup(lab, "blue/client1", "db2.red", timeout=3)[0] != 0
    assert tcp_lookup(lab, "blue/client1", fqdn)[0] != 0
    # pods the policy does not select still resolve
    assert lookup(lab, "blue/web1", "web2")[0] == 0

    lab.run("apply", "-f", "-", input=ALLOW_DNS)
    assert wait_for(lambda: lookup(lab, "blue/client1", "web2", timeout=3)[0] == 0, 15, 0.2)
    rc, out = lookup(lab, "blue/client1", "db2.red")
    assert (rc, out.split()[0]) == (0, pod_ip(lab, "red/db2"))
    assert tcp_lookup(lab, "blue/client1", fqdn) == (0, web2)
    # only DNS was opened: pod traffic stays denied by the default-deny egress
    assert lab.run("probe", "blue/client1", "blue/web2", "80/TCP", check=False).returncode == 1
