"""Live reachability probes between lab pods (TCP connect / UDP request-reply).

A probe runs a short Python client inside the source pod's namespace; verdict ``allow`` when
the echo server answered within the timeout, else ``deny``. ``matrix`` probes every ordered
pair of settled pods (excluding a pod to itself and pods still being added or deleted) for
each port over one IP family (``version`` 4 or 6: the pods' addresses of that family; a pod
without one is left out): ONE client process per source pod probes all its destinations in
parallel threads (a process per pair cost most of a matrix's time on a loaded machine), the
source pods in parallel too. A client that fails (not a verdict) raises :class:`LabError`.
``format_matrix`` prints the probes as a from x to grid per port.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pycalico.lab.netns import LabError, in_ns, runner
from pycalico.lab.state import LabState, PodState

_CLIENT = r"""
import socket, sys
ip, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3].upper(), float(sys.argv[4])
try:
    if proto == "UDP":
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(timeout)
        s.sendto(b"probe", (ip, port)); s.recvfrom(2048)
    else:
        s = socket.create_connection((ip, port), timeout=timeout); s.settimeout(timeout); s.recv(64)
except OSError:
    sys.exit(1)
"""


# One source pod's probes: stdin = JSON [[ip, port, proto], ...], argv[1] = timeout; prints
# a JSON list of booleans (answered or not), in order.
_BATCH_CLIENT = r"""
import json, socket, sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
jobs, timeout = json.loads(sys.stdin.read()), float(sys.argv[1])
def one(job):
    ip, port, proto = job
    try:
        if proto.upper() == "UDP":
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout); s.sendto(b"probe", (ip, port)); s.recvfrom(2048)
        else:
            with socket.create_connection((ip, port), timeout=timeout) as s:
                s.settimeout(timeout); s.recv(64)
        return True
    except OSError:
        return False
with ThreadPoolExecutor(max(1, min(32, len(jobs)))) as pool:
    print(json.dumps(list(pool.map(one, jobs))))
"""


@dataclass(frozen=True)
class Probe:
    src: str
    dst: str
    port: int
    protocol: str
    verdict: str


def probe(src: PodState, dst_ip: str, port: int, protocol: str, timeout: float = 1.0) -> bool:
    argv = in_ns(src.netns, [sys.executable, "-c", _CLIENT, dst_ip, str(port), protocol,
                             str(timeout)])  # fmt: skip
    return runner().run(argv, timeout=timeout + 5).returncode == 0


def parse_ports(text: str) -> list[tuple[int, str]]:
    out = []
    for item in text.split(","):
        port, _, proto = item.strip().partition("/")
        out.append((int(port), (proto or "TCP").upper()))
    return out


def matrix_pods(state: LabState, version: int = 4) -> list[PodState]:
    """The settled pods with an address of IP ``version`` (the matrix's rows and columns)."""
    return [p for p in state.settled_pods if p.address(version)]


def matrix(
    state: LabState,
    ports: list[tuple[int, str]],
    timeout: float = 1.0,
    workers: int = 16,
    version: int = 4,
) -> list[Probe]:
    pods = matrix_pods(state, version)

    def from_one(a: PodState) -> list[Probe]:
        jobs = [(b, port, proto) for b in pods if b.key != a.key for port, proto in ports]
        if not jobs:
            return []
        spec = json.dumps([[b.address(version), port, proto] for b, port, proto in jobs])
        argv = in_ns(a.netns, [sys.executable, "-c", _BATCH_CLIENT, str(timeout)])
        p = runner().run(argv, input=spec, timeout=timeout * 2 + 30)
        try:
            answers = json.loads(p.stdout)
            if p.returncode != 0 or len(answers) != len(jobs):
                raise ValueError(p.returncode)
        except ValueError:
            raise LabError(
                f"probes from {a.key} failed: {(p.stderr or p.stdout).strip()}"
            ) from None
        return [Probe(a.key, b.key, port, proto, "allow" if ok else "deny")
                for (b, port, proto), ok in zip(jobs, answers, strict=True)]  # fmt: skip

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [probe for batch in pool.map(from_one, pods) for probe in batch]


def format_matrix(names: list[str], probes: Sequence[Probe]) -> str:
    """A from × to grid per port: ``.`` allowed, ``X`` denied, ``-`` self."""
    out = []
    by_port: dict[str, dict[tuple[str, str], str]] = {}
    for p in probes:
        by_port.setdefault(f"{p.port}/{p.protocol}", {})[(p.src, p.dst)] = p.verdict
    width = max((len(n) for n in names), default=4)
    for port, grid in by_port.items():
        out.append(f"{port}  (rows: from, columns: to; . allow, X deny)")
        header = " " * (width + 2) + " ".join(f"{i:>2}" for i in range(1, len(names) + 1))
        out.append(header)
        for i, a in enumerate(names, 1):
            cells = []
            for b in names:
                v = grid.get((a, b))
                cells.append(" -" if a == b else (" ." if v == "allow" else " X"))
            out.append(f"{a:<{width}}  " + " ".join(c for c in cells) + f"   {i}")
    return "\n".join(out)
