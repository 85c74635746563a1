"""The ``calico`` / ``calico-ipam`` CNI plugins driven exactly like a runtime (subprocess, CNI_*
env, config on stdin) against real namespaces and a sqlite datastore.

Topology: an underlay with one node namespace (the "host", default route via the underlay
gateway so proxy-ARP for 169.254.1.1 answers); each container is a fresh namespace.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.sqlite import SqliteDatastore
from tests.fixtures.netns import CniCall, Netns, NetnsFactory, invoke_cni
from tests.kit import wait_for

pytestmark = pytest.mark.netns

BIN = str(Path(sys.executable).parent)
CALICO = f"{BIN}/calico"
CALICO_IPAM = f"{BIN}/calico-ipam"
NET = "k8s-pod-network"
POOL = "10.244.0.0/16"


def pool(cidr: str = POOL, name: str = "default-ipv4-ippool") -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "blockSize": 26 if ":" not in cidr else 122, "natOutgoing": True},
    }


@dataclass
class Env:
    f: NetnsFactory
    node: Netns
    db: str
    tmp: Path

    def conf(self, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
        c: dict[str, Any] = {
            "cniVersion": version,
            "name": NET,
            "type": "calico",
            "nodename": "node1",
            "datastore_type": "sqlite",
            "datastore_path": self.db,
            "ipam_lock_file": str(self.tmp / "ipam.lock"),
            "log_file_path": str(self.tmp / "cni.log"),
            "log_level": "info",
            "ipam": {"type": "calico-ipam"},
        }
        c.update(extra)
        return c

    def call(
        self,
        command: str,
        conf: dict[str, Any] | str,
        cid: str = "",
        ns: Netns | None = None,
        plugin: str = CALICO,
        **kw: Any,
    ) -> CniCall:
        kw.setdefault("cni_path", f"{BIN}:/usr/lib/cni")
        kw.setdefault("env", {"CALICO_MTU_FILE": str(self.tmp / "mtu")})
        kw.setdefault("netns", ns.path if ns else "")
        return invoke_cni(
            plugin,
            command,
            conf,
            container_id=cid,
            host=self.node,
            **kw,
        )

    def ds(self) -> SqliteDatastore:
        return SqliteDatastore(self.db)


@pytest.fixture
def env(netns_factory: NetnsFactory, tmp_path: Path) -> Iterator[Env]:
    ul = netns_factory.underlay(1)
    db = str(tmp_path / "calico.db")
    ds = SqliteDatastore(db)
    ds.create(pool())
    ds.close()
    yield Env(netns_factory, ul.nodes[0], db, tmp_path)


def ok(c: CniCall) -> Any:
    assert c.rc == 0, f"rc={c.rc} stdout={c.stdout} stderr={c.stderr}"
    return c.out


def test_add_wires_like_calico_and_del_is_idempotent(env: Env) -> None:
    pod = env.f.netns("pod")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-1"
    res = ok(env.call("ADD", env.conf("1.1.0"), "c0ffee01", pod, args=args))
    assert res["cniVersion"] == "1.1.0"
    [ip] = res["ips"]
    addr = ip["address"]
    assert addr.endswith("/32") and ipaddress.ip_interface(addr) in ipaddress.ip_network(POOL)
    assert res["interfaces"][ip["interface"]]["name"] == "eth0"
    assert res["interfaces"][ip["interface"]]["sandbox"] == pod.path
    veth = "cali" + hashlib.sha1(b"team-a.web-1").hexdigest()[:11]
    assert res["interfaces"][0]["name"] == veth
    # host side
    link = env.node.links()[veth]
    assert link["address"] == "ee:ee:ee:ee:ee:ee" and link["mtu"] == 1500
    assert "UP" in link["flags"]
    for key, want in (
        (f"net.ipv4.conf.{veth}.proxy_arp", "1"),
        (f"net.ipv4.neigh.{veth}.proxy_delay", "0"),
        (f"net.ipv4.conf.{veth}.forwarding", "1"),
        (f"net.ipv4.conf.{veth}.route_localnet", "1"),
    ):
        assert env.node.read_sysctl(key) == want, key
    [hr] = env.node.routes(addr.split("/")[0])
    assert hr["dev"] == veth and hr["scope"] == "link"
    # container side
    assert pod.addresses("eth0")[0] == addr
    routes = {(r["dst"], r.get("gateway"), r.get("scope")) for r in pod.routes()}
    assert ("169.254.1.1", None, "link") in routes
    assert ("default", "169.254.1.1", None) in routes
    assert env.node.ping(addr.split("/")[0])
    # WorkloadEndpoint
    ds = env.ds()
    wep = ds.get("WorkloadEndpoint", "node1-k8s-web--1-eth0", "team-a")
    assert wep["spec"]["ipNetworks"] == [addr]
    assert wep["spec"]["interfaceName"] == veth
    assert wep["spec"]["profiles"] == ["kns.team-a"]
    assert wep["spec"]["mac"] == pod.links()["eth0"]["address"]
    assert wep["metadata"]["labels"]["projectcalico.org/namespace"] == "team-a"
    handle = ds.get("IPAMHandle", f"{NET}.c0ffee01")
    assert handle is not None
    # CHECK passes with the prevResult
    ok(env.call("CHECK", env.conf("1.1.0", prevResult=res), "c0ffee01", pod, args=args))
    # ADD again without DEL: interface exists -> error
    again = env.call("ADD", env.conf("1.1.0"), "c0ffee01", pod, args=args)
    assert again.rc != 0 and again.out["code"] >= 100
    assert env.node.ping(addr.split("/")[0]), "a failed repeated ADD must not break the first"
    # DEL twice
    for _ in range(2):
        ok(env.call("DEL", env.conf("1.1.0", prevResult=res), "c0ffee01", pod, args=args))
        assert veth not in env.node.links()
        assert "eth0" not in pod.links()
        assert ds.list("WorkloadEndpoint").items == []
        assert ds.list("IPAMHandle").items == []
    ds.close()


def test_check_detects_removed_route(env: Env) -> None:
    pod = env.f.netns("pod")
    res = ok(env.call("ADD", env.conf(), "chk1", pod))
    ok(env.call("CHECK", env.conf(prevResult=res), "chk1", pod))
    pod.ip("route", "del", "default")
    bad = env.call("CHECK", env.conf(prevResult=res), "chk1", pod)
    assert bad.rc == 1 and "default route" in bad.out["details"]
    ok(env.call("DEL", env.conf(), "chk1", pod))


def test_del_unknown_container_and_missing_netns(env: Env) -> None:
    pod = env.f.netns("pod")
    ok(env.call("DEL", env.conf(), "never-added", pod))
    c = invoke_cni(
        CALICO,
        "DEL",
        env.conf(),
        container_id="never2",
        netns="/not/a/real/path1234567890",
        host=env.node,
        cni_path=BIN,
    )
    ok(c)
    # netns deleted before DEL: still releases the address
    gone = env.f.netns("gone")
    res = ok(env.call("ADD", env.conf(), "gone1", gone))
    env.f.namespaces.remove(gone)
    gone.factory.namespaces.append(gone)  # keep tracked for cleanup; delete now:
    os.system(f"ip netns del {gone.name}")
    ok(env.call("DEL", env.conf(prevResult=res), "gone1", gone))
    ds = env.ds()
    assert ds.list("IPAMHandle").items == []
    assert ds.list("WorkloadEndpoint").items == []
    ds.close()


def test_plain_cni_workload_names_and_profile(env: Env) -> None:
    pod = env.f.netns("pod")
    cid = "abcdef0123456789"
    conf = env.conf(args={"cni": {"labels": [{"key": "app", "value": "db"}]}})
    res = ok(env.call("ADD", conf, cid, pod, args="IgnoreUnknown=1;K8S_POD_NAME=podman-name"))
    assert res["interfaces"][0]["name"] == "cali" + cid[:11]
    ds = env.ds()
    wep = ds.get("WorkloadEndpoint", f"node1-cni-{cid}-eth0", "default")
    assert wep["spec"]["orchestrator"] == "cni" and wep["spec"]["workload"] == cid
    assert wep["metadata"]["labels"]["app"] == "db"
    assert wep["spec"]["profiles"] == [NET]
    assert ds.get("Profile", NET)["spec"]["labelsToApply"] == {NET: ""}
    ds.close()
    ok(env.call("DEL", conf, cid, pod))


@pytest.mark.slow
def test_concurrent_adds_distinct_reachable(env: Env) -> None:
    """50 plugin *processes* (the exec path) racing on one sqlite store and IPAM lock."""
    n = 50
    pods = [env.f.netns(f"p{i}") for i in range(n)]
    conf = env.conf()

    def add(i: int) -> CniCall:
        return env.call("ADD", conf, f"conc{i:03d}", pods[i])

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as ex:
        results = list(ex.map(add, range(n)))
    addrs = [ok(r)["ips"][0]["address"].split("/")[0] for r in results]
    assert len(set(addrs)) == n
    # all reachable from the node (one fping-like sweep through busybox ping)
    unreachable = [a for a in addrs if not env.node.ping(a, timeout_s=1)]
    assert unreachable == []
    # pod to pod across the node
    assert pods[0].ping(addrs[n - 1])

    def delete(i: int) -> CniCall:
        return env.call("DEL", conf, f"conc{i:03d}", pods[i])

    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as ex:
        for r in ex.map(delete, range(n)):
            ok(r)
    ds = env.ds()
    assert ds.list("IPAMHandle").items == []
    assert ds.list("WorkloadEndpoint").items == []
    ds.close()


def test_gc_releases_attachments_not_listed(env: Env) -> None:
    a, b = env.f.netns("a"), env.f.netns("b")
    ok(env.call("ADD", env.conf("1.1.0"), "keep1", a))
    ok(env.call("ADD", env.conf("1.1.0"), "drop1", b))
    attach = [{"containerID": "keep1", "ifname": "eth0"}]
    gc = env.conf("1.1.0", **{"cni.dev/valid-attachments": attach, "cni.dev/attachments": attach})
    c = env.call("GC", gc)
    ok(c)
    assert c.stdout == ""
    ds = env.ds()
    assert [h["metadata"]["name"] for h in ds.list("IPAMHandle").items] == [f"{NET}.keep1"]
    assert [w["spec"]["containerID"] for w in ds.list("WorkloadEndpoint").items] == ["keep1"]
    ds.close()
    old = env.call("GC", env.conf("1.0.0", **{"cni.dev/valid-attachments": attach}))
    assert old.rc == 1 and old.out["code"] == 1


def test_status_version_and_errors(env: Env, tmp_path: Path) -> None:
    ok(env.call("STATUS", env.conf("1.1.0")))
    empty = tmp_path / "empty.db"
    SqliteDatastore(str(empty)).close()
    st = env.call("STATUS", env.conf("1.1.0", datastore_path=str(empty)))
    assert st.rc == 1 and st.out["code"] == 50
    v = invoke_cni(CALICO, "VERSION", {"cniVersion": "1.0.0"})
    assert v.rc == 0 and v.out["cniVersion"] == "1.0.0" and "1.0.0" in v.out["supportedVersions"]
    pod = env.f.netns("pod")
    cases: list[tuple[dict[str, Any], Any, int]] = [
        ({"unset": ["CNI_COMMAND"]}, env.conf(), 4),
        ({"command": "FOO"}, env.conf(), 4),
        ({"unset": ["CNI_NETNS"]}, env.conf(), 4),
        ({"cid": ""}, env.conf(), 4),
        ({"cid": "-bad"}, env.conf(), 4),
        ({"ifname": "x" * 16}, env.conf(), 4),
        ({"ifname": "a:b"}, env.conf(), 4),
        ({}, "not json", 6),
        ({}, {"cniVersion": "1.0.0", "type": "calico"}, 7),
        ({}, env.conf("9.9.9"), 1),
        ({}, env.conf(mtu="big"), 7),
        ({}, env.conf(ipam={"type": "calico-ipam", "assign_ipv4": "maybe"}), 7),
        ({"command": "CHECK"}, env.conf("0.3.1", prevResult={}), 1),
    ]
    for spec, conf, code in cases:
        kw: dict[str, Any] = {"unset": spec.get("unset", [])}
        if "ifname" in spec:
            kw["ifname"] = spec["ifname"]
        c = env.call(spec.get("command", "ADD"), conf, spec.get("cid", "err1"), pod, **kw)
        assert c.rc == 1, (spec, conf, c.stdout)
        assert c.out["code"] == code, (spec, conf, c.stdout)
        assert c.out["msg"]
    assert "eth0" not in pod.links()
    ds = env.ds()
    assert ds.list("IPAMHandle").items == []
    ds.close()


def test_ipam_plugin_alone_and_0_4_0_result(env: Env) -> None:
    conf = env.conf("0.4.0", type="calico-ipam")
    res = ok(env.call("ADD", conf, "ipamonly", plugin=CALICO_IPAM, netns="/run/netns/x"))
    [ip] = res["ips"]
    assert ip["version"] == "4" and ip["address"].endswith("/32") and "interface" not in ip
    again = ok(env.call("ADD", conf, "ipamonly", plugin=CALICO_IPAM, netns="/run/netns/x"))
    assert again["ips"][0]["address"] == ip["address"]
    ok(
        env.call(
            "CHECK",
            dict(conf, prevResult=res),
            "ipamonly",
            plugin=CALICO_IPAM,
            netns="/run/netns/x",
        )
    )
    for _ in range(2):
        ok(env.call("DEL", conf, "ipamonly", plugin=CALICO_IPAM))
    bad = env.call(
        "CHECK", dict(conf, prevResult=res), "ipamonly", plugin=CALICO_IPAM, netns="/run/netns/x"
    )
    assert bad.rc == 1


def test_host_local_delegate_and_failure_releases(env: Env) -> None:
    pod = env.f.netns("pod")
    conf = env.conf(
        ipam={"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": str(env.tmp / "hl")}
    )
    res = ok(env.call("ADD", conf, "hl1", pod))
    assert res["ips"][0]["address"].startswith("10.99.") and res["ips"][0]["address"].endswith(
        "/32"
    )
    assert os.listdir(env.tmp / "hl" / NET)
    ok(env.call("DEL", conf, "hl1", pod))
    assert [p for p in os.listdir(env.tmp / "hl" / NET) if p[0].isdigit()] == []
    # wiring failure after allocation (netns vanished): address released, nothing left
    fail = env.call("ADD", env.conf(), "fail1", ns=None, netns="/run/netns/nope-" + pod.name)
    assert fail.rc == 1 and fail.out["code"] == 100
    ds = env.ds()
    assert ds.list("IPAMHandle").items == [] and ds.list("WorkloadEndpoint").items == []
    ds.close()
    assert not [n for n in env.node.links() if n.startswith("cali")]


def test_dual_stack(env: Env) -> None:
    ds = env.ds()
    ds.create(pool("fd00:10:244::/64", "default-ipv6-ippool"))
    ds.close()
    pod, pod2 = env.f.netns("pod"), env.f.netns("pod")
    conf = env.conf(ipam={"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true"})
    res = ok(env.call("ADD", conf, "ds1", pod))
    res2 = ok(env.call("ADD", conf, "ds2", pod2))
    v4, v6 = (ip["address"] for ip in res["ips"])
    assert v4.endswith("/32") and v6.endswith("/128") and v6.startswith("fd00:10:244:")
    assert v6 in pod.addresses("eth0")
    assert any(r.get("gateway") == "fe80::ecee:eeff:feee:eeee" for r in pod.routes(family="-6"))
    [hr] = env.node.routes(v6.split("/")[0], family="-6")
    assert hr["dev"] == res["interfaces"][0]["name"]
    peer6 = res2["ips"][1]["address"].split("/")[0]
    env.node.sysctl("net.ipv6.conf.all.forwarding", 1)
    assert pod.ping(peer6, timeout_s=2, attempts=5)
    ok(env.call("CHECK", dict(conf, prevResult=res), "ds1", pod))
    for cid, p in (("ds1", pod), ("ds2", pod2)):
        ok(env.call("DEL", conf, cid, p))
    ds = env.ds()
    assert ds.list("IPAMHandle").items == []
    ds.close()


def test_netns_given_as_proc_path_or_other_bind_mount(env: Env, tmp_path: Path) -> None:
    """CNI_NETNS outside /run/netns: /proc/<pid>/ns/net (``netns <pid>``) and an arbitrary
    bind mount (created from inside via nsenter)."""
    pod = env.f.netns("pp")
    pod.popen("sleep", "300")  # keeps a pid in the namespace; killed at cleanup
    pids = wait_for(
        lambda: pod.exec("ip", "netns", "pids", pod.name).stdout.split(), 1.0, 0.02, what="pids"
    )
    proc_path = f"/proc/{pids[0]}/ns/net"
    res = ok(env.call("ADD", env.conf(), "procns", netns=proc_path))
    assert res["ips"][0]["address"] in pod.addresses("eth0")
    ok(env.call("DEL", env.conf(), "procns", netns=proc_path))
    assert "eth0" not in pod.links()
    other = env.f.netns("bm")
    mnt = tmp_path / "nsfile"
    mnt.touch()
    subprocess.run(["mount", "--bind", other.path, str(mnt)], check=True)
    try:
        res = ok(env.call("ADD", env.conf(), "bindns", netns=str(mnt)))
        addr = res["ips"][0]["address"]
        assert addr in other.addresses("eth0")
        assert env.node.ping(addr.split("/")[0])
        ok(env.call("CHECK", env.conf(prevResult=res), "bindns", netns=str(mnt)))
        ok(env.call("DEL", env.conf(), "bindns", netns=str(mnt)))
        assert "eth0" not in other.links()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
