"""The OS seams in pycalico.system: process runner, sysctl, iproute2 driver, netns paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.system.iproute import IpError, IpRoute
from pycalico.system.netns import ip_prefix, netns_name
from pycalico.system.process import (
    CommandFailed,
    Completed,
    FakeProcessRunner,
    SubprocessRunner,
    check,
)
from pycalico.system.sysctl import FakeSysctl, ProcSysctl, SysctlError


def test_subprocess_runner() -> None:
    r = SubprocessRunner()
    ok = r.run(["sh", "-c", "cat; echo err >&2; exit 3"], input="hi")
    assert (ok.returncode, ok.stdout, ok.stderr) == (3, "hi", "err\n")
    with pytest.raises(CommandFailed, match="exit 3: err"):
        check(ok)
    assert r.run(["/nonexistent/binary"]).returncode == 127
    assert r.run(["sleep", "5"], timeout=0.1).returncode == 124


def test_iproute_batch_query_and_errors() -> None:
    runner = FakeProcessRunner(
        handlers=[lambda argv, inp: Completed(argv, 0, '[{"a":1}]\n[]\n') if "-j" in argv else None]
    )
    ip = IpRoute(runner)
    assert ip.query(["link show", "route show"], "/run/netns/x") == [[{"a": 1}], []]
    assert runner.calls[-1][0] == ("ip", "-n", "x", "-j", "-batch", "-")
    ip.batch([])
    assert len(runner.calls) == 1  # an empty batch runs nothing
    failing = IpRoute(
        FakeProcessRunner(fail_when={"link add": (1, "RTNETLINK answers: File exists")})
    )
    with pytest.raises(IpError, match="File exists"):
        failing.batch(["link add x type veth peer name y"])


def test_netns_paths() -> None:
    assert netns_name("/run/netns/a") == "a"
    assert netns_name("/var/run/netns/b") == "b"
    assert netns_name("/proc/1/ns/net") is None
    assert ip_prefix(None) == ["ip"]
    assert ip_prefix("/run/netns/a") == ["ip", "-n", "a"]
    assert ip_prefix("/tmp/ns") == ["nsenter", "--net=/tmp/ns", "ip"]


def test_sysctls(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    (root / "net" / "ipv4" / "conf" / "cali1").mkdir(parents=True)
    (root / "net" / "ipv4" / "conf" / "cali1" / "proxy_arp").write_text("0\n")
    s = ProcSysctl(str(root))
    s.write("net.ipv4.conf.cali1.proxy_arp", 1)
    assert s.read("net.ipv4.conf.cali1.proxy_arp") == "1"
    assert s.exists("net.ipv4.conf.cali1") and not s.exists("net.ipv4.conf.cali2")
    with pytest.raises(SysctlError, match="cali2"):
        s.write("net.ipv4.conf.cali2.proxy_arp", 1)
    f = FakeSysctl(missing={"net.ipv4.conf.gone."})
    f.write("a.b", 2)
    assert f.read("a.b") == "2"
    with pytest.raises(SysctlError):
        f.write("net.ipv4.conf.gone.proxy_arp", 1)
