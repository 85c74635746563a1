"""Fixtures for the calico-lab end-to-end tier: a lab driven through the ``calico-lab`` CLI.

Every lab gets a unique name (``e<pid><n>``) and a private ``CALICO_LAB_DIR`` under pytest's
tmp dir; ``calico-lab down`` runs in a finalizer even when ``up`` or a test failed.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Non-raising: e2e callers assert on the result with their own detail message.
from tests.kit.waiting import poll as wait_for

CALICO_LAB = str(Path(sys.executable).parent / "calico-lab")
_counter = itertools.count(1)


class Lab:
    def __init__(self, name: str, lab_dir: Path) -> None:
        self.name = name
        self.dir = lab_dir
        self.env = dict(os.environ, CALICO_LAB_DIR=str(lab_dir))

    def run(
        self, *args: str, check: bool = True, timeout: float = 180, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [CALICO_LAB, *args]
        if args and args[0] not in ("calicoctl", "exec", "run", "docker"):
            argv += ["--name", self.name]
        p = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} -> {p.returncode}\n{p.stdout}\n{p.stderr}\n{self.logs()}"
            )
        return p

    def up(self, *args: str, timeout: float = 60) -> None:
        """``calico-lab up``; retried once (with a warning carrying the first failure): this
        machine is shared, and a neighbour test filling the kernel's global ARP table
        (gc_thresh3) can keep BGP sessions from establishing for a while."""
        try:
            self.run("up", *args, "--timeout", str(timeout), timeout=timeout + 60)
        except AssertionError as first:
            arp = Path("/proc/net/stat/arp_cache").read_text().splitlines()[1].split()[0]
            warnings.warn(
                f"calico-lab up failed once (arp entries 0x{arp}); retrying: {first}",
                stacklevel=2,
            )
            self.down()
            self.run("up", *args, "--timeout", str(timeout), timeout=timeout + 60)

    def down(self) -> None:
        self.run("down", check=False, timeout=120)

    def pod(self, node: str, key: str, ports: str = "80/TCP") -> None:
        self.run("pod", "add", node, key, "--ports", ports)

    def docker(self, node: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """The docker client on NODE's dockerd (a ``--runtime docker`` lab)."""
        return self.run("docker", "--name", self.name, node, *args, **kw)

    def container(self, node: str, key: str, *cmd: str, labels: str = "") -> str:
        """``calico-lab run NODE NS/NAME -- CMD`` (busybox image); the container's IP."""
        extra = ["--labels", labels] if labels else []
        out = self.run("run", "--name", self.name, *extra, node, key, "--", *cmd).stdout
        return out.strip().rsplit(" ", 1)[-1]

    def calicoctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("calicoctl", "--name", self.name, *args)

    def exec(self, target: str, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("exec", "--name", self.name, target, *cmd, **kw)

    def matrix(
        self, ports: str = "80/TCP", ip_version: int = 4
    ) -> dict[tuple[str, str, int, str], str]:
        out = self.run("matrix", "--ports", ports, "-o", "json", "--timeout", "1",
                       "--ip-version", str(ip_version)).stdout  # fmt: skip
        return _probes(out)

    def matrix_settled(
        self,
        expected: Callable[[dict[tuple[str, str, int, str], str]], bool],
        timeout: float = 15,
        ports: str = "80/TCP",
        ip_version: int = 4,
    ) -> dict[tuple[str, str, int, str], str]:
        """The live matrix once ``expected`` holds for it (or the last one after ``timeout``).

        Felix programs a new pod's endpoint a moment after the CNI plugin created it (until
        then the dispatch chains drop its traffic, as in Calico), so a fresh matrix may need
        a second look."""
        m: dict[tuple[str, str, int, str], str] = {}

        def ok() -> bool:
            nonlocal m
            m = self.matrix(ports, ip_version)
            return expected(m)

        wait_for(ok, timeout, 1.0)
        return m

    def policy_matrix(
        self, ports: str = "80/TCP", ip_version: int | None = None
    ) -> dict[tuple[str, str, int, str], str]:
        family = ["--ip-version", str(ip_version)] if ip_version else []
        out = self.calicoctl("policy", "matrix", "--ports", ports, "-o", "json", *family).stdout
        return _probes(out)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("status", "-o", "json").stdout)
        return data

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / self.name / "state.json").read_text())
        return data

    def logs(self) -> str:
        out = []
        for log in sorted(self.dir.glob(f"{self.name}/node*/calico-node.log")):
            out.append(f"--- {log.parent.name}\n{log.read_text()[-1500:]}")
        return "\n".join(out)


def _probes(text: str) -> dict[tuple[str, str, int, str], str]:
    data = json.loads(text)
    return {
        (p["from"], p["to"], int(p["port"]), str(p["protocol"]).upper()): p["verdict"]
        for p in data["probes"]
    }


@pytest.fixture(scope="module")
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Lab]]:
    labs: list[Lab] = []
    base = tmp_path_factory.mktemp("labs")

    def make() -> Lab:
        lab = Lab(f"e{os.getpid() % 100000}{next(_counter)}", base)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.down()
