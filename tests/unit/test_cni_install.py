"""``calico-node install-cni``: executables and conflist written like Calico's installer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from click.testing import CliRunner

from pycalico.node.install_cni import build_conflist, install_cni


def test_install_cni_writes_runnable_plugins_and_conflist(tmp_path: Path) -> None:
    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": str(tmp_path / "c.db")}
    r = CliRunner().invoke(
        install_cni,
        [
            "--bin-dir",
            str(tmp_path / "bin"),
            "--conf-dir",
            str(tmp_path / "net.d"),
            "--nodename",
            "node-1",
            "--mtu",
            "1440",
            "--config",
            str(tmp_path / "none.cfg"),
        ],
        env=env,
    )
    # a missing --config file is an error naming it
    assert r.exit_code != 0 and "none.cfg" in r.output
    r = CliRunner().invoke(
        install_cni,
        [
            "--bin-dir",
            str(tmp_path / "bin"),
            "--conf-dir",
            str(tmp_path / "net.d"),
            "--nodename",
            "node-1",
            "--mtu",
            "1440",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    conf = json.loads((tmp_path / "net.d" / "10-calico.conflist").read_text())
    assert conf["name"] == "k8s-pod-network"
    calico, portmap = conf["plugins"]
    assert calico["type"] == "calico" and calico["ipam"] == {"type": "calico-ipam"}
    assert calico["nodename"] == "node-1" and calico["mtu"] == 1440
    assert calico["datastore_type"] == "sqlite"
    assert calico["datastore_path"] == str(tmp_path / "c.db")
    assert portmap == {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
    for name in ("calico", "calico-ipam"):
        exe = tmp_path / "bin" / name
        assert os.access(exe, os.X_OK)
        p = subprocess.run(
            [str(exe)],
            input=b'{"cniVersion":"0.4.0"}',
            capture_output=True,
            env={"CNI_COMMAND": "VERSION"},
            timeout=30,
        )
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["cniVersion"] == "0.4.0"
    names = sorted(p.name for p in (tmp_path / "bin").iterdir())
    assert names == [".calico-ipam.py", ".calico.py", "calico", "calico-ipam"]  # no temp files
    if shutil.which("cc"):
        assert (tmp_path / "bin" / "calico").read_bytes()[:4] == b"\x7fELF"  # the C shim


def test_conflist_without_portmap_and_etcd() -> None:
    c = build_conflist(
        datastore={"datastore_type": "etcdv3", "etcd_endpoints": "http://e:2379"}, portmap=False
    )
    assert [p["type"] for p in c["plugins"]] == ["calico"]
    assert c["plugins"][0]["etcd_endpoints"] == "http://e:2379"
