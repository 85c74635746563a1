"""Host checks (``calicoctl node checksystem``) and the diagnostics bundle (``node diags``):
feature detection from modules/config with fallbacks, redaction of secrets, a bundle that
records what it could not collect, and an archive written atomically and privately."""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.ctl.main import cli
from pycalico.diag.bundle import DiagsError, DiagsOptions, collect, write_bundle
from pycalico.diag.redact import REDACTED, redact_env, redact_text
from pycalico.system.hostcheck import (
    FEATURES,
    HostReport,
    KernelFacts,
    check_features,
    format_report,
    module_names,
    parse_kernel_config,
    parse_release,
)
from pycalico.system.process import Completed, FakeProcessRunner

ALL_REQUIRED = {c for f in FEATURES if f.required for c in f.configs}


def test_release_and_config_parsing() -> None:
    assert parse_release("6.18.44-fc-v1045") == (6, 18)
    assert parse_release("5.10.0-28-amd64") == (5, 10)
    assert parse_release("garbage") == (0, 0)
    cfg = "CONFIG_VXLAN=m\n# CONFIG_NET_IPIP is not set\nCONFIG_TUN=y\nCONFIG_HZ=250\n"
    assert parse_kernel_config(cfg) == {"CONFIG_VXLAN", "CONFIG_TUN"}


def test_module_names_from_proc_and_modules_dep() -> None:
    assert module_names("nf_tables 356352 0 - Live 0x0\n", path_column=False) == {"nf_tables"}
    dep = "kernel/drivers/net/vxlan/vxlan.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\n"
    dep += "kernel/net/netfilter/nf-conntrack-netlink.ko:\n\n"
    assert module_names(dep, path_column=True) == {"vxlan", "nf_conntrack_netlink"}


def test_features_fall_back_and_required_missing_fails() -> None:
    facts = KernelFacts("6.1.0", modules={"tun"}, configs=set(ALL_REQUIRED))
    results = {r.name: r for r in check_features(facts)}
    assert results["ipip"].ok and "fallback: tun" in results["ipip"].detail
    assert not results["vxlan"].ok and "VXLAN IP pools" in results["vxlan"].detail
    report = HostReport("6.1.0", True, list(results.values()), [])
    assert report.ok  # optional features only inform

    facts.configs.discard("CONFIG_NF_TABLES")
    results = {r.name: r for r in check_features(facts)}
    assert results["nf_tables"].detail.startswith("FAIL")
    report = HostReport("6.1.0", True, list(results.values()), [])
    assert not report.ok
    assert "doesn't meet" in format_report(report)
    assert not HostReport("4.19.0", False, [], []).ok


def test_checksystem_cli_reads_the_given_kernel_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.gz"
    with gzip.open(cfg, "wt") as f:
        f.write("".join(f"{c}=y\n" for c in sorted(ALL_REQUIRED)))
    res = CliRunner().invoke(cli, ["node", "checksystem", "--kernel-config", str(cfg)])
    assert f"(config: {cfg})" in res.output
    assert "nf_tables" in res.output and "OK" in res.output
    assert res.exit_code == (0 if "meets minimum" in res.output else 1)


def test_redaction() -> None:
    env = {"ETCD_KEY_FILE": "/etc/k.pem", "CALICO_BGP_PASSWORD": "hunter2", "HOME": "/root",
           "FELIX_API_TOKEN": "t0k", "NODENAME": "n1"}  # fmt: skip
    assert redact_env(env) == {"CALICO_BGP_PASSWORD": REDACTED, "ETCD_KEY_FILE": "/etc/k.pem",
                               "FELIX_API_TOKEN": REDACTED, "NODENAME": "n1"}  # fmt: skip
    text = (
        'protocol bgp Mesh_1 {\n  password "s3cr3t";\n}\n'
        'password: hunter2\n  token: "abc",\nexport ETCD_SECRET_KEY=xyz\nNODENAME=n1\n'
    )
    out = redact_text(text)
    for secret in ("s3cr3t", "hunter2", "abc", "xyz"):
        assert secret not in out
    assert f'password "{REDACTED}";' in out and "NODENAME=n1" in out


def _fake_runner() -> FakeProcessRunner:
    def answer(argv: tuple[str, ...], _input: str | None) -> Completed | None:
        if argv[:3] == ("nft", "list", "ruleset"):
            return Completed(argv, 0, "table inet calico {\n}\n", "")
        return None

    return FakeProcessRunner(handlers=[answer], fail_when={"conntrack": (127, "not found")})


def test_bundle_collects_redacts_and_records_failures(tmp_path: Path) -> None:
    state, logs = tmp_path / "state", tmp_path / "logs"
    state.mkdir()
    (logs / "felix").mkdir(parents=True)
    (state / "bird.cfg").write_text('protocol bgp Node_x { password "pw1"; }\n')
    (state / "status.json").write_text('{"felix_in_sync": true}')
    (logs / "felix" / "current").write_bytes(b"x" * 10 + b"last line\n")
    env_file = tmp_path / "calico-node.env"
    env_file.write_text("NODENAME=n1\nCALICO_BGP_PASSWORD=pw2\n")
    opts = DiagsOptions(state_dir=str(state), log_dir=str(logs), config_files=(str(env_file),),
                        env={"NODENAME": "n1", "ETCD_PASSWORD": "pw3"})  # fmt: skip
    files = collect(_fake_runner(), opts)
    assert files["host/nft-ruleset.txt"] == b"table inet calico {\n}\n"
    assert files["logs/felix/current"].endswith(b"last line\n")
    assert b'"felix_in_sync": true' in files["node/status.json"]
    assert "host/conntrack-stats.txt" not in files
    assert b"conntrack" in files["errors.txt"] and b"exit 127" in files["errors.txt"]
    blob = b"".join(files.values())
    for secret in (b"pw1", b"pw2", b"pw3"):
        assert secret not in blob

    out = write_bundle(files, str(tmp_path / "d.tar.gz"))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "calico-diags/host/nft-ruleset.txt" in names and "calico-diags/errors.txt" in names
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".calico-diags")] == []


def test_bundle_destination_errors(tmp_path: Path) -> None:
    with pytest.raises(DiagsError, match="does not exist"):
        write_bundle({"a": b"1"}, str(tmp_path / "missing" / "d.tgz"))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(DiagsError, match="cannot write"):
            write_bundle({"a": b"1"}, str(ro / "d.tgz"))
