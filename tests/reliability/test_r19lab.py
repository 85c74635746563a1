"""Issue 19, calico-lab slice: the lab is safe under concurrency and its nodes serve health
and metrics as a real node does.

- Lab state (no root): many processes updating the state at once lose no update and leave
  no temporary file behind.
- A 2-node lab (real kernel): 8 parallel ``calico-lab pod add`` all land in ``status`` with
  8 distinct, reachable IPs; 8 parallel ``pod del`` leave no pod, no IPAM allocation, no
  WorkloadEndpoint, no namespace, no link. Before the fix the adds all returned 0 but
  ``status`` listed 2 of them and the rest kept their IPs forever.
- ``:9099/readiness`` and ``:9091/metrics`` answer 200 inside a lab node's namespace.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pycalico.lab.state import LabState, NodeState, PodState
from tests.e2e.conftest import Lab, wait_for

PARALLEL = 8


# --- lab state under concurrent writers (no root needed) ---------------------------------


def _add_pods(base: str, worker: int, count: int) -> None:
    os.environ["CALICO_LAB_DIR"] = base
    for i in range(count):
        st = LabState.load("t")
        pod = PodState(
            namespace="ns", name=f"w{worker}-{i}", node="node1", netns=f"x{worker}-{i}",
            container_id=f"{worker}-{i}",
        )  # fmt: skip
        st.update(lambda s, pod=pod: s.pods.append(pod))  # type: ignore[misc]


def test_parallel_state_updates_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALICO_LAB_DIR", str(tmp_path))
    LabState(name="t", prefix="clt-", directory=str(tmp_path / "t")).save()
    workers, each = 8, 15
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_pods, args=(str(tmp_path), w, each)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    pods = LabState.load("t").pods
    assert len(pods) == workers * each
    assert len({p.key for p in pods}) == workers * each
    assert not [f.name for f in (tmp_path / "t").iterdir() if f.name.endswith(".tmp")]


@pytest.fixture
def fake_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LabState]:
    """A lab state with one node and a fake process runner (no kernel, no datastore)."""
    from pycalico.lab import netns as labnetns
    from pycalico.lab import pods
    from pycalico.system.process import FakeProcessRunner

    monkeypatch.setenv("CALICO_LAB_DIR", str(tmp_path))
    monkeypatch.setattr(pods, "_ensure_namespace_resources", lambda *a: None)
    st = LabState(name="t", prefix="clt-", directory=str(tmp_path / "t"))
    st.nodes = [NodeState(name="node1", netns="clt-node1", ip="198.18.0.1/24", subnet=0)]
    st.save()
    old = labnetns.set_runner(FakeProcessRunner(fail_when={"calico-ipam": (1, "boom")}))
    try:
        yield st
    finally:
        labnetns.set_runner(old)


def test_failed_add_leaves_no_record(fake_lab: LabState) -> None:
    from pycalico.lab import pods
    from pycalico.lab.netns import LabError

    with pytest.raises(LabError, match="CNI ADD for ns/a failed"):
        pods.add_pod(LabState.load("t"), "node1", "ns/a", {}, "", [])
    assert LabState.load("t").pods == []


def test_del_refuses_a_pod_busy_in_a_live_process_and_cleans_a_dead_ones(
    fake_lab: LabState,
) -> None:
    from pycalico.lab import pods
    from pycalico.lab.netns import LabError

    dead = subprocess.Popen(["true"])
    dead.wait()
    fake_lab.update(lambda s: s.pods.extend([
        PodState(namespace="ns", name="live", node="node1", netns="clt-pa", container_id="a",
                 busy=1),
        PodState(namespace="ns", name="dead", node="node1", netns="clt-pb", container_id="b",
                 busy=dead.pid),
    ]))  # fmt: skip
    with pytest.raises(LabError, match="being added or deleted by pid 1"):
        pods.delete_pod(LabState.load("t"), "ns/live")
    pods.delete_pod(LabState.load("t"), "ns/dead")  # its CNI DEL fails: no namespace
    assert [p.key for p in LabState.load("t").pods] == ["ns/live"]


# --- a real 2-node lab --------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lb = Lab(f"r{os.getpid() % 100000}l", tmp_path_factory.mktemp("labs"))
    try:
        lb.up("--nodes", "2", timeout=90)
        yield lb
    finally:
        lb.down()


def _ipam(lab: Lab) -> tuple[int, int, int]:
    """(allocations, problems, WorkloadEndpoints) in the lab's datastore."""
    from pycalico.config import load_config
    from pycalico.datastore import open_datastore
    from pycalico.ipam.gc import check

    db = str(lab.dir / lab.name / "calico.db")
    env = {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": db}
    ds = open_datastore(load_config(env=env))
    try:
        report = check(ds)
        weps = len(ds.list("WorkloadEndpoint").items)
    finally:
        ds.close()
    return report.allocations, report.problems, weps


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _fetch(lab: Lab, node: str, url: str) -> tuple[int, str]:
    code = (
        "import sys, urllib.request\n"
        "r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
        "print(r.status); print(r.read().decode()[:4000])\n"
    )
    p = lab.exec(node, sys.executable, "-c", code, url, check=False)
    if p.returncode != 0:
        return 0, (p.stderr.strip().splitlines() or [""])[-1]
    status, _, body = p.stdout.partition("\n")
    return int(status), body


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.slow
def test_lab_node_serves_health_and_metrics(lab: Lab) -> None:
    for node in ("node1", "node2"):
        got = _health_and_metrics(lab, node)
        assert got["ready"][0] == 200 and got["metrics"][0] == 200, f"{node}: {got}"
        assert "felix" in got["metrics"][1] or "calico" in got["metrics"][1], got["metrics"]
        live = _fetch(lab, node, "http://localhost:9099/liveness")
        assert live[0] == 200, live


def _health_and_metrics(lab: Lab, node: str) -> dict[str, tuple[int, str]]:
    got: dict[str, tuple[int, str]] = {}

    def ok() -> bool:
        got["ready"] = _fetch(lab, node, "http://localhost:9099/readiness")
        got["metrics"] = _fetch(lab, node, "http://localhost:9091/metrics")
        return got["ready"][0] == 200 and got["metrics"][0] == 200

    wait_for(ok, 20, 0.5)
    return got


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.slow
def test_parallel_pod_add_and_del_keep_every_record(lab: Lab) -> None:
    base_ns = set(lab.state()["namespaces"])
    keys = [f"par/p{i}" for i in range(PARALLEL)]

    def add(i: int) -> subprocess.CompletedProcess[str]:
        return lab.run("pod", "add", f"node{i % 2 + 1}", keys[i], "--ports", "80/TCP",
                       check=False)  # fmt: skip

    t0 = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(add, range(PARALLEL)))
    add_s = time.monotonic() - t0
    bad = [(r.args, r.returncode, r.stderr) for r in results if r.returncode != 0]
    assert not bad, bad

    pods = {p["name"]: p["ip"] for p in lab.status()["pods"]}
    assert sorted(pods) == sorted(keys), f"status lists {sorted(pods)} after {PARALLEL} adds"
    assert len(set(pods.values())) == PARALLEL and all(pods.values()), pods
    allocations, problems, weps = _ipam(lab)
    assert (allocations, problems, weps) == (PARALLEL, 0, PARALLEL)

    want = {(a, b, 80, "TCP"): "allow" for a in keys for b in keys if a != b}
    m = lab.matrix_settled(lambda m: m == want, timeout=30)
    assert m == want, {k: v for k, v in m.items() if v != "allow"}

    def delete(key: str) -> subprocess.CompletedProcess[str]:
        return lab.run("pod", "del", key, check=False)

    t0 = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(delete, keys))
    del_s = time.monotonic() - t0
    bad = [(r.args, r.returncode, r.stderr) for r in results if r.returncode != 0]
    assert not bad, bad

    assert lab.status()["pods"] == []
    assert _ipam(lab) == (0, 0, 0)
    prefix = f"cl{lab.name[:8]}-"
    assert {n for n in _netns() if n.startswith(prefix)} == base_ns
    for node in ("node1", "node2"):
        links = subprocess.run(
            ["ip", "-n", f"{prefix}{node}", "-o", "link", "show"], capture_output=True, text=True
        ).stdout
        assert "cali" not in links, links
    leftovers = [f.name for f in (lab.dir / lab.name).iterdir() if f.name.endswith(".tmp")]
    assert not leftovers
    print(f"{PARALLEL} parallel adds {add_s:.1f}s, {PARALLEL} parallel dels {del_s:.1f}s")
    assert json.loads(json.dumps(lab.state()["pods"])) == []


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.slow
def test_parallel_adds_of_one_pod_make_exactly_one(lab: Lab) -> None:
    key = "dup/one"

    def add(i: int) -> subprocess.CompletedProcess[str]:
        return lab.run("pod", "add", f"node{i % 2 + 1}", key, "--ports", "80/TCP", check=False)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(add, range(4)))
    ok = [r for r in results if r.returncode == 0]
    assert len(ok) == 1, [(r.returncode, r.stderr) for r in results]
    assert all("already exists" in r.stderr for r in results if r.returncode != 0), [
        r.stderr for r in results
    ]
    assert [p["name"] for p in lab.status()["pods"]] == [key]
    assert _ipam(lab) == (1, 0, 1)
    lab.run("pod", "del", key)
    assert lab.status()["pods"] == [] and _ipam(lab) == (0, 0, 0)
