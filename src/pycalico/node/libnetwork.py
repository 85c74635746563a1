"""calico-node component: Docker's ``calico`` network and ``calico-ipam`` IPAM remote drivers.

Serves :mod:`pycalico.libnetwork` on ``<dir>/calico.sock`` and ``<dir>/calico-ipam.sock``, the
directory dockerd searches for plugins. Env (Calico's names where Calico has one):

- ``CALICO_LIBNETWORK_ENABLED`` (default false): serve the drivers;
- ``CALICO_LIBNETWORK_PLUGIN_DIR`` (default ``/run/docker/plugins``);
- ``CALICO_LIBNETWORK_CREATE_PROFILES`` (default true): a profile per network (pool);
- ``CALICO_LIBNETWORK_LABEL_ENDPOINTS`` (default false): copy ``org.projectcalico.label.*``
  container labels (and the container name, for DNS) onto the WEP, asking dockerd at
  ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``);
  ``CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT`` (seconds, default 5);
- ``CALICO_LIBNETWORK_VETH_MTU`` (default: Felix's MTU file, else 1500);
- ``CALICO_LIBNETWORK_SCOPE`` (``local`` default; ``global`` as Calico's plugin, which
  Docker accepts only with a cluster store).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from pycalico.cni.dataplane import LinuxDataplane, read_mtu_file
from pycalico.datastore.base import Datastore
from pycalico.errors import CalicoError
from pycalico.libnetwork.driver import ContainerLookup, IpamDriver, NetworkDriver
from pycalico.libnetwork.server import (
    DEFAULT_PLUGIN_DIR,
    IPAM_SOCKET,
    NETWORK_SOCKET,
    PluginServer,
)
from pycalico.model.booleans import BooleanError, env_flag
from pycalico.system.iproute import IpRoute
from pycalico.system.process import SubprocessRunner
from pycalico.system.sysctl import ProcSysctl

log = logging.getLogger(__name__)


class ConfigError(CalicoError):
    """A CALICO_LIBNETWORK_* setting is invalid."""


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    try:
        return env_flag(env, key, default)
    except BooleanError as e:
        raise ConfigError(str(e)) from None


class LibnetworkComponent:
    name = "libnetwork"

    def __init__(self, plugin_dir: str, network: NetworkDriver, ipam: IpamDriver) -> None:
        self.plugin_dir = plugin_dir
        self.network = network
        self.ipam = ipam
        self._servers: list[PluginServer] = []

    def start(self) -> None:
        self._servers = [
            PluginServer(os.path.join(self.plugin_dir, NETWORK_SOCKET), self.network.handle),
            PluginServer(os.path.join(self.plugin_dir, IPAM_SOCKET), self.ipam.handle),
        ]
        for s, n in zip(self._servers, ("libnetwork", "libnetwork-ipam"), strict=True):
            s.start(n)
        log.info("Docker drivers calico and calico-ipam on %s", self.plugin_dir)

    def stop(self) -> None:
        for s in self._servers:
            s.close()
        self._servers = []

    def alive(self) -> bool:
        return bool(self._servers) and all(s.alive() for s in self._servers)

    def in_sync(self) -> bool:
        return True


def from_env(
    ds: Datastore, node: str, env: Mapping[str, str], mtu_file: str = ""
) -> LibnetworkComponent | None:
    if not _flag(env, "CALICO_LIBNETWORK_ENABLED", False):
        return None
    lookup: ContainerLookup | None = None
    if _flag(env, "CALICO_LIBNETWORK_LABEL_ENDPOINTS", False):
        from pycalico.libnetwork.dockerapi import DockerApi, socket_path

        try:
            path = socket_path(env.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        lookup = DockerApi(path).lookup
    raw_mtu = env.get("CALICO_LIBNETWORK_VETH_MTU") or ""
    try:
        mtu = int(raw_mtu) if raw_mtu else (read_mtu_file(mtu_file) if mtu_file else 0) or 1500
        timeout = float(env.get("CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT") or 5)
    except ValueError as e:
        raise ConfigError(f"CALICO_LIBNETWORK_*: {e}") from None
    if not 68 <= mtu <= 65535:
        raise ConfigError(f"CALICO_LIBNETWORK_VETH_MTU={mtu}: want 68..65535")
    scope = (env.get("CALICO_LIBNETWORK_SCOPE") or "local").strip().lower()
    if scope not in ("local", "global"):
        raise ConfigError(f"CALICO_LIBNETWORK_SCOPE={scope!r}: want local or global")
    wiring = LinuxDataplane(IpRoute(SubprocessRunner()), ProcSysctl())
    network = NetworkDriver(
        ds,
        node,
        wiring,
        mtu=mtu,
        create_profiles=_flag(env, "CALICO_LIBNETWORK_CREATE_PROFILES", True),
        lookup=lookup,
        label_timeout=timeout,
        scope=scope,
    )
    plugin_dir = env.get("CALICO_LIBNETWORK_PLUGIN_DIR") or DEFAULT_PLUGIN_DIR
    return LibnetworkComponent(plugin_dir, network, IpamDriver(ds, node))
