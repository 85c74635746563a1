"""The lab's persistent state: one JSON file in the lab directory.

Owns the record of everything a lab created (namespaces, processes by PID, pods), so that
``down`` — or a later command in another process — can find and remove exactly that.
Invariants: every namespace name starts with the lab's prefix; the file is rewritten
atomically (temp file + rename) after every change; the lab directory is created 0700.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_NAME = "lab"
BASE_DIR_ENV = "CALICO_LAB_DIR"
DEFAULT_BASE_DIR = "/var/lib/calico-lab"


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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class LabState:
    name: str
    prefix: str
    directory: str
    encap: str = "none"
    subnets: int = 1
    pool: str = "10.244.0.0/16"
    datastore: str = "sqlite"
    etcd_pid: int = 0
    etcd_url: str = ""
    tor: bool = False
    tor_pids: list[int] = field(default_factory=list)
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

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(self.path / "state.json")

    @classmethod
    def load(cls, name: str) -> LabState:
        data: dict[str, Any] = json.loads((lab_dir(name) / "state.json").read_text())
        data["nodes"] = [NodeState(**n) for n in data.get("nodes", [])]
        data["pods"] = [PodState(**p) for p in data.get("pods", [])]
        return cls(**data)

    @classmethod
    def exists(cls, name: str) -> bool:
        return (lab_dir(name) / "state.json").is_file()
