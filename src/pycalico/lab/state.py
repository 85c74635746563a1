"""The lab's persistent state: one JSON file in the lab directory.

Owns the record of everything a lab created (namespaces, processes by PID, pods), so that
``down`` — or a later command in another process — can find and remove exactly that.

Several ``calico-lab`` processes may run at once (parallel ``pod add``/``pod del``, a ``node
restart`` during either), so:
- every read-modify-write goes through :meth:`LabState.update`: under an exclusive
  ``flock`` on ``<lab dir>/state.lock`` it re-reads the file, applies the change to that
  fresh copy, writes it, then applies the same change to the caller's in-memory copy; a
  change computed from a stale copy never overwrites another process's record;
- the file is replaced atomically: written to a uniquely named temporary file in the same
  directory, fsynced, then ``os.replace``d (a reader sees the old or the new file, never a
  partial one; two writers never share a temporary name);
- :meth:`LabState.locked` is re-entrant within a process, so a caller may hold the lock
  around a check-then-act (``node start``) and still call :meth:`update` inside it.
Invariants: every namespace name starts with the lab's prefix; a pod whose ``busy`` is a
live PID is being added or deleted by that process and nobody else touches it; the lab
directory is created 0700.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_NAME = "lab"
BASE_DIR_ENV = "CALICO_LAB_DIR"
DEFAULT_BASE_DIR = "/var/lib/calico-lab"
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"

# Re-entrancy of the lab lock within this process: directory -> (lock fd, depth).
_held: dict[str, tuple[int, int]] = {}
_held_guard = threading.Lock()


@contextmanager
def lab_lock(directory: Path, create: bool = False) -> Iterator[None]:
    """Exclusive lock on the lab in ``directory`` (flock of its lock file) for the block;
    nested use in the same process just counts. Only ``create`` makes the directory (``up``):
    a command racing ``down`` gets FileNotFoundError instead of resurrecting the lab."""
    key = str(directory)
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
    if held is None:
        if create:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        with _held_guard:
            _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _held_guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def lab_dir(name: str) -> Path:
    return Path(os.environ.get(BASE_DIR_ENV, DEFAULT_BASE_DIR)) / name


def make_lab_dir(name: str) -> Path:
    """Create (owner-only, 0700: it holds the lab's datastore) and return lab ``name``'s
    directory; an existing directory is tightened to 0700 too."""
    d = lab_dir(name)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if d.stat().st_mode & 0o077:
        d.chmod(0o700)
    return d


def prefix_for(name: str) -> str:
    """Namespace-name prefix of lab ``name`` (short: interface names are built from it)."""
    return f"cl{name[:8]}-"


@dataclass
class NodeState:
    name: str
    netns: str
    ip: str  # CIDR form, e.g. 198.18.0.1/24
    subnet: int
    pid: int = 0
    route_reflector: bool = False
    # --runtime docker: the node's dockerd and the holder of its private mount namespace
    engine_pid: int = 0
    mount_holder_pid: int = 0
    ip6: str = ""  # dual-stack labs: CIDR form, e.g. fd00:198:18::1/64


@dataclass
class PodState:
    namespace: str
    name: str
    node: str
    netns: str
    container_id: str
    ips: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    server_pid: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    # PID of the calico-lab process adding or deleting this pod (0: settled)
    busy: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def address(self, version: int = 4) -> str | None:
        """The pod's address of IP ``version`` (no prefix length), None if it has none."""
        for a in self.ips:
            ip = a.split("/")[0]
            if (":" in ip) == (version == 6):
                return ip
        return None


@dataclass
class LabState:
    name: str
    prefix: str
    directory: str
    encap: str = "none"
    subnets: int = 1
    pool: str = "10.244.0.0/16"
    pool6: str = ""  # dual-stack labs only (``up --dual-stack``): the IPv6 pool
    datastore: str = "sqlite"
    etcd_pid: int = 0
    etcd_url: str = ""
    tor: bool = False
    tor_pids: list[int] = field(default_factory=list)
    runtime: str = "netns"  # netns | docker (pycalico.lab.engine)
    # FELIX_*/CALICO_* settings given to ``up``: every calico-node start of this lab gets them
    node_env: dict[str, str] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    nodes: list[NodeState] = field(default_factory=list)
    pods: list[PodState] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def db_path(self) -> str:
        return str(self.path / "calico.db")

    def datastore_env(self) -> dict[str, str]:
        """Environment that points pycalico commands at this lab's datastore."""
        if self.datastore == "etcd":
            return {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": self.etcd_url}
        return {"DATASTORE_TYPE": "sqlite", "CALICO_DATASTORE_PATH": self.db_path}

    @property
    def datastore_netns(self) -> str | None:
        """The namespace to enter to reach the datastore (etcd listens on the underlay)."""
        return self.prefix + "rt" if self.datastore == "etcd" else None

    def node(self, name: str) -> NodeState:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def pod(self, key: str) -> PodState:
        for p in self.pods:
            if p.key == key:
                return p
        raise KeyError(key)

    @property
    def settled_pods(self) -> list[PodState]:
        """Pods that are neither being added nor deleted (what probes and matrices use)."""
        return [p for p in self.pods if not p.busy]

    @contextmanager
    def locked(self, create: bool = False) -> Iterator[None]:
        """Hold the lab lock for the block (re-entrant in this process)."""
        with lab_lock(self.path, create):
            yield

    def save(self) -> None:
        """Write the whole state atomically (unique temporary file + ``os.replace``).
        Callers that change the state use :meth:`update`; this is its last step."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=STATE_FILE + ".", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(asdict(self), indent=1))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path / STATE_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def update(self, change: Callable[[LabState], None], create: bool = False) -> None:
        """Apply ``change`` under the lab lock to the state as it is on disk now, write it,
        then apply it to this copy too. ``change`` raising leaves the file untouched. Only
        with ``create`` (the first write of ``up``) may the state file be missing."""
        with self.locked(create):
            if (self.path / STATE_FILE).is_file():
                fresh = LabState.read(self.path)
                change(fresh)
                fresh.save()
            elif create:
                fresh = self
                change(self)
                self.save()
            else:
                raise FileNotFoundError(f"lab {self.name!r} is gone ({self.path / STATE_FILE})")
        if fresh is not self:
            try:
                change(self)
            except Exception:  # this copy was stale: take the written one
                self.__dict__.update(fresh.__dict__)

    @classmethod
    def read(cls, directory: Path) -> LabState:
        data: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
        data["nodes"] = [NodeState(**n) for n in data.get("nodes", [])]
        data["pods"] = [PodState(**p) for p in data.get("pods", [])]
        return cls(**data)

    @classmethod
    def load(cls, name: str) -> LabState:
        return cls.read(lab_dir(name))

    @classmethod
    def exists(cls, name: str) -> bool:
        return (lab_dir(name) / STATE_FILE).is_file()
