"""Thin helpers to run ``ip`` and other commands in the lab's network namespaces.

Owns nothing but process invocation; all failures raise :class:`LabError` with the command's
stderr, so the CLI can print one clear line. Every lab module starts programs through the
one :class:`~pycalico.system.process.ProcessLauncher` returned by :func:`runner` (the real
one unless a test installed a fake with :func:`set_runner`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pycalico.errors import CalicoError
from pycalico.system.process import (
    DEVNULL,
    Completed,
    Process,
    ProcessLauncher,
    SubprocessRunner,
)


class LabError(CalicoError):
    """A lab operation failed."""


_runner: ProcessLauncher = SubprocessRunner()


def runner() -> ProcessLauncher:
    """The process seam every lab module uses."""
    return _runner


def set_runner(new: ProcessLauncher) -> ProcessLauncher:
    """Install ``new`` as the lab's process seam (tests); returns the previous one."""
    global _runner
    old, _runner = _runner, new
    return old


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 60,
    check: bool = True,
) -> Completed:
    p = _runner.run(argv, input=input, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(p.stderr or p.stdout).strip()}")
    return p


def spawn_daemon(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Process:
    """Start a lab daemon (calico-node, etcd, an echo server) in its own session, stdin from
    /dev/null, stdout and stderr appended to ``log``. It outlives this process; the caller
    records its PID."""
    with open(log, "ab") as f:
        return _runner.spawn(argv, env=env, stdin=DEVNULL, stdout=f, stderr=f, new_session=True)


def ip_batch(lines: Sequence[str], netns: str | None = None) -> None:
    """Run ``ip -batch -`` (optionally in ``netns``)."""
    argv = ["ip", "-n", netns, "-batch", "-"] if netns else ["ip", "-batch", "-"]
    run(argv, input="\n".join(lines) + "\n")


def in_ns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def sysctl(netns: str, *settings: str) -> None:
    run(in_ns(netns, ["sysctl", "-qw", *settings]))


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_netns(name: str) -> None:
    # Kill whatever still runs in it (only our lab's namespaces are ever passed here).
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        kill_pid(int(pid))
    run(["ip", "netns", "del", name], check=False)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """TERM, then KILL after ``timeout``; a missing process is fine."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_pids(pids: Sequence[int], timeout: float = 5.0) -> None:
    """:func:`kill_pid` of many processes at once: TERM to all, one shared wait, then KILL
    whatever is left."""
    live = [p for p in pids if pid_alive(p)]
    for pid in live:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = [p for p in live if pid_alive(p)]
        if not live:
            return
        time.sleep(0.05)
    for pid in live:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_CLONE_NEWNET = 0x40000000


class enter_netns:
    """Switch the *calling thread* into network namespace ``name`` for the ``with`` block.

    Sockets created inside stay in that namespace. Used to reach services (etcd) that listen
    only on the lab's underlay. ``None`` = stay where we are.
    """

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._orig: int | None = None

    def __enter__(self) -> None:
        if not self.name:
            return
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self._orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise LabError(f"setns({self.name}): errno {ctypes.get_errno()}")
        finally:
            os.close(fd)

    def __exit__(self, *exc: object) -> None:
        if self._orig is None:
            return
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        try:
            libc.setns(self._orig, _CLONE_NEWNET)
        finally:
            os.close(self._orig)
            self._orig = None
