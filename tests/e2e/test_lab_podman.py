"""calico-lab e2e with rootful podman (``up --runtime podman``, 2 nodes): containers on two
nodes reach each other through the CNI plugins; removing them leaves no endpoints or IPs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Lab, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("podman") and shutil.which("runc") and os.path.exists("/bin/busybox")),
        reason="needs podman, runc and busybox-static",
    ),
]


def test_podman_containers_across_nodes(lab_factory: Callable[[], Lab]) -> None:
    lab = lab_factory()
    lab.up("--nodes", "2", "--runtime", "podman", timeout=90)
    ip = lab.container("node1", "default/web", "nc", "-ll", "-p", "8080", "-e", "hostname")
    assert ip.startswith("10.244.")
    lab.container("node2", "default/cli", "sleep", "3600")

    def connect() -> bool:
        p = lab.docker("node2", "exec", "cli", "sh", "-c", f"nc -w 2 {ip} 8080 </dev/null",
                       check=False, timeout=30)  # fmt: skip
        return p.stdout.strip() == "web"

    assert wait_for(connect, 20, 0.3), "cli on node2 cannot reach web on node1"
    weps = lab.calicoctl("get", "workloadendpoints", "-A").stdout
    assert "node1" in weps and "node2" in weps
    lab.docker("node1", "rm", "-f", "-t", "0", "web")
    lab.docker("node2", "rm", "-f", "-t", "0", "cli")
    assert "default" not in lab.calicoctl("get", "workloadendpoints", "-A").stdout
    check = lab.calicoctl("ipam", "check").stdout
    assert "found 0 problems" in check and "with 0 allocations" in check, check
