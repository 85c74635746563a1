"""Live reachability probes between lab pods (TCP connect / UDP request-reply).

A probe runs a short Python client inside the source pod's namespace; verdict ``allow`` when
the echo server answered within the timeout, else ``deny``. ``matrix`` probes every ordered
pair of settled pods (excluding a pod to itself and pods still being added or deleted) for
each port, in parallel.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pycalico.lab.netns import in_ns, runner
from pycalico.lab.state import LabState, PodState

_CLIENT = r"""
import socket, sys
ip, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3].upper(), float(sys.argv[4])
try:
    if proto == "UDP":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout)
        s.sendto(b"probe", (ip, port)); s.recvfrom(2048)
    else:
        s = socket.create_connection((ip, port), timeout=timeout); s.settimeout(timeout); s.recv(64)
except OSError:
    sys.exit(1)
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


def matrix(
    state: LabState, ports: list[tuple[int, str]], timeout: float = 1.0, workers: int = 16
) -> list[Probe]:
    jobs = [
        (a, b, port, proto)
        for a in state.settled_pods
        for b in state.settled_pods
        if a.key != b.key and b.ips
        for port, proto in ports
    ]

    def one(job: tuple[PodState, PodState, int, str]) -> Probe:
        a, b, port, proto = job
        ok = probe(a, b.ips[0].split("/")[0], port, proto, timeout)
        return Probe(a.key, b.key, port, proto, "allow" if ok else "deny")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))
