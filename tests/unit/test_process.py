"""The process seam (pycalico.system.process): run, run_attached and spawn of the real
runner, the controllable fake, and the users converted to it (BirdManager supervision,
the CNI delegate, calico-lab's probes, daemons and pass-through commands)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.system.process import (
    DEVNULL,
    STDOUT,
    Completed,
    FakeProcessRunner,
    ProcessLauncher,
    SubprocessRunner,
    WaitTimeout,
)

# Both runners implement the whole launcher protocol (checked by mypy when tests are typed).
_REAL: ProcessLauncher = SubprocessRunner()
_FAKE: ProcessLauncher = FakeProcessRunner()


def test_spawn_wait_timeout_terminate_and_redirects(tmp_path: Path) -> None:
    r = SubprocessRunner()
    log = tmp_path / "out.log"
    with open(log, "ab") as f:
        p = r.spawn(["sh", "-c", "echo out; echo err >&2; exec sleep 30"], stdin=DEVNULL,
                    stdout=f, stderr=STDOUT, new_session=True)  # fmt: skip
    assert p.pid > 0 and p.poll() is None and p.returncode is None
    with pytest.raises(WaitTimeout, match=r"still running after 0\.05s"):
        p.wait(timeout=0.05)
    p.terminate()
    assert p.wait(timeout=10) == -signal.SIGTERM == p.returncode
    assert log.read_text() == "out\nerr\n"
    q = r.spawn(["sh", "-c", "exit 7"], env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path))
    assert q.wait(timeout=10) == 7 and q.argv == ("sh", "-c", "exit 7")
    with pytest.raises(OSError):
        r.spawn(["/nonexistent/binary"])


def test_run_attached_does_not_capture(capfd: pytest.CaptureFixture[str]) -> None:
    r = SubprocessRunner()
    done = r.run_attached(["sh", "-c", "cat; echo err >&2; exit 3"], input="hi\n")
    assert (done.returncode, done.stdout, done.stderr) == (3, "", "")
    out, err = capfd.readouterr()
    assert (out, err) == ("hi\n", "err\n")
    missing = r.run_attached(["/nonexistent/binary"])
    assert missing.returncode == 127 and "No such file" in missing.stderr
    assert r.run_attached(["sleep", "5"], timeout=0.1).returncode == 124


def test_fake_runner_spawn_and_attached() -> None:
    fake = FakeProcessRunner(
        fail_when={"boom": (2, "exploded")}, spawn_fail_when={"nope": "ENOENT"}
    )
    p = fake.spawn(["daemon", "-f"], env={"A": "1"}, stdin=DEVNULL, new_session=True)
    assert fake.spawned == [p] and p.env == {"A": "1"} and p.new_session and p.stdin == DEVNULL
    assert p.poll() is None
    with pytest.raises(WaitTimeout):
        p.wait(timeout=0.01)
    p.send_signal(signal.SIGHUP)  # not an exit signal: keeps running
    assert p.poll() is None
    p.terminate()
    assert p.wait() == -signal.SIGTERM and p.signals == [signal.SIGHUP, signal.SIGTERM]
    p.kill()  # already gone: ignored
    assert p.signals == [signal.SIGHUP, signal.SIGTERM]
    q = fake.spawn(["other"])
    q.exit(4)
    assert q.wait(timeout=1) == 4
    with pytest.raises(OSError, match="ENOENT"):
        fake.spawn(["nope"])
    assert fake.run_attached(["x", "boom"]) == Completed(("x", "boom"), 2, "", "exploded")
    assert fake.attached == [("x", "boom")] and fake.calls[-1][0] == ("x", "boom")


def test_bird_manager_checks_spawns_supervises_and_stops(tmp_path: Path) -> None:
    from pycalico.bgp import BirdConfigInvalid, BirdManager
    from tests.unit.test_bgp_control import FakeBird

    ctl = str(tmp_path / "bird.ctl")
    bird = FakeBird(ctl, {"show status": ["0013 Daemon is up"]})
    fake = FakeProcessRunner()

    # `bird -p -c FILE` is answered from FILE's content (the temp file being checked).
    def check_file(argv: tuple[str, ...], _inp: str | None) -> Completed | None:
        if argv[:2] == ("bird", "-p") and "bogus" in Path(argv[3]).read_text():
            return Completed(argv, 1, "", "syntax error, unexpected bogus")
        return None

    fake.handlers.append(check_file)
    m = BirdManager(str(tmp_path / "bird.cfg"), ctl, command_prefix=["ip", "netns", "exec", "n"],
                    restart_delay=0.01, runner=fake)  # fmt: skip
    try:
        assert m.write_config("router id 1.2.3.4;\n") is True
        assert fake.calls[0][0][:3] == ("bird", "-p", "-c")
        with pytest.raises(BirdConfigInvalid, match="unexpected bogus"):
            m.write_config("protocol bogus {}\n")
        m.start(wait=5)
        (first,) = fake.spawned
        assert first.argv == ("ip", "netns", "exec", "n", "bird", "-f", "-R", "-c", m.config_path,
                              "-s", ctl, "-P", m.pid_path)  # fmt: skip
        assert first.stdout == DEVNULL and first.stderr == STDOUT
        assert m.pid == first.pid and m.running
        first.exit(1)  # BIRD died: the supervisor starts a new one
        deadline = time.monotonic() + 5
        while len(fake.spawned) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fake.spawned) == 2 and m.restarts == 1
        m.stop(timeout=1)
        assert fake.spawned[1].signals == [signal.SIGTERM] and not m.running
    finally:
        m.stop(timeout=1)
        bird.close()


def test_bird_manager_start_during_respawn_back_off_never_starts_a_second_bird(
    tmp_path: Path,
) -> None:
    """BIRD died; the agent's worker calls start() before the supervisor's back-off ends:
    exactly one new BIRD (two would race for the socket: "I found another BIRD running")."""
    from pycalico.bgp import BirdManager
    from tests.unit.test_bgp_control import FakeBird

    ctl = str(tmp_path / "bird.ctl")
    bird = FakeBird(ctl, {"show status": ["0013 Daemon is up"]})
    fake = FakeProcessRunner()
    m = BirdManager(str(tmp_path / "bird.cfg"), ctl, restart_delay=0.3, runner=fake)
    try:
        m.write_config("router id 1.2.3.4;\n")
        m.start(wait=5)
        (first,) = fake.spawned
        first.exit(1)
        m.start(wait=5)  # while the supervisor waits out its back-off
        deadline = time.monotonic() + 5
        while len(fake.spawned) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.4)
        assert len(fake.spawned) == 2 and m.restarts == 1 and m.running
        assert all("-R" in p.argv for p in fake.spawned)  # graceful restart recovery
        m.stop(timeout=1)
        assert fake.spawned[1].signals == [signal.SIGTERM] and not m.running
        m.start(wait=5)  # a stopped manager starts again: a new BIRD and supervisor
        assert len(fake.spawned) == 3 and m.running
    finally:
        m.stop(timeout=1)
        bird.close()


def test_bird_manager_kills_a_bird_that_ignores_term(tmp_path: Path) -> None:
    from pycalico.bgp import BirdManager
    from tests.unit.test_bgp_control import FakeBird

    ctl = str(tmp_path / "bird.ctl")
    bird = FakeBird(ctl, {"show status": ["0013 Daemon is up"]})
    fake = FakeProcessRunner()
    m = BirdManager(str(tmp_path / "bird.cfg"), ctl, runner=fake)
    try:
        m.write_config("router id 1.2.3.4;\n")
        m.start(wait=5)
        (p,) = fake.spawned
        p.exit_on = frozenset({signal.SIGKILL})
        m.stop(timeout=0.05)
        assert p.signals == [signal.SIGTERM, signal.SIGKILL] and p.returncode == -signal.SIGKILL
    finally:
        bird.close()


def test_cni_delegate_runs_through_the_runner(tmp_path: Path) -> None:
    from pycalico.cni.delegate import exec_plugin
    from pycalico.cni.errors import CniError

    plugin = tmp_path / "calico-ipam"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    seen: list[str | None] = []

    def answer(argv: tuple[str, ...], inp: str | None) -> Completed:
        seen.append(inp)
        return Completed(argv, 0, json.dumps({"ips": [{"address": "10.0.0.1/32"}]}), "")

    fake = FakeProcessRunner(handlers=[answer])
    env = {"CNI_PATH": str(tmp_path), "CNI_COMMAND": "ADD"}
    doc = exec_plugin("calico-ipam", "DEL", b'{"a": 1}', env, runner=fake)
    assert doc == {"ips": [{"address": "10.0.0.1/32"}]}
    (argv, _inp, call_env) = fake.calls[0]
    assert argv == (str(plugin),) and seen == ['{"a": 1}']
    assert call_env is not None and call_env["CNI_COMMAND"] == "DEL"
    failing = FakeProcessRunner(fail_when={"calico-ipam": (124, "timed out after 120s")})
    with pytest.raises(CniError, match="exit 124") as ei:
        exec_plugin("calico-ipam", "ADD", b"{}", env, runner=failing)
    assert ei.value.details == "timed out after 120s"


def test_lab_probe_daemons_and_passthrough_use_the_lab_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycalico.lab import main as labmain
    from pycalico.lab import netns as labnetns
    from pycalico.lab.probe import probe
    from pycalico.lab.state import LabState, NodeState, PodState

    monkeypatch.setenv("CALICO_LAB_DIR", str(tmp_path))
    fake = FakeProcessRunner(fail_when={"10.0.0.9": (1, "")})
    old = labnetns.set_runner(fake)
    try:
        pod = PodState(namespace="ns", name="a", node="node1", netns="t-pa", container_id="c")
        assert probe(pod, "10.0.0.2", 80, "TCP") is True
        assert fake.calls[-1][0][:5] == ("ip", "netns", "exec", "t-pa", fake.calls[-1][0][4])
        assert probe(pod, "10.0.0.9", 80, "TCP") is False

        p = labnetns.spawn_daemon(["ip", "netns", "exec", "x", "d"], tmp_path / "d.log", env={})
        assert fake.spawned == [p] and p.new_session and p.stdin == DEVNULL
        assert (tmp_path / "d.log").exists()

        st = LabState(name="t", prefix="t-", directory=str(tmp_path / "t"))
        st.nodes = [NodeState(name="node1", netns="t-node1", ip="198.18.0.1/24", subnet=0)]
        st.save()
        res = CliRunner().invoke(labmain.cli, ["exec", "--name", "t", "node1", "--", "ip", "r"])
        assert res.exit_code == 0, res.output
        assert fake.attached[-1] == ("ip", "netns", "exec", "t-node1", "ip", "r")
        fake.fail_when["false"] = (3, "")
        res = CliRunner().invoke(labmain.cli, ["exec", "--name", "t", "node1", "false"])
        assert res.exit_code == 3
    finally:
        labnetns.set_runner(old)
