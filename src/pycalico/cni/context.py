"""Per-invocation context and injected dependencies of the CNI plugins.

:class:`Deps` bundles every side-effecting collaborator (datastore opener, IPAM factory,
workload dataplane, delegate runner, environment, hostname) so unit tests run the whole
plugin in-process against fakes; :func:`default_deps` builds the real ones lazily (the
plugin imports the datastore/IPAM packages only when a command needs them).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pycalico.cni.errors import DATASTORE_FAILED, INVALID_NETCONF, TRY_AGAIN_LATER, CniError
from pycalico.cni.types import CniEnv, NetConf

if TYPE_CHECKING:
    from pycalico.cni.dataplane import WorkloadDataplane
    from pycalico.datastore.base import Datastore

DEFAULT_MTU_FILE = "/var/lib/calico/mtu"
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_MTU = 1500


class IpamBackend(Protocol):
    """The subset of :class:`pycalico.ipam.IPAM` the plugins use."""

    def auto_assign(
        self,
        num_v4: int,
        num_v6: int,
        handle_id: str,
        attrs: Mapping[str, str] | None,
        hostname: str,
        ipv4_pools: Any = None,
        ipv6_pools: Any = None,
        *,
        namespace_labels: Mapping[str, str] | None = None,
    ) -> tuple[list[Any], list[Any]]: ...

    def release_by_handle(self, handle_id: str) -> list[Any]: ...

    def get_ips_by_handle(self, handle_id: str) -> list[Any]: ...


class Delegate(Protocol):
    """Runs another CNI plugin like a runtime would; returns its parsed stdout."""

    def __call__(
        self, plugin: str, command: str, stdin: bytes, environ: Mapping[str, str]
    ) -> dict[str, Any] | None: ...


@dataclass
class Deps:
    open_datastore: Callable[[NetConf, Mapping[str, str]], Datastore]
    ipam: Callable[[Datastore, NetConf], IpamBackend]
    list_handles: Callable[[IpamBackend], list[str]]
    dataplane: Callable[[], WorkloadDataplane]
    delegate: Delegate
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    hostname: Callable[[], str] = socket.gethostname


@dataclass
class Invocation:
    env: CniEnv
    conf: NetConf
    stdin: bytes
    deps: Deps
    _ds: Datastore | None = None

    @property
    def datastore(self) -> Datastore:
        if self._ds is None:
            self._ds = self.deps.open_datastore(self.conf, self.deps.environ)
        return self._ds

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def nodename(self) -> str:
        """netconf ``nodename`` > ``nodename_file`` (default /var/lib/calico/nodename)
        > ``$NODENAME`` > the hostname."""
        if self.conf.nodename:
            return self.conf.nodename
        path = self.conf.nodename_file or DEFAULT_NODENAME_FILE
        try:
            with open(path) as f:
                name = f.read().strip()
            if name:
                return name
        except OSError:
            pass
        return self.deps.environ.get("NODENAME") or self.deps.hostname()

    def mtu(self) -> int:
        """netconf ``mtu`` > the MTU file (``$CALICO_MTU_FILE`` or /var/lib/calico/mtu)
        > 1500."""
        if self.conf.mtu:
            return self.conf.mtu
        from pycalico.cni.dataplane import read_mtu_file

        path = self.deps.environ.get("CALICO_MTU_FILE") or DEFAULT_MTU_FILE
        return read_mtu_file(path) or DEFAULT_MTU


# -- real dependencies ----------------------------------------------------------------------
def _open_datastore(conf: NetConf, environ: Mapping[str, str]) -> Datastore:
    """netconf fields > ``DATASTORE_TYPE`` / ``CALICO_DATASTORE_PATH`` / ``ETCD_ENDPOINTS``.

    The common sqlite case is opened directly (``pycalico.config`` imports YAML, ~15-30 ms of
    plugin start-up); anything else goes through :func:`pycalico.config.load_config`.
    """
    from pycalico.datastore.base import Unavailable

    typ = (conf.datastore_type or environ.get("DATASTORE_TYPE", "") or "sqlite").lower()
    path = conf.datastore_path or environ.get("CALICO_DATASTORE_PATH", "")
    try:
        if typ == "sqlite" and path:
            from pycalico.datastore.sqlite import SqliteDatastore

            return SqliteDatastore(path)
        from pycalico.config import ConfigError, load_config
        from pycalico.datastore import open_datastore

        flags = {
            "datastore_type": conf.datastore_type or None,
            "datastore_path": conf.datastore_path or None,
            "etcd_endpoints": conf.etcd_endpoints or None,
            "etcd_ca_cert_file": conf.etcd_ca_cert_file or None,
            "etcd_cert_file": conf.etcd_cert_file or None,
            "etcd_key_file": conf.etcd_key_file or None,
        }
        try:
            cfg = load_config(env=environ, flags=flags)
        except ConfigError as e:
            raise CniError(INVALID_NETCONF, "invalid datastore configuration", str(e)) from None
        return open_datastore(cfg)
    except CniError:
        raise
    except Unavailable as e:
        raise CniError(TRY_AGAIN_LATER, "datastore unavailable", str(e)) from None
    except Exception as e:  # backend-specific open failures
        raise CniError(DATASTORE_FAILED, "cannot open datastore", str(e)) from None


def _ipam(ds: Datastore, conf: NetConf) -> IpamBackend:
    from pycalico.ipam import DEFAULT_LOCK_PATH, IPAM

    lock = conf.raw.get("ipam_lock_file")
    return IPAM(ds, lock_path=lock if isinstance(lock, str) and lock else DEFAULT_LOCK_PATH)


def _list_handles(ipam: IpamBackend) -> list[str]:
    store = getattr(ipam, "store", None)
    if store is None:
        return []
    return sorted(store.handles())


def _dataplane(netns_via: Mapping[str, str] | None = None) -> WorkloadDataplane:
    """The real dataplane; ``netns_via`` maps a ``CNI_NETNS`` to the path this process
    reaches it by (the CNI server: an fd the client sent, see :mod:`pycalico.cni.server`)."""
    from pycalico.cni.dataplane import LinuxDataplane
    from pycalico.system.iproute import IpRoute
    from pycalico.system.process import SubprocessRunner
    from pycalico.system.sysctl import ProcSysctl

    return LinuxDataplane(IpRoute(SubprocessRunner()), ProcSysctl(), netns_via=netns_via)


def default_deps(environ: Mapping[str, str] | None = None) -> Deps:
    from pycalico.cni.delegate import exec_plugin

    return Deps(
        open_datastore=_open_datastore,
        ipam=_ipam,
        list_handles=_list_handles,
        dataplane=_dataplane,
        delegate=exec_plugin,
        environ=dict(os.environ if environ is None else environ),
    )
