"""docs/install.md, followed literally on two fresh "hosts".

Each host is a network namespace on a 198.18.0.0/15 underlay, and every command runs in a
private mount namespace of its own in which the paths the page uses (``/opt/pycalico``,
``/etc/calico``, ``/opt/cni/bin``, ``/etc/cni/net.d``, ``/var/run/calico``, ...) are
bind-mounted from that host's directory under pytest's tmp dir: nothing is written to the
real ones. The shell blocks of the page are extracted and run as written, in order, with
only what a second host must change (its name and address) substituted; the systemd block
is replaced by the page's foreground alternative (no systemd here). The shared datastore
is the page's etcd recipe: three members with TLS and client-certificate authentication,
each in a namespace on the underlay at the page's addresses (198.18.0.11-13), run with the
page's command (only the member's name and address, and its data directory, substituted).

Then: pods wired by the installed CNI plugin on each host reach each other across hosts,
and ``calicoctl node diags`` / ``checksystem`` produce what the docs say.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.etcd import make_tls
from tests.fixtures.netns import Netns, NetnsFactory, Underlay
from tests.kit import poll, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.etcd, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "install.md"
MEMBERS = ("198.18.0.11", "198.18.0.12", "198.18.0.13")
#: Every path of the page that must be private to a host (or, /opt/pycalico, to the test).
HOST_DIRS = ("etc/calico", "run/calico", "var/lib/calico", "opt/cni/bin", "etc/cni/net.d",
             "var/log/calico", "etc/systemd/system")  # fmt: skip
ENTER = """#!/bin/bash
# enter HOSTROOT VENV CMD...: bind this host's directories over the page's paths, run CMD.
set -e
root=$1 venv=$2; shift 2
mount --bind "$venv" /opt/pycalico
for d in {dirs}; do mkdir -p "$root/$d"; mount --bind "$root/$d" "/$d"; done
exec "$@"
"""


def page_blocks() -> list[tuple[str, str]]:
    """``(section title, shell block)`` of every ```sh block of the page, in order."""
    out: list[tuple[str, str]] = []
    section = ""
    lines = PAGE.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        if lines[i].strip() == "```sh":
            j = lines.index("```", i + 1)
            out.append((section, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return out


#: A host's commands see only what a fresh shell would (not the test run's PYTHONPATH,
#: virtualenv or datastore variables, which would win over the settings file).
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": "/root", "LANG": "C.UTF-8"}  # fmt: skip


class Host:
    def __init__(self, ns: Netns, root: Path, enter: Path, venv: Path) -> None:
        self.ns, self.root, self.enter, self.venv = ns, root, enter, venv

    def argv(self, *cmd: str, netns: bool = True) -> list[str]:
        """``cmd`` in this host's mounts and (with ``netns``) its network namespace; without,
        in the machine's network (where PyPI is: the page's ``pip install``)."""
        where = ["ip", "netns", "exec", self.ns.name] if netns else []
        return [*where, "unshare", "--mount", "--propagation", "private", str(self.enter),
                str(self.root), str(self.venv), *cmd]  # fmt: skip

    def sh(self, script: str, *, env: dict[str, str] | None = None, input: str | None = None,
           check: bool = True, netns: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        argv = self.argv("bash", "-euo", "pipefail", "-c", script, netns=netns)
        p = subprocess.run(argv, input=input,
                           capture_output=True, text=True, timeout=240,
                           env={**CLEAN_ENV, **(env or {})})  # fmt: skip
        if check and p.returncode != 0:
            raise AssertionError(f"{script}\n-> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p


@pytest.fixture(scope="module")
def mountpoints() -> Iterator[None]:
    """The page's directories must exist as mount points; create the missing ones (empty)
    and remove exactly those afterwards."""
    created = []
    for d in ("opt/pycalico", *HOST_DIRS):
        p = Path("/") / d
        missing = []
        while not p.exists():
            missing.append(p)
            p = p.parent
        for m in reversed(missing):
            m.mkdir()
            created.append(m)
    yield
    for m in reversed(created):
        try:
            m.rmdir()
        except OSError:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, mountpoints: None) -> Iterator[list[Host]]:
    tmp = tmp_path_factory.mktemp("install")
    blocks = page_blocks()
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(REPO)], check=True, timeout=300)  # fmt: skip
    venv = tmp / "venv"
    venv.mkdir()
    enter = tmp / "enter.sh"
    enter.write_text(ENTER.replace("{dirs}", " ".join(HOST_DIRS)))
    enter.chmod(0o755)
    with NetnsFactory("inst") as f:
        ul: Underlay = f.underlay(2)
        certs = tmp / "certs"
        start_etcd_members(f, ul, blocks, certs, tmp)
        hosts = []
        for i, ns in enumerate(ul.nodes):
            root = tmp / f"host-{i + 1}"
            root.mkdir()
            hosts.append(Host(ns, root, enter, venv))
        # Step 1, once for all hosts (one venv): the venv and the wheel, as the page says.
        (_section, setup), *_ = [(s, b) for s, b in blocks if "pip install" in b]
        for line in setup.splitlines():
            if line.startswith(("python3 -m venv", "/opt/pycalico/bin/pip install")):
                hosts[0].sh(f"cd {dist} && {line}", netns=False)
        for i, h in enumerate(hosts):
            run_page_on(h, blocks, i + 1, ul.node_ips[i], f, certs)
        yield hosts


def start_etcd_members(
    f: NetnsFactory, ul: Underlay, blocks: list[tuple[str, str]], certs: Path, tmp: Path
) -> None:
    """The page's certificates (one CA; server/peer certificates naming every member; a client
    certificate) and its member command, once per member, in the member's namespace."""
    tls = make_tls(certs, ips=MEMBERS)
    for src, dst in ((tls.key, "server-key.pem"), (tls.cert, "peer.pem"),
                     (tls.key, "peer-key.pem"), (tls.client_key, "client-key.pem")):  # fmt: skip
        shutil.copy(src, certs / dst)
    (recipe,) = [b for s, b in blocks if s.startswith("A shared datastore") and "--name m1" in b]
    for n, addr in enumerate(MEMBERS, 1):
        member = f.netns(f"m{n}")
        f.veth(member, "eth0", ul.bridge, f"ulm{n}", a_addr=f"{addr}/{ul.prefixlen}")
        ul.bridge.ip("link", "set", f"ulm{n}", "master", "br0")
        lines = []
        for line in recipe.splitlines():
            if "--initial-cluster " not in line:  # the member list stays as written
                line = line.replace("m1", f"m{n}").replace(MEMBERS[0], addr)
            lines.append(line.replace("/var/lib/etcd", str(tmp / f"etcd-m{n}")))
        with (tmp / f"etcd-m{n}.log").open("w") as log:
            member.popen("bash", "-c", "exec " + "\n".join(lines), cwd=certs, stdout=log,
                         stderr=subprocess.STDOUT)  # fmt: skip


def run_page_on(
    h: Host, blocks: list[tuple[str, str]], n: int, ip: str, f: NetnsFactory, certs: Path
) -> None:
    for section, block in blocks:
        script = block.replace("NODENAME=host-1", f"NODENAME=host-{n}").replace(
            "IP=198.18.0.1\n", f"IP={ip}\n"
        )
        if section.startswith("1.") and "apt-get" in block:
            for pkg in block.split("-y", 1)[1].split():
                assert (
                    shutil.which(pkg)
                    or subprocess.run(["dpkg", "-s", pkg], capture_output=True).returncode == 0
                ), f"{pkg} (the page's apt-get line) is not installed"
            continue
        if section.startswith("1."):
            script = "\n".join(ln for ln in script.splitlines() if "checksystem" in ln)
            out = h.sh(script).stdout
            assert "System meets minimum system requirements" in out
            continue
        if section.startswith("4.") and "systemctl" in block:
            continue  # no systemd on this machine: the page's foreground alternative follows
        if section.startswith("4.") and script.strip().endswith("calico-node run"):
            with (h.root / "calico-node.log").open("w") as log:
                f.processes.append(subprocess.Popen(
                    h.argv("bash", "-c", f"exec {script.strip()}"), env=CLEAN_ENV,
                    stdout=subprocess.DEVNULL, stderr=log, text=True))  # fmt: skip
            continue
        if section.startswith("4.") and "node status" in block:
            continue  # checked below, once every host runs
        if section.startswith(("1.", "2.", "3.")):
            h.sh(f"cd {certs}\n{script}")


def cni(h: Host, command: str, pod: Netns, cid: str) -> dict[str, object]:
    """The installed plugin, called as a plain CNI runtime (Podman, cnitool) calls it: no
    Kubernetes arguments, so the workload joins the network's profile."""
    conflist = json.loads((h.root / "etc/cni/net.d/10-calico.conflist").read_text())
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"],
            **conflist["plugins"][0]}  # fmt: skip
    env = dict(CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_NETNS=pod.path,
               CNI_IFNAME="eth0", CNI_PATH="/opt/cni/bin")  # fmt: skip
    p = h.sh("/opt/cni/bin/calico", env=env, input=json.dumps(conf))
    return json.loads(p.stdout) if p.stdout.strip() else {}


