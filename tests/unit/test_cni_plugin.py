"""The calico / calico-ipam plugins in-process: MemoryDatastore + real IPAM + FakeDataplane.

Covers the plugin logic a kernel test cannot pin down cheaply: rollback after failures
(nothing half-written), ownership rules on DEL, GC, STATUS, delegation to another IPAM
plugin, chained prevResult, and the iproute2 batches LinuxDataplane emits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from pycalico.cni.context import Deps, _list_handles
from pycalico.cni.dataplane import FakeDataplane, LinuxDataplane, WiringError, WorkloadIface
from pycalico.cni.errors import CniError
from pycalico.cni.main import PLUGIN_CALICO, PLUGIN_IPAM, run
from pycalico.datastore.base import Datastore, Unavailable
from pycalico.datastore.memory import MemoryDatastore
from pycalico.system.iproute import IpRoute
from pycalico.system.process import Completed, FakeProcessRunner
from pycalico.system.sysctl import FakeSysctl

NET = "k8s-pod-network"


class FlakyStore(MemoryDatastore):
    """MemoryDatastore whose WorkloadEndpoint writes fail on demand."""

    fail_wep = False
    down = False

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise Unavailable("datastore down")
        if self.fail_wep and obj.get("kind") == "WorkloadEndpoint":
            raise Unavailable("injected WEP write failure")
        return super().create(obj)

    def list(self, kind: str, namespace: str | None = None) -> Any:
        if self.down:
            raise Unavailable("datastore down")
        return super().list(kind, namespace)

    def close(self) -> None:  # shared across invocations in these tests
        pass


class World:
    def __init__(self) -> None:
        self.ds = FlakyStore()
        self.ds.create(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "pool1"},
                "spec": {"cidr": "10.244.0.0/24", "blockSize": 26},
            }
        )
        self.dp = FakeDataplane()
        self.delegated: list[tuple[str, str]] = []
        self.delegate_fails = False

    def delegate(
        self, plugin: str, command: str, stdin: bytes, environ: Mapping[str, str]
    ) -> dict[str, Any] | None:
        self.delegated.append((plugin, command))
        if command == "ADD" and self.delegate_fails:
            raise CniError(11, "host-local: no lock")
        if command == "ADD":
            return {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.7/16"}]}
        return None

    def deps(self) -> Deps:
        def open_ds(conf: Any, env: Mapping[str, str]) -> Datastore:
            return self.ds

        return Deps(
            open_datastore=open_ds,
            ipam=lambda ds, conf: _ipam_nolock(ds, conf),
            list_handles=_list_handles,
            dataplane=lambda: self.dp,
            delegate=self.delegate,
            environ={"CALICO_MTU_FILE": "/nonexistent"},
            hostname=lambda: "host-a",
        )

    def call(
        self,
        command: str,
        cid: str = "c1",
        plugin: str = PLUGIN_CALICO,
        args: str = "",
        **conf: Any,
    ) -> tuple[int, Any]:
        c: dict[str, Any] = {
            "cniVersion": "1.1.0",
            "name": NET,
            "type": plugin,
            "nodename": "node1",
            "ipam": {"type": "calico-ipam"},
        }
        c.update(conf)
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/run/netns/{cid}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": args,
        }
        rc, out = run(plugin, env, json.dumps(c).encode(), self.deps)
        return rc, json.loads(out) if out else None

    def handles(self) -> list[str]:
        return sorted(h["metadata"]["name"] for h in self.ds.list("IPAMHandle").items)

    def weps(self) -> list[dict[str, Any]]:
        return self.ds.list("WorkloadEndpoint").items


def _ipam_nolock(ds: Datastore, conf: Any) -> Any:
    from pycalico.ipam import IPAM

    return IPAM(ds, lock_path=None)


@pytest.fixture
def w() -> World:
    return World()


def test_add_del_roundtrip(w: World) -> None:
    args = "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod-a"
    rc, res = w.call(
        "ADD",
        args=args,
        runtimeConfig={
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        },
    )
    assert rc == 0, res
    addr = res["ips"][0]["address"]
    assert addr.startswith("10.244.0.") and addr.endswith("/32")
    assert res["interfaces"][1]["sandbox"] == "/run/netns/c1"
    assert res["interfaces"][0]["mtu"] == 1500
    [link] = w.dp.links.values()
    assert link.addresses == (addr,) and link.mtu == 1500
    [wep] = w.weps()
    assert wep["metadata"]["name"] == "node1-k8s-pod--a-eth0"
    assert wep["spec"]["ports"] == [{"name": "", "protocol": "TCP", "port": 80, "hostPort": 8080}]
    assert w.handles() == [f"{NET}.c1"]
    rc, res2 = w.call("CHECK", args=args, prevResult=res)
    assert rc == 0, res2
    for _ in range(2):
        rc, _out = w.call("DEL", args=args)
        assert rc == 0
        assert w.weps() == [] and w.handles() == [] and w.dp.links == {}


def test_wiring_failure_releases_everything(w: World) -> None:
    w.dp.fail_setup = 1
    rc, err = w.call("ADD")
    assert rc == 1 and err["code"] == 100 and "injected" in err["details"]
    assert w.handles() == [] and w.weps() == [] and w.dp.links == {}
    rc, _ = w.call("ADD")
    assert rc == 0


def test_wep_write_failure_removes_veth_and_ip(w: World) -> None:
    w.ds.fail_wep = True
    rc, err = w.call("ADD")
    assert rc == 1 and err["code"] == 11
    assert w.handles() == [] and w.weps() == [] and w.dp.links == {}
    assert ("teardown", "calic1") in w.dp.calls


def test_pool_exhaustion_is_an_ipam_error(w: World) -> None:
    for i in range(300):
        rc, res = w.call("ADD", cid=f"x{i}", plugin=PLUGIN_IPAM, type="calico-ipam")
        if rc:
            break
    assert rc == 1 and res["code"] == 102
    assert len(w.handles()) == i  # the failed one left nothing behind


def test_del_of_older_sandbox_keeps_new_wep_and_veth(w: World) -> None:
    args = "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod-a"
    assert w.call("ADD", cid="old", args=args)[0] == 0
    # kubelet recreated the sandbox; the new ADD takes over the WEP and the veth name
    assert w.call("ADD", cid="new", args=args)[0] == 0
    [wep] = w.weps()
    assert wep["spec"]["containerID"] == "new"
    assert w.call("DEL", cid="old", args=args)[0] == 0
    [wep] = w.weps()
    assert wep["spec"]["containerID"] == "new"
    assert len(w.dp.links) == 1
    assert w.handles() == [f"{NET}.new"]


def test_repeated_add_is_idempotent_for_ipam(w: World) -> None:
    rc, a = w.call("ADD", cid="r1", plugin=PLUGIN_IPAM, type="calico-ipam")
    rc2, b = w.call("ADD", cid="r1", plugin=PLUGIN_IPAM, type="calico-ipam")
    assert rc == rc2 == 0 and a["ips"] == b["ips"]
    assert "interfaces" not in a


def test_gc_and_status(w: World) -> None:
    for cid in ("a", "b", "c"):
        assert w.call("ADD", cid=cid)[0] == 0
    valid = [{"containerID": "a", "ifname": "eth0"}]
    rc, out = w.call("GC", **{"cni.dev/valid-attachments": valid})
    assert rc == 0 and out is None
    assert w.handles() == [f"{NET}.a"]
    assert [x["spec"]["containerID"] for x in w.weps()] == ["a"]
    assert set(w.dp.links) == {"calia"}
    assert w.call("STATUS")[0] == 0
    w.ds.down = True
    rc, err = w.call("STATUS")
    assert rc == 1 and err["code"] == 50
    rc, err = w.call("GC", cniVersion="1.0.0")
    assert rc == 1 and err["code"] == 1


def test_delegated_ipam_and_rollback(w: World) -> None:
    ipam = {"type": "host-local", "subnet": "10.99.0.0/16"}
    rc, res = w.call("ADD", cid="d1", ipam=ipam)
    assert rc == 0 and res["ips"][0]["address"] == "10.99.0.7/32"
    assert w.delegated == [("host-local", "ADD")]
    w.dp.fail_setup = 1
    rc, _ = w.call("ADD", cid="d2", ipam=ipam)
    assert rc == 1
    assert w.delegated[-2:] == [("host-local", "ADD"), ("host-local", "DEL")]
    assert w.call("DEL", cid="d1", ipam=ipam)[0] == 0
    assert w.delegated[-1] == ("host-local", "DEL")
    w.delegate_fails = True  # IPAM-1: a failed delegated ADD is followed by its DEL
    rc, err = w.call("ADD", cid="d3", ipam=ipam)
    assert rc == 1 and err["code"] == 11 and "no lock" in err["msg"]
    assert w.delegated[-2:] == [("host-local", "ADD"), ("host-local", "DEL")]
    assert w.dp.links == {}


def test_chained_prev_result_is_kept(w: World) -> None:
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo0"}],
        "ips": [{"address": "192.0.2.1/24", "interface": 0}],
    }
    rc, res = w.call("ADD", cid="ch", prevResult=prev)
    assert rc == 0
    assert res["interfaces"][0] == {"name": "lo0"}
    assert res["ips"][0]["address"] == "192.0.2.1/24"
    assert res["ips"][1]["interface"] == 2


def test_check_reports_missing_interface(w: World) -> None:
    rc, res = w.call("ADD", cid="k1")
    w.dp.links.clear()
    rc, err = w.call("CHECK", cid="k1", prevResult=res)
    assert rc == 1 and "missing" in err["details"]
    rc, err = w.call("CHECK", cid="k1")
    assert rc == 1 and err["code"] == 7


def test_linux_dataplane_batches() -> None:
    runner = FakeProcessRunner()
    sysctl = FakeSysctl()
    dp = LinuxDataplane(IpRoute(runner), sysctl, netns_exists=lambda p: True)
    wi = WorkloadIface(
        "cali123", "eth0", "/run/netns/pod1", ("10.0.0.5/32",), 1450, "02:aa:bb:cc:dd:ee"
    )
    dp.setup(wi)
    (host_argv, host_in, _), (cont_argv, cont_in, _) = runner.calls
    assert host_argv == ("ip", "-batch", "-")
    assert host_in is not None and host_in.splitlines() == [
        "link add cali123 mtu 1450 address ee:ee:ee:ee:ee:ee type veth peer name eth0 mtu 1450 "
        "address 02:aa:bb:cc:dd:ee netns pod1",
        "link set cali123 up",
        "route replace 10.0.0.5 dev cali123 scope link",
        "neigh replace 10.0.0.5 lladdr 02:aa:bb:cc:dd:ee dev cali123 nud permanent",
    ]
    assert cont_argv == ("ip", "-n", "pod1", "-batch", "-")
    assert cont_in is not None and cont_in.splitlines() == [
        "link set eth0 up",
        "addr add 10.0.0.5/32 dev eth0",
        "route add 169.254.1.1/32 dev eth0 scope link",
        "route add default via 169.254.1.1 dev eth0",
        "neigh replace 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent",
    ]
    assert sysctl.values == {
        "net.ipv4.conf.cali123.route_localnet": "1",
        "net.ipv4.neigh.cali123.proxy_delay": "0",
        "net.ipv4.conf.cali123.proxy_arp": "1",
        "net.ipv4.conf.cali123.forwarding": "1",
    }
    # a failing container batch removes the host veth again
    runner2 = FakeProcessRunner(fail_when={"route add default": (2, "RTNETLINK: boom")})
    dp2 = LinuxDataplane(IpRoute(runner2), FakeSysctl(), netns_exists=lambda p: True)
    with pytest.raises(WiringError, match="boom"):
        dp2.setup(wi)
    assert runner2.calls[-1][1] == "link del cali123\n"
    assert Completed(("x",), 0).returncode == 0


def test_datastore_not_ready_blocks_add_and_del(w: World) -> None:
    assert w.call("ADD", cid="r0")[0] == 0
    w.ds.create(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "ClusterInformation",
            "metadata": {"name": "default"},
            "spec": {"datastoreReady": False},
        }
    )
    rc, err = w.call("ADD", cid="r1")
    assert rc == 1 and err["code"] == 11 and "not ready" in err["msg"]
    assert w.call("DEL", cid="r0")[0] == 1
    assert w.handles() == [f"{NET}.r0"]


def test_server_request_parsing() -> None:
    from pycalico.cni.server import parse_request

    plugin, env, stdin = parse_request(b'calico\0CNI_COMMAND=ADD\0A=b=c\0\0{"x": 1}')
    assert plugin == "calico"
    assert env == {"CNI_COMMAND": "ADD", "A": "b=c"}
    assert stdin == b'{"x": 1}'
    assert parse_request(b"calico-ipam\0\0") == ("calico-ipam", {}, b"")


def test_mtu_from_file_then_netconf(w: World, tmp_path: Any) -> None:
    mtu_file = tmp_path / "mtu"
    mtu_file.write_text("1410\n")
    deps = w.deps

    def with_file() -> Deps:
        d = deps()
        d.environ = {"CALICO_MTU_FILE": str(mtu_file)}
        return d

    w.deps = with_file  # type: ignore[method-assign]
    assert w.call("ADD", cid="m1")[0] == 0
    assert w.dp.links["calim1"].mtu == 1410
    assert w.call("ADD", cid="m2", mtu=9000)[0] == 0
    assert w.dp.links["calim2"].mtu == 9000
