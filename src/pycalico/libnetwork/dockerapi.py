"""A minimal client of the local dockerd's API (HTTP on its unix socket), for one question:
which container uses endpoint E of network N, and what are its name and labels.

Used by the network driver's label thread (Calico's ``CALICO_LIBNETWORK_LABEL_ENDPOINTS``).
``DOCKER_HOST`` form ``unix:///path/docker.sock``; API version 1.25 (as Calico asks).
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from pycalico.libnetwork.driver import ContainerInfo

API = "/v1.25"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def socket_path(docker_host: str) -> str:
    if docker_host.startswith("unix://"):
        return docker_host.removeprefix("unix://")
    raise ValueError(f"DOCKER_HOST {docker_host!r}: only unix:// sockets are supported")


class DockerApi:
    def __init__(self, path: str, timeout: float = 2.0) -> None:
        self.path = path
        self.timeout = timeout

    def get(self, url: str) -> Any:
        c = _UnixConnection(self.path, self.timeout)
        try:
            c.request("GET", API + url)
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
        if r.status == 404:
            return None
        if r.status != 200:
            raise OSError(f"docker GET {url}: HTTP {r.status}: {body[:200]!r}")
        return json.loads(body)

    def lookup(self, network_id: str, endpoint_id: str) -> ContainerInfo | None:
        net = self.get(f"/networks/{network_id}")
        if not isinstance(net, dict):
            return None
        cid = next(
            (
                k
                for k, v in (net.get("Containers") or {}).items()
                if isinstance(v, dict)
                and v.get("EndpointID") == endpoint_id
                and not k.startswith("ep-")
            ),
            None,
        )
        if cid is None:
            return None
        c = self.get(f"/containers/{cid}/json")
        if not isinstance(c, dict):
            return None
        labels = (c.get("Config") or {}).get("Labels") or {}
        name = str(c.get("Name") or "").lstrip("/")
        return ContainerInfo(name=name, labels={str(k): str(v) for k, v in labels.items()})
