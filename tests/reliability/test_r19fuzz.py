"""Issue 19, fuzz slice: etcd TLS client auth end to end, and bounded hypothesis fuzzing of
the CNI plugin's input (stdin netconf + ``CNI_*`` env) and of the DNS server's packet path.

- etcd: a real etcd with ``--client-cert-auth`` (``tests/fixtures/etcd.py``, openssl CLI);
  pycalico configured by ``ETCD_*`` env works with the client certificate, and without it,
  with one from another CA, with the wrong server CA or with a missing file it fails with
  :class:`Unavailable` naming the problem, and calicoctl exits 1 with one line, no traceback.
- CNI: :func:`pycalico.cni.main.run` in-process (MemoryDatastore + FakeDataplane, no kernel)
  on arbitrary env/stdin always returns exit 0/1 with JSON; an error carries a spec code
  (never 999, which is what the runner's catch-all turns an unexpected exception into).
- DNS: arbitrary and mutated valid queries never raise in the fast path or in the general
  path (the resolver's catch-all SERVFAIL would hide a bug, so the paths are called directly)
  and every reply parses as DNS, echoes the query id and fits the UDP payload size.

All hypothesis runs are derandomized and bounded (about 20 s in total on a busy machine).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.cni.context import Deps, _list_handles
from pycalico.cni.dataplane import FakeDataplane
from pycalico.cni.errors import INTERNAL, CniError
from pycalico.cni.main import PLUGIN_CALICO, PLUGIN_IPAM, run
from pycalico.config import load_config
from pycalico.datastore import open_datastore
from pycalico.datastore.base import Datastore, Unavailable
from pycalico.datastore.memory import MemoryDatastore
from pycalico.dns.fastpath import fast_answer
from pycalico.dns.resolver import Action, Resolver
from tests.fixtures.etcd import EtcdServer, make_tls
from tests.kit.builders import ip_pool
from tests.unit.test_dns_index import wep
from tests.unit.test_dns_resolver import make_resolver

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# == etcd TLS client auth ==================================================================
def _env(server: EtcdServer, **extra: str) -> dict[str, str]:
    return {
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": server.url,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(sys.path),
        **extra,
    }


def _calicoctl(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    code = "from pycalico.ctl.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=dict(env), capture_output=True, text=True,
        timeout=60, cwd="/",
    )  # fmt: skip


@pytest.mark.etcd
def test_etcd_tls_client_auth(etcd_tls: EtcdServer, tmp_path: Path) -> None:
    tls = etcd_tls.tls
    assert tls is not None
    good = _env(
        etcd_tls, ETCD_CA_CERT_FILE=tls.ca, ETCD_CERT_FILE=tls.client_cert,
        ETCD_KEY_FILE=tls.client_key,
    )  # fmt: skip
    ds = open_datastore(load_config(env=good))
    try:
        created = ds.create(ip_pool("tls-pool", "10.77.0.0/16"))
        rv = int(created["metadata"]["resourceVersion"])
        assert [e.obj["metadata"]["name"] for e in ds.watch("/calico/", rv - 1, 2)] == ["tls-pool"]
        assert [o["metadata"]["name"] for o in ds.list("IPPool").items] == ["tls-pool"]
    finally:
        ds.close()
    p = _calicoctl(good, "get", "ippools")
    assert p.returncode == 0, p.stderr
    assert "tls-pool" in p.stdout

    other = make_tls(tmp_path / "other-ca")  # a second, unrelated CA and its client cert
    bad: dict[str, tuple[dict[str, str], str]] = {
        "no client cert": ({"ETCD_CA_CERT_FILE": tls.ca}, "no client certificate configured"),
        "client cert of another CA": (
            {
                "ETCD_CA_CERT_FILE": tls.ca,
                "ETCD_CERT_FILE": other.client_cert,
                "ETCD_KEY_FILE": other.client_key,
            },
            "TLS failure",
        ),
        "server CA not trusted": (
            {
                "ETCD_CA_CERT_FILE": other.ca,
                "ETCD_CERT_FILE": tls.client_cert,
                "ETCD_KEY_FILE": tls.client_key,
            },
            "CERTIFICATE_VERIFY_FAILED",
        ),
        "key of another cert": (
            {
                "ETCD_CA_CERT_FILE": tls.ca,
                "ETCD_CERT_FILE": tls.client_cert,
                "ETCD_KEY_FILE": other.client_key,
            },
            "KEY_VALUES_MISMATCH",
        ),
        "missing CA file": (
            {
                "ETCD_CA_CERT_FILE": str(tmp_path / "nope.pem"),
                "ETCD_CERT_FILE": tls.client_cert,
                "ETCD_KEY_FILE": tls.client_key,
            },
            "etcdCACertFile",
        ),
        "missing key file": (
            {
                "ETCD_CA_CERT_FILE": tls.ca,
                "ETCD_CERT_FILE": tls.client_cert,
                "ETCD_KEY_FILE": str(tmp_path / "nope.key"),
            },
            "etcdKeyFile",
        ),
    }
    for case, (extra, needle) in bad.items():
        env = _env(etcd_tls, **extra)
        with pytest.raises(Unavailable) as ei:
            ds = open_datastore(load_config(env=env))
            try:
                ds.list("IPPool")
            finally:
                ds.close()
        assert needle in str(ei.value), (case, str(ei.value))
        p = _calicoctl(env, "get", "ippools")
        assert p.returncode == 1, (case, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr and needle in p.stderr, (case, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, (case, p.stderr)
        assert "tls-pool" not in p.stdout


# == CNI plugin input ======================================================================
# Spec codes (CNI spec "Error" section) plus the plugin's own range (>= 100); 999 is what the
# runner's catch-all reports for an unexpected exception, i.e. a bug.
SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51}
COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]


class _Store(MemoryDatastore):
    def close(self) -> None:  # shared across invocations
        pass


def _deps(ds: Datastore) -> Deps:
    def delegate(plugin: str, command: str, stdin: bytes, env: Mapping[str, str]) -> Any:
        if plugin != "host-local":
            raise CniError(11, f"{plugin}: not installed")
        return (
            {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.7/16"}]}
            if command == "ADD"
            else None
        )

    def ipam(ds: Datastore, conf: Any) -> Any:
        from pycalico.ipam import IPAM

        return IPAM(ds, lock_path=None)

    return Deps(
        open_datastore=lambda conf, env: ds,
        ipam=ipam,
        list_handles=_list_handles,
        dataplane=FakeDataplane,
        delegate=delegate,
        environ={"CALICO_MTU_FILE": "/nonexistent"},
        hostname=lambda: "host-a",
    )


def _base_conf(plugin: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "k8s-pod-network",
        "type": plugin,
        "nodename": "node1",
        "ipam": {"type": "calico-ipam"},
    }


def _base_env(cmd: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": cmd,
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/pycalico-fuzz-none",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod-a",
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=12,
)
CONF_KEYS = [
    "cniVersion", "name", "type", "nodename", "ipam", "mtu", "runtimeConfig", "args",
    "prevResult", "kubernetes", "policy", "log_level", "datastore_type", "nodename_file",
    "nodename_file_optional", "container_settings", "feature_control", "ipam.type",
    "ipam.ipv4_pools", "ipam.subnet", "ipam.assign_ipv4", "ipam.assign_ipv6", "cniVersions",
    "plugins", "dns", "capabilities",
]  # fmt: skip
ENV_KEYS = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS"]
env_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "ADD", "DEL", "VERSION", "a=b;c", "=;=", "-x", "..", "/", "eth0:1"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.;=/:", max_size=30),
)


@st.composite
def cni_inputs(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    plugin = draw(st.sampled_from([PLUGIN_CALICO, PLUGIN_IPAM]))
    env = _base_env(draw(st.sampled_from(COMMANDS)))
    for k in draw(st.lists(st.sampled_from(ENV_KEYS), max_size=3, unique=True)):
        v = draw(st.none() | env_values)
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    how = draw(st.sampled_from(["mutate", "mutate", "json", "bytes", "deep"]))
    if how == "deep":  # nesting beyond the interpreter's recursion limit
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"ipam":', b'{"prevResult":[']))
        stdin = opener * draw(st.integers(500, 120_000))
    elif how == "bytes":
        stdin = draw(st.binary(max_size=300))
    elif how == "json":
        stdin = json.dumps(draw(json_values)).encode()
    else:
        conf = _base_conf(plugin)
        for key in draw(st.lists(st.sampled_from(CONF_KEYS), min_size=1, max_size=4)):
            value = draw(st.none() | json_values)
            top, _, sub = key.partition(".")
            target = conf
            if sub:
                target = conf["ipam"] if isinstance(conf.get("ipam"), dict) else conf
                top = sub
            if value is None and draw(st.booleans()):
                target.pop(top, None)
            else:
                target[top] = value
        stdin = json.dumps(conf, allow_nan=True).encode()
        if draw(st.booleans()):  # byte-level damage on top
            pos = draw(st.integers(0, max(len(stdin) - 1, 0)))
            stdin = stdin[:pos] + draw(st.binary(max_size=3)) + stdin[pos + 1 :]
    return plugin, env, stdin


CNI_SEEN: list[int] = []


@settings(FUZZ, max_examples=700)
@given(cni_inputs())
def test_fuzz_cni_input(case: tuple[str, dict[str, str], bytes]) -> None:
    plugin, env, stdin = case
    if b"log_file_path" in stdin:  # the fuzzer must not make the plugin write files
        stdin = stdin.replace(b"log_file_path", b"log_file_xxxx")
    ds = _Store()
    ds.create(ip_pool("pool1", "10.244.0.0/24", block_size=26))
    CNI_SEEN.append(1)
    rc, out = run(plugin, env, stdin, lambda: _deps(ds))
    assert rc in (0, 1), (rc, out)
    if rc == 0:
        assert out == "" or isinstance(json.loads(out), dict), out
        return
    doc = json.loads(out)
    assert isinstance(doc, dict) and isinstance(doc.get("msg"), str), doc
    code = doc.get("code")
    assert isinstance(code, int) and code != INTERNAL, (env, stdin, doc)
    assert code in SPEC_CODES or code >= 100, doc
    assert isinstance(doc.get("cniVersion"), str), doc
    assert "Traceback" not in out


def test_cni_exec_entry_point_on_garbage(tmp_path: Path) -> None:
    """The exec'd plugin itself (main.py) on garbage stdin: exit 1, error JSON, no traceback."""
    code = "from pycalico.cni.main import calico_main; calico_main()"
    env = {
        **_base_env("ADD"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "PYCALICO_CNI_IN_PROCESS": "1",
        "CALICO_CNI_SOCKET": "",
        "DATASTORE_TYPE": "memory",
    }
    for stdin in (b"\xff\xfe\x00garbage", b'{"cniVersion": "1.1.0", "name": 1}', b"[" * 100000):
        p = subprocess.run(
            [sys.executable, "-c", code], input=stdin, env=env, capture_output=True, timeout=60,
            cwd=tmp_path,
        )  # fmt: skip
        assert p.returncode == 1, (stdin[:40], p.returncode, p.stdout, p.stderr)
        doc = json.loads(p.stdout)
        assert doc["code"] in SPEC_CODES and doc["code"] != INTERNAL, doc
        assert b"Traceback" not in p.stderr, p.stderr


# == DNS packet handling ===================================================================
def _resolver(forwarding: bool = False, fast: bool = True) -> Resolver:
    res = make_resolver(
        wep(
            "web",
            "shop",
            "10.244.1.2/32",
            "fd00::2/128",
            ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
        ),
        wep("db", "prod", "10.244.2.9/32"),
        forwarding=forwarding,
    )
    res.fast = fast
    return res


RESOLVERS = {(f, fast): _resolver(f, fast) for f in (False, True) for fast in (False, True)}
NAMES = [
    "web.shop.pod.cluster.local", "WeB.sHoP.pod.cluster.local.", "db.prod.pod.cluster.local",
    "nope.shop.pod.cluster.local", "pod.cluster.local", "_http._tcp.web.shop.pod.cluster.local",
    "2.1.244.10.in-addr.arpa", "9.2.244.10.in-addr.arpa", "example.com",
    "a" * 63 + ".pod.cluster.local",
]  # fmt: skip
QTYPES = ["A", "AAAA", "PTR", "SRV", "SOA", "NS", "ANY", "TXT", "AXFR", "CNAME", "MX"]


@st.composite
def mutated_queries(draw: st.DrawFn) -> bytes:
    qtype = getattr(QTYPE, draw(st.sampled_from(QTYPES)))
    header = DNSHeader(id=draw(st.integers(0, 0xFFFF)), rd=draw(st.integers(0, 1)))
    q = DNSRecord(header, q=DNSQuestion(draw(st.sampled_from(NAMES)), qtype))
    if draw(st.booleans()):
        q.add_ar(EDNS0(udp_len=draw(st.integers(0, 0xFFFF)), version=draw(st.integers(0, 2))))
    data = bytearray(q.pack())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, len(data))) if data else 0
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(data):
            data[pos] = draw(st.sampled_from([0, 1, 0x3F, 0x40, 0xC0, 0xC0 | 12 >> 8, 12, 0xFF]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data += data[12:]
    return bytes(data)


DNS_SEEN: dict[str, int] = {}


def _check_dns(data: bytes, tcp: bool) -> None:
    for (forwarding, fast), res in RESOLVERS.items():
        if fast:  # the fast path itself must never raise (handle() would hide it)
            s = res.settings
            fast_answer(data, tcp, res.index, s.ttl, s.negative_ttl, s.max_udp_payload,
                        s.forwarding, res._mname_wire, res._rname_wire)  # fmt: skip
        else:  # the general path too: a SERVFAIL from handle()'s catch-all would be a bug
            try:
                query = DNSRecord.parse(data)
            except Exception:  # dnslib raises many types: FORMERR
                query = None
            if query is not None and len(data) >= 12 and not data[2] & 0x80:
                res._answer(query, tcp)
        out = res.handle(data, tcp)
        DNS_SEEN[out.action.value] = DNS_SEEN.get(out.action.value, 0) + 1
        if out.action is Action.DROP:
            assert len(data) < 12 or data[2] & 0x80
            continue
        if out.action is Action.FORWARD:
            assert forwarding
            continue
        assert out.data[:2] == data[:2] and out.data[2] & 0x80, (data, out)
        if not tcp:
            assert len(out.data) <= 1232
        reply = DNSRecord.parse(out.data)
        assert reply.header.id == struct.unpack("!H", data[:2])[0]


@settings(FUZZ, max_examples=600)
@given(mutated_queries(), st.booleans())
def test_fuzz_dns_mutated_queries(data: bytes, tcp: bool) -> None:
    _check_dns(data, tcp)


@settings(FUZZ, max_examples=300)
@given(st.binary(max_size=700), st.booleans())
def test_fuzz_dns_random_bytes(data: bytes, tcp: bool) -> None:
    _check_dns(data, tcp)


def test_fuzz_dns_valid_queries_answered_by_both_paths() -> None:
    """Sanity of the harness: unmutated queries are answered, identically by both paths."""
    for name in NAMES:
        for qtype in ("A", "AAAA", "PTR", "SRV"):
            q = DNSRecord(DNSHeader(id=4242, rd=1), q=DNSQuestion(name, getattr(QTYPE, qtype)))
            data = q.pack()
            fast = RESOLVERS[(False, True)].handle(data)
            slow = RESOLVERS[(False, False)].handle(data)
            assert fast.action is slow.action is Action.REPLY
            a, b = DNSRecord.parse(fast.data), DNSRecord.parse(slow.data)
            assert a.header.id == b.header.id == 4242
            assert a.header.rcode == b.header.rcode, (name, qtype)
            assert sorted(map(str, a.rr)) == sorted(map(str, b.rr)), (name, qtype)
            assert QTYPE.get(a.q.qtype) == qtype
