"""`calicoctl datastore migrate`: export from SQLite, import into a real etcd, compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pycalico.config import DatastoreConfig
from pycalico.datastore import open_datastore
from pycalico.ipam import IPAM

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")

RESOURCES = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.10.0.0/16, vxlanMode: Always, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, asNumber: 64513}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1, labels: {rack: r1}}
spec: {bgp: {ipv4Address: 198.18.0.1/24}}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.deny-db}
spec:
  tier: security
  order: 10
  selector: app == 'db'
  ingress: [{action: Deny, protocol: TCP, destination: {ports: [5432]}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: shop}
spec: {selector: app == 'web', ingress: [{action: Allow, source: {selector: app == 'lb'}}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec: {podSelector: {}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: office, labels: {role: office}}
spec: {nets: [198.51.100.0/24]}
"""

KINDS = [
    "ippools", "bgpconfigurations", "nodes", "tiers", "globalnetworkpolicies", "networkpolicies",
    "namespaces", "globalnetworksets", "blockaffinities",
]  # fmt: skip


def ctl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        [CALICOCTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def normalised(text: str) -> list[dict[str, object]]:
    doc = json.loads(text)
    items = doc.get("items", [doc])
    for item in items:
        item["metadata"].pop("resourceVersion", None)
    return sorted(items, key=lambda i: json.dumps(i["metadata"], sort_keys=True))


@pytest.mark.etcd
def test_sqlite_to_etcd_round_trip(tmp_path: Path, etcd_server) -> None:  # type: ignore[no-untyped-def]
    etcd_server.wipe()
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE", "ETCD", "CALICO"))
    }
    src = dict(base, DATASTORE_TYPE="sqlite", CALICO_DATASTORE_PATH=str(tmp_path / "c.db"))
    dst = dict(base, DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=etcd_server.url)
    ctl(src, "apply", "-f", "-", stdin=RESOURCES)
    # IPAM state travels too.
    ds = open_datastore(
        DatastoreConfig(datastore_type="sqlite", datastore_path=str(tmp_path / "c.db"))
    )
    v4, _ = IPAM(ds, lock_path=str(tmp_path / "ipam.lock")).auto_assign(
        3, 0, "k8s-pod-network.abc", {"node": "node1"}, "node1"
    )
    ds.close()

    export = ctl(src, "datastore", "migrate", "export")
    (tmp_path / "export.yaml").write_text(export)
    out = ctl(dst, "datastore", "migrate", "import", "-f", str(tmp_path / "export.yaml"))
    assert "Successfully imported" in out

    for kind in KINDS:
        a = normalised(ctl(src, "get", kind, "-A", "-o", "json"))
        b = normalised(ctl(dst, "get", kind, "-A", "-o", "json"))
        assert a == b, kind
        if kind != "blockaffinities":
            assert a, f"no {kind} exported"
    k8s = normalised(ctl(dst, "get", "networkpolicies", "-A", "-o", "json"))
    assert [i["metadata"]["name"] for i in k8s] == ["allow-web"]

    ds = open_datastore(DatastoreConfig(datastore_type="etcdv3", etcd_endpoints=(etcd_server.url,)))
    try:
        ipam = IPAM(ds, lock_path=str(tmp_path / "ipam2.lock"))
        assert sorted(str(ip) for ip in ipam.get_ips_by_handle("k8s-pod-network.abc")) == sorted(
            str(i.ip) for i in v4
        )
    finally:
        ds.close()

    # A second import into the now non-empty store is refused and writes nothing.
    again = subprocess.run(
        [CALICOCTL, "datastore", "migrate", "import", "-f", str(tmp_path / "export.yaml")],
        env=dst,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "not empty" in again.stderr
