"""Running on your own hosts: calico-node's settings file (Calico's variable names, env-file
or YAML, validated before anything starts) and ``calico-node install`` (settings template,
CNI plugins, a systemd unit that ``systemd-analyze verify`` accepts)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.cni.types import parse_netconf
from pycalico.node.envfile import NodeConfigError, effective_env, load, parse_env_file
from pycalico.node.main import cli


def test_env_file_syntax() -> None:
    text = (
        "# comment\n\nexport NODENAME=host-1\nIP='10.0.0.1/24'\n"
        'CALICO_IPV4POOL_CIDR="192.168.0.0/16"\nAS=64512 # trailing comment\n'
    )
    got = {k: v for k, (v, _) in parse_env_file(text, "f").items()}
    assert got == {"NODENAME": "host-1", "IP": "10.0.0.1/24",
                   "CALICO_IPV4POOL_CIDR": "192.168.0.0/16", "AS": "64512"}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NODENAME host-1\n", "f:1: expected NAME=value"),
        ("IP=1.2.3.4\nIP=5.6.7.8\n", "f:2: IP is already set on line 1"),
        ("IP='1.2.3.4\n", "f:1: IP: unterminated ' quote"),
    ],
)
def test_env_file_syntax_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(NodeConfigError, match=message):
        parse_env_file(text, "f")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.env", "NODENAME=x\nCALICO_NETWORKIN_BACKEND=bird\n",
         r"a.env:2: CALICO_NETWORKIN_BACKEND: unknown setting"),
        ("a.env", "CALICO_NETWORKING_BACKEND=ospf\n", r"'ospf' is not one of bird, vxlan, none"),
        ("a.yaml", "- NODENAME\n", "expected a mapping"),
        ("a.yaml", "NODENAME: {a: 1}\n", "NODENAME: expected a scalar value"),
        ("a.yaml", "NODENAME: [\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_invalid_settings_are_refused(tmp_path: Path, name: str, text: str, message: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(NodeConfigError, match=message):
        load(str(p))


def test_yaml_settings_felix_overrides_and_precedence(tmp_path: Path) -> None:
    p = tmp_path / "node.yaml"
    p.write_text(
        "NODENAME: n1\nNO_DEFAULT_POOLS: true\nFELIX_LOGSEVERITYSCREEN: debug\nAS: 64512\n"
    )
    assert load(str(p)) == {"NODENAME": "n1", "NO_DEFAULT_POOLS": "true",
                            "FELIX_LOGSEVERITYSCREEN": "debug", "AS": "64512"}  # fmt: skip
    env = effective_env({"NODENAME": "from-env", "PATH": "/bin"}, str(p))
    assert env["NODENAME"] == "from-env" and env["AS"] == "64512" and env["PATH"] == "/bin"
    with pytest.raises(NodeConfigError, match="cannot read"):
        effective_env({}, str(tmp_path / "missing.env"))
    binary = tmp_path / "bin.env"
    binary.write_bytes(b"NODENAME=\xff\xfe\n")
    with pytest.raises(NodeConfigError, match="not UTF-8"):
        load(str(binary))


def test_run_refuses_an_invalid_settings_file_before_starting(tmp_path: Path) -> None:
    p = tmp_path / "bad.env"
    p.write_text("DATASTORE_TYPE=mysql\n")
    res = CliRunner().invoke(cli, ["run", "--config-file", str(p)])
    assert res.exit_code == 1
    assert "DATASTORE_TYPE: 'mysql' is not one of sqlite, etcdv3, memory" in res.output
    res = CliRunner().invoke(cli, ["check-config", "--config-file", str(p)])
    assert res.exit_code == 1 and "invalid:" in res.output


def test_install_lays_down_settings_cni_and_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = CliRunner().invoke(cli, ["install", "--root", str(root), "--executable", "/bin/true"])
    assert res.exit_code == 0, res.output
    settings = root / "etc/calico/calico-node.env"
    unit = root / "etc/systemd/system/calico-node.service"
    conflist = root / "etc/cni/net.d/10-calico.conflist"
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    assert '"datastore_path": "/var/lib/calico/calico.db"' in conflist.read_text()
    assert (root / "opt/cni/bin/calico").exists() and (root / "opt/cni/bin/calico-ipam").exists()
    text = unit.read_text()
    assert "ExecStart=/bin/true run\n" in text and "KillMode=process\n" in text
    assert "ExecStartPre=/bin/true check-config --config-file /etc/calico/calico-node.env" in text
    if shutil.which("systemd-analyze"):
        v = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert v.returncode == 0, v.stderr

    settings.write_text(
        "NODENAME=mine\nDATASTORE_TYPE=etcdv3\nETCD_ENDPOINTS=https://10.0.0.1:2379\n"
        "ETCD_CA_CERT_FILE=/etc/calico/ca.pem\nETCD_CERT_FILE=/etc/calico/c.pem\n"
        "ETCD_KEY_FILE=/etc/calico/k.pem\n"
    )
    res = CliRunner().invoke(cli, ["install", "--root", str(root), "--executable", "/bin/true"])
    assert res.exit_code == 0 and "kept" in res.output
    assert settings.read_text().startswith("NODENAME=mine")  # never overwritten
    plugin = json.loads(conflist.read_text())["plugins"][0]
    assert plugin["etcd_endpoints"] == "https://10.0.0.1:2379"
    # The plugins reach a TLS etcd as the agent does (they read these Calico netconf fields).
    files = ("/etc/calico/ca.pem", "/etc/calico/c.pem", "/etc/calico/k.pem")
    assert (plugin["etcd_ca_cert_file"], plugin["etcd_cert_file"], plugin["etcd_key_file"]) == files
    conf = parse_netconf(json.dumps({"cniVersion": "1.0.0", "name": "n", **plugin}))
    assert (conf.etcd_ca_cert_file, conf.etcd_cert_file, conf.etcd_key_file) == files
    assert '"nodename": "mine"' in conflist.read_text()

    settings.write_text("BOGUS=1\n")
    res = CliRunner().invoke(cli, ["install", "--root", str(root)])
    assert res.exit_code != 0 and "BOGUS: unknown setting" in res.output