def test_install_page_gives_pod_connectivity_across_hosts(cluster: list[Host]) -> None:
    h1 = cluster[0]

    def ready(h: Host) -> bool:
        p = h.sh("curl -s -o /dev/null -w '%{http_code}' localhost:9099/readiness", check=False)
        return p.stdout.strip() == "200"

    for h in cluster:
        assert wait_for(lambda h=h: ready(h), timeout=90), (h.root / "calico-node.log").read_text()

    def mesh_up() -> str | None:
        out = h1.sh("/opt/pycalico/bin/calicoctl node status", check=False).stdout
        return out if re.search(r"198\.18\.0\.2 .*node-to-node mesh.*Established", out) else None

    status = wait_for(mesh_up, timeout=60)
    assert status and "Calico process is running." in status

    with NetnsFactory("pod") as f:
        pods = [f.netns("p1"), f.netns("p2")]
        pairs = list(enumerate(zip(cluster, pods, strict=True)))
        results = [cni(h, "ADD", pod, f"c{i}") for i, (h, pod) in pairs]
        ips = [str(r["ips"][0]["address"]).split("/")[0] for r in results]  # type: ignore[index]
        if not poll(lambda: pods[0].ping(ips[1]), timeout=60):
            state = [h.sh("ip route; ip -br addr; nft list ruleset | head -60", check=False).stdout
                     for h in cluster] + [p.ip("route") + p.ip("addr") for p in pods]  # fmt: skip
            raise AssertionError(f"{ips} not connected:\n" + "\n----\n".join(state))
        assert pods[1].ping(ips[0])
        for i, (h, pod) in pairs:
            cni(h, "DEL", pod, f"c{i}")
        wep = h1.sh("/opt/pycalico/bin/calicoctl get workloadendpoints -A -o name").stdout
        assert wep.strip() == ""


def test_diags_and_checksystem_say_what_the_docs_say(cluster: list[Host]) -> None:
    h1 = cluster[0]
    out = h1.sh("/opt/pycalico/bin/calicoctl node diags -o /var/lib/calico/diags.tgz")
    assert "Diags saved to /var/lib/calico/diags.tgz" in out.stdout
    with tarfile.open(h1.root / "var/lib/calico/diags.tgz") as tar:
        names = set(tar.getnames())
        ruleset = tar.extractfile("calico-diags/host/nft-ruleset.txt")
        assert ruleset is not None and b"table ip calico" in ruleset.read()
        env_file = tar.extractfile("calico-diags/config/calico-node.env")
        assert env_file is not None and b"NODENAME=host-1" in env_file.read()
    for item in ("bird/protocols.txt", "node/status.json", "host/ip-route.txt", "errors.txt",
                 "checksystem.txt"):  # fmt: skip
        assert f"calico-diags/{item}" in names
    check = h1.sh("/opt/pycalico/bin/calicoctl node checksystem").stdout
    for feature in ("nf_tables", "veth", "vxlan"):
        assert re.search(rf"\t\t{feature}\s+OK", check), check
