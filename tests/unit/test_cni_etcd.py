"""``calico-ipam`` on the etcdv3 datastore, executed like a runtime would (IPAM only: it
creates no interfaces, so it runs in the test's own namespace)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from pycalico.config import DatastoreConfig
from pycalico.datastore import open_datastore
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.netns import invoke_cni

pytestmark = pytest.mark.etcd

IPAM = str(Path(sys.executable).parent / "calico-ipam")


def test_calico_ipam_over_etcd(etcd_server_fn: EtcdServer, tmp_path: Path) -> None:
    ds = open_datastore(
        DatastoreConfig(datastore_type="etcdv3", etcd_endpoints=(etcd_server_fn.url,))
    )
    ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": "10.247.0.0/24", "blockSize": 26},
        }
    )
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico-ipam",
        "nodename": "node-e",
        "datastore_type": "etcdv3",
        "etcd_endpoints": etcd_server_fn.url,
        "ipam_lock_file": str(tmp_path / "ipam.lock"),
    }
    kw: dict[str, Any] = {"netns": "/run/netns/none", "cni_path": "/usr/lib/cni"}
    a = invoke_cni(IPAM, "ADD", conf, container_id="e1", **kw)
    b = invoke_cni(IPAM, "ADD", conf, container_id="e2", **kw)
    assert a.rc == 0 and b.rc == 0, (a.stdout, b.stdout)
    ips = {a.out["ips"][0]["address"], b.out["ips"][0]["address"]}
    assert len(ips) == 2 and all(ip.startswith("10.247.0.") for ip in ips)
    handles = sorted(h["metadata"]["name"] for h in ds.list("IPAMHandle").items)
    assert handles == ["k8s-pod-network.e1", "k8s-pod-network.e2"]
    for cid in ("e1", "e2", "e2"):
        assert invoke_cni(IPAM, "DEL", conf, container_id=cid, **kw).rc == 0
    assert ds.list("IPAMHandle").items == []
    down = dict(conf, etcd_endpoints="http://127.0.0.1:9")
    st = invoke_cni(IPAM, "STATUS", dict(down, cniVersion="1.1.0"), **kw)
    assert st.rc == 1 and st.out["code"] == 50
    ds.close()
