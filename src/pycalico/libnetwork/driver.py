"""The ``calico`` network driver and ``calico-ipam`` IPAM driver, as Calico's libnetwork-plugin.

Both are plain objects: ``handle(method, request) -> response`` over decoded JSON, so unit
tests drive them with the memory datastore and the fake dataplane; :mod:`.server` puts them on
sockets. Every failure becomes ``{"Err": "<clear message>", "Error": ...}`` (Docker prints it after
``Error response from daemon:``); nothing raises out of ``handle``. Request fields are read
only through :class:`~pycalico.libnetwork.request.Request`, which checks each field's JSON
type (ids: 1-64 letters and digits) and names the field in its error, so a malformed request
is refused before anything is written.

Behaviour (Calico's, with the differences noted):

- IPAM: address spaces ``CalicoLocalAddressSpace``/``CalicoGlobalAddressSpace``.
  ``RequestPool`` with ``--subnet`` must name exactly the CIDR of an IPPool (pool id = the
  pool's name); without it the fixed ids ``CalicoPoolIPv4``/``CalicoPoolIPv6`` (any pool). The
  pool data carries the dummy gateway ``0.0.0.0/0`` so Docker never asks for a gateway
  address. ``RequestAddress`` auto-assigns one /32 (/128) from the pool with block affinity to
  this node, or assigns the ``--ip`` address; handle ``libnetwork.<random>``. Sub-pools,
  options and gateway requests are refused.
- Network: ``CreateNetwork`` refuses driver options (``-o``, ``--internal`` ...) and a
  non-Calico IPAM driver, and (pycalico, earlier than Calico) a network without ``--subnet``;
  it records the network id on the pool (annotation
  ``org.projectcalico.label.network.ID``, the latest network wins, as in Calico);
  ``DeleteNetwork`` removes it if it is still this network's. A local-scope network has a
  different id on every host, so endpoints find their pool by their address (Calico: by the
  annotation), i.e. the same ``--subnet`` on every host is one Calico network.
- ``CreateEndpoint`` writes the WorkloadEndpoint: namespace/orchestrator ``libnetwork``, name
  ``<node>-libnetwork-libnetwork-<endpointID>``, interface ``cali<endpointID[:11]>``, /32, a
  generated MAC (returned to Docker), profile = the pool's name (created if missing: members
  allow each other in, all out). ``Join`` creates the veth (host side wired by the CNI
  dataplane: proxy ARP, /32 route, permanent neighbour; peer ``temp<id[:11]>`` that Docker
  moves into the container as ``cali0``) and answers gateway ``169.254.1.1`` with a connected
  static route to it. ``Leave`` removes the veth, ``DeleteEndpoint`` the WEP.
- Labels: with a :class:`ContainerLookup`, after ``Join`` a background thread finds the
  container and copies its ``org.projectcalico.label.*`` labels onto the WEP; pycalico also
  sets ``spec.workload`` to the container name so pycalico's DNS serves
  ``<container>.libnetwork.<zone>``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pycalico.cni.dataplane import GATEWAY_V4, GATEWAY_V6, WiringError, WorkloadIface, random_mac
from pycalico.cni.workload import network_profile, wep_name
from pycalico.datastore.base import AlreadyExists, Conflict, Datastore, NotFound
from pycalico.errors import CalicoError, excerpt
from pycalico.ipam import IPAM
from pycalico.ipam.errors import IPAMError, NoAddressesAvailable
from pycalico.libnetwork.request import Request, RequestError

log = logging.getLogger(__name__)

POOL_ID_V4 = "CalicoPoolIPv4"
POOL_ID_V6 = "CalicoPoolIPv6"
LOCAL_SPACE = "CalicoLocalAddressSpace"
GLOBAL_SPACE = "CalicoGlobalAddressSpace"
LABEL_PREFIX = "org.projectcalico.label."
NETWORK_ID_ANNOTATION = LABEL_PREFIX + "network.ID"
GATEWAY_KEY = "com.docker.network.gateway"
ORCH = "libnetwork"
KNOWN_NETWORK_OPTIONS = ("com.docker.network.enable_ipv6",)


class DriverError(CalicoError):
    """A request Docker must be told about (the message is what the user sees)."""


class HostWiring(Protocol):
    def setup_host(self, w: WorkloadIface) -> None: ...

    def teardown(self, host_ifname: str, netns: str, container_ifname: str) -> bool: ...


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    labels: dict[str, str]


#: (network id, endpoint id) -> the container using that endpoint, or None (not yet known)
ContainerLookup = Callable[[str, str], "ContainerInfo | None"]

Handler = Callable[[Request], dict[str, Any]]
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")


def _err(msg: str) -> dict[str, Any]:
    """An error answer: libnetwork's remote network API reads ``Err``, its remote IPAM API
    ``Error`` (both HTTP 200); the same message under both keys."""
    return {"Err": msg, "Error": msg}


def _dispatch(table: Mapping[str, Handler], method: str, req: Any) -> dict[str, Any]:
    fn = table.get(method)
    if fn is None:
        return _err(f"calico: unsupported method {excerpt(method, 64)}")
    try:
        return fn(Request(method, req))
    except (DriverError, RequestError) as e:
        log.info("%s: %s", method, e)
        return _err(str(e))
    except Exception as e:  # never let Docker hang on an unexpected failure
        log.exception("%s failed", method)
        return _err(f"calico {method}: {type(e).__name__}: {e}")


def _pools(ds: Datastore) -> list[dict[str, Any]]:
    return list(ds.list("IPPool").items)


def _cidr(p: dict[str, Any]) -> str:
    return str((p.get("spec") or {}).get("cidr", ""))


class IpamDriver:
    """``calico-ipam``: Calico IPAM behind Docker's IPAM plugin API."""

    def __init__(self, ds: Datastore, node: str, ipam: IPAM | None = None) -> None:
        self.ds = ds
        self.node = node
        self.ipam = ipam or IPAM(ds)
        self.table: dict[str, Handler] = {
            "Plugin.Activate": lambda _: {"Implements": ["IpamDriver"]},
            "IpamDriver.GetCapabilities": lambda _: {"RequiresMACAddress": False},
            "IpamDriver.GetDefaultAddressSpaces": lambda _: {
                "LocalDefaultAddressSpace": LOCAL_SPACE,
                "GlobalDefaultAddressSpace": GLOBAL_SPACE,
            },
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": lambda _: {},
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    def handle(self, method: str, req: Any) -> dict[str, Any]:
        return _dispatch(self.table, method, req)

    def request_pool(self, req: Request) -> dict[str, Any]:
        if req.text("SubPool"):
            raise DriverError(
                "Calico IPAM does not support --ip-range (sub pools): addresses come from the "
                "configured Calico IP pools"
            )
        if opts := req.obj("Options"):
            names = excerpt(", ".join(sorted(opts)), 200)
            raise DriverError(f"Calico IPAM does not support --ipam-opt options ({names})")
        v6 = req.flag("V6")
        pool_id, pool, gw = (
            (POOL_ID_V6, "::/0", "::/0") if v6 else (POOL_ID_V4, "0.0.0.0/0", "0.0.0.0/0")
        )
        want = req.text("Pool")
        if want:
            try:
                net = ipaddress.ip_network(want, strict=False)
            except ValueError:
                raise DriverError(f"--subnet {excerpt(want, 64)!r}: not a valid CIDR") from None
            match = [p for p in _pools(self.ds) if _cidr(p) == str(net)]
            if not match:
                raise DriverError(
                    f"--subnet {net}: the requested subnet must match the CIDR of a configured "
                    "Calico IP Pool (calicoctl get ippools)"
                )
            pool_id, pool = match[0]["metadata"]["name"], str(net)
        return {"PoolID": pool_id, "Pool": pool, "Data": {GATEWAY_KEY: gw}}

    def request_address(self, req: Request) -> dict[str, Any]:
        if req.obj("Options").get("RequestAddressType") == GATEWAY_KEY:
            raise DriverError("Calico IPAM does not support specifying a gateway (--gateway)")
        pool_id = req.text("PoolID")
        handle = f"{ORCH}.{uuid.uuid4().hex}"
        attrs = {"node": self.node, "type": ORCH}
        addr = req.text("Address")
        if addr:
            try:
                ipaddress.ip_interface(addr)
            except ValueError:
                raise DriverError(f"--ip {excerpt(addr, 64)!r}: not an IP address") from None
        try:
            if addr:
                ip = self.ipam.assign_ip(addr, handle, attrs, self.node).ip
            else:
                v4p: list[str] | None = None
                v6p: list[str] | None = None
                n4, n6 = 1, 0
                if pool_id == POOL_ID_V6:
                    n4, n6 = 0, 1
                elif pool_id != POOL_ID_V4:
                    cidr = self._pool_cidr(pool_id)
                    if ":" in cidr:
                        n4, n6, v6p = 0, 1, [cidr]
                    else:
                        v4p = [cidr]
                v4, v6 = self.ipam.auto_assign(n4, n6, handle, attrs, self.node, v4p, v6p)
                got = [*v4, *v6]
                if len(got) != 1:
                    self.ipam.release_ips(got)
                    raise DriverError(f"IP assignment error: got {len(got)} addresses, want 1")
                ip = got[0].ip
        except NoAddressesAvailable:
            where = f"pool {pool_id}" if pool_id not in (POOL_ID_V4, POOL_ID_V6) else "any pool"
            raise DriverError(f"IP assignment error: no addresses available in {where}") from None
        except IPAMError as e:
            what = excerpt(addr or pool_id, 64)
            raise DriverError(f"IP assignment error ({what}): {excerpt(str(e), 300)}") from None
        plen = 128 if ip.version == 6 else 32
        return {"Address": f"{ip}/{plen}", "Data": {}}

    def _pool_cidr(self, pool_id: str) -> str:
        try:
            return _cidr(self.ds.get("IPPool", pool_id))
        except NotFound:
            raise DriverError(
                f"invalid pool {excerpt(pool_id, 64)!r}: no such Calico IP pool"
            ) from None

    def release_address(self, req: Request) -> dict[str, Any]:
        addr = req.text("Address")
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise DriverError(
                f"ReleaseAddress: {excerpt(addr, 64)!r} is not an IP address"
            ) from None
        self.ipam.release_ips([addr])  # already free: a no-op, as in Calico
        return {}


def host_ifname(endpoint_id: str, prefix: str = "cali") -> str:
    return f"{prefix}{endpoint_id[:11]}"


def temp_ifname(endpoint_id: str) -> str:
    return f"temp{endpoint_id[:11]}"


class NetworkDriver:
    """``calico``: WorkloadEndpoints and veths for Docker endpoints."""

    def __init__(
        self,
        ds: Datastore,
        node: str,
        wiring: HostWiring,
        *,
        mtu: int = 1500,
        create_profiles: bool = True,
        lookup: ContainerLookup | None = None,
        label_timeout: float = 5.0,
        scope: str = "local",
    ) -> None:
        self.ds = ds
        self.node = node
        self.wiring = wiring
        self.mtu = mtu
        self.create_profiles = create_profiles
        self.lookup = lookup
        self.label_timeout = label_timeout
        self.scope = scope
        self.threads: list[threading.Thread] = []
        ok: Handler = lambda _: {}  # noqa: E731
        self.table: dict[str, Handler] = {
            "Plugin.Activate": lambda _: {"Implements": ["NetworkDriver"]},
            "NetworkDriver.GetCapabilities": lambda _: {
                "Scope": self.scope,
                "ConnectivityScope": self.scope,
            },
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.EndpointOperInfo": lambda _: {"Value": {}},
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.DiscoverNew": ok,
            "NetworkDriver.DiscoverDelete": ok,
            "NetworkDriver.ProgramExternalConnectivity": ok,
            "NetworkDriver.RevokeExternalConnectivity": ok,
            "NetworkDriver.AllocateNetwork": lambda _: {"Options": {}},
            "NetworkDriver.FreeNetwork": ok,
        }

    def handle(self, method: str, req: Any) -> dict[str, Any]:
        return _dispatch(self.table, method, req)

    # ------------------------------------------------------------------ networks

    @staticmethod
    def _check_options(options: Mapping[str, Any]) -> None:
        for k, v in sorted(options.items()):
            if k in KNOWN_NETWORK_OPTIONS:
                continue
            if isinstance(v, bool):
                if v:
                    flag = "--" + excerpt(k.removeprefix("com.docker.network."), 64)
                    raise DriverError(f"Calico driver does not support the flag {flag}.")
            elif isinstance(v, dict):
                if v:
                    names = excerpt(", ".join(sorted(map(str, v))), 200)
                    s = "s" if len(v) > 1 else ""
                    raise DriverError(f"Calico driver does not support the option{s} {names}.")
            elif v not in (None, ""):
                raise DriverError(
                    f"Calico driver does not support the option {excerpt(k, 64)} "
                    f"({excerpt(v, 64)})."
                )

    def create_network(self, req: Request) -> dict[str, Any]:
        self._check_options(req.obj("Options"))
        nid = req.docker_id("NetworkID")
        cidrs: list[str] = []
        for d in req.objs("IPv4Data"):
            if d.text("Gateway") != "0.0.0.0/0":
                raise DriverError(
                    "Non-Calico IPAM driver is used: create the network with "
                    "--ipam-driver calico-ipam"
                )
            cidrs.append(d.text("Pool"))
        for d in req.objs("IPv6Data"):
            if d.text("AddressSpace") != GLOBAL_SPACE:
                raise DriverError("Non-Calico IPAM driver is used (IPv6)")
            cidrs.append(d.text("Pool"))
        real = [c for c in cidrs if c not in ("0.0.0.0/0", "::/0")]
        if not real:
            raise DriverError(
                "a calico network needs --subnet set to the CIDR of a Calico IP pool "
                "(its profile is named after the pool)"
            )
        for cidr in real:
            self._annotate(cidr, nid)
        return {}

    def _annotate(self, cidr: str, nid: str) -> None:
        for _ in range(5):
            pool = next((p for p in _pools(self.ds) if _cidr(p) == cidr), None)
            if pool is None:
                raise DriverError(f"--subnet {excerpt(cidr, 64)}: no Calico IP pool has this CIDR")
            md = pool["metadata"]
            ann = dict(md.get("annotations") or {})
            if ann.get(NETWORK_ID_ANNOTATION) == nid:
                return
            ann[NETWORK_ID_ANNOTATION] = nid
            try:
                self.ds.update({**pool, "metadata": {**md, "annotations": ann}})
                return
            except Conflict:
                continue
        raise DriverError(f"updating IP pool for {cidr}: too many conflicts, try again")

    def delete_network(self, req: Request) -> dict[str, Any]:
        nid = req.docker_id("NetworkID")
        for _ in range(5):
            pools = [p for p in _pools(self.ds) if self._network_of(p) == nid]
            if not pools:
                return {}
            try:
                for p in pools:
                    md = p["metadata"]
                    ann = {
                        k: v
                        for k, v in (md.get("annotations") or {}).items()
                        if k != NETWORK_ID_ANNOTATION
                    }
                    self.ds.update({**p, "metadata": {**md, "annotations": ann}})
            except Conflict:
                continue
        return {}

    @staticmethod
    def _network_of(pool: dict[str, Any]) -> str:
        return str((pool["metadata"].get("annotations") or {}).get(NETWORK_ID_ANNOTATION, ""))

    def _pool_name(self, nid: str, addr: str) -> str:
        """The pool containing the endpoint's address (each host's dockerd has its own id
        for a local-scope network, so the address, not the id, is what all hosts share);
        else the pool annotated with the network id, as Calico."""
        ip = ipaddress.ip_interface(addr).ip
        pools = _pools(self.ds)
        for p in pools:
            with contextlib.suppress(ValueError):
                if ip in ipaddress.ip_network(_cidr(p)):
                    return str(p["metadata"]["name"])
        for p in pools:
            if self._network_of(p) == nid:
                return str(p["metadata"]["name"])
        raise DriverError(
            f"network {nid[:12]}: no Calico IP pool backs it (was its pool deleted or re-created?)"
        )

    # ------------------------------------------------------------------ endpoints

    def wep_name(self, eid: str) -> str:
        return wep_name(self.node, ORCH, ORCH, eid)

    def create_endpoint(self, req: Request) -> dict[str, Any]:
        eid = req.docker_id("EndpointID")
        nid = req.docker_id("NetworkID", required=False)
        iface = req.sub("Interface")
        nets: list[str] = []
        for key, plen in (("Address", 32), ("AddressIPv6", 128)):
            a = iface.text(key)
            if a:
                try:
                    ip = ipaddress.ip_interface(a).ip
                except ValueError:
                    raise DriverError(
                        f"endpoint {key} {excerpt(a, 64)!r} is not an address"
                    ) from None
                if ip.version != (4 if plen == 32 else 6):
                    raise DriverError(
                        f"endpoint {key} {a!r} is not an IPv{4 if plen == 32 else 6} address"
                    )
                nets.append(f"{ip}/{plen}")
        if not nets:
            raise DriverError("no address assigned for endpoint (use --ipam-driver calico-ipam)")
        pool = self._pool_name(nid, nets[0])
        mac = iface.text("MacAddress")
        if mac and not _MAC.fullmatch(mac):
            raise DriverError(f"endpoint MacAddress {excerpt(mac, 64)!r} is not a MAC address")
        resp: dict[str, Any] = {"Interface": {}}
        if not mac:
            mac = random_mac()
            resp["Interface"] = {"MacAddress": mac}
        spec: dict[str, Any] = {
            "orchestrator": ORCH,
            "workload": ORCH,
            "node": self.node,
            "endpoint": eid,
            "interfaceName": host_ifname(eid),
            "mac": mac,
            "ipNetworks": nets,
        }
        if self.create_profiles:
            spec["profiles"] = [pool]
            try:
                self.ds.create(network_profile(pool))
            except AlreadyExists:
                pass
        wep: dict[str, Any] = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": self.wep_name(eid), "namespace": ORCH, "labels": {}},
            "spec": spec,
        }
        try:
            self.ds.create(wep)
        except AlreadyExists:
            cur = self.ds.get("WorkloadEndpoint", self.wep_name(eid), ORCH)
            wep["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            self.ds.update(wep)
        return resp

    def _wep(self, eid: str) -> dict[str, Any]:
        try:
            return self.ds.get("WorkloadEndpoint", self.wep_name(eid), ORCH)
        except NotFound:
            raise DriverError(f"endpoint {eid[:12]}: no such Calico endpoint") from None

    def join(self, req: Request) -> dict[str, Any]:
        eid = req.docker_id("EndpointID")
        nid = req.docker_id("NetworkID", required=False)
        spec = self._wep(eid).get("spec") or {}
        w = WorkloadIface(
            host_ifname=host_ifname(eid),
            container_ifname=temp_ifname(eid),
            netns="",
            addresses=tuple(spec.get("ipNetworks") or ()),
            mtu=self.mtu,
            container_mac=str(spec.get("mac") or random_mac()),
        )
        try:
            self.wiring.setup_host(w)
        except WiringError as e:
            raise DriverError(f"veth creation error: {e}") from None
        if self.lookup is not None:
            t = threading.Thread(
                target=self._label_endpoint, args=(nid, eid), name=f"labels-{eid[:8]}", daemon=True
            )
            self.threads = [x for x in self.threads if x.is_alive()] + [t]
            t.start()
        routes = [{"Destination": f"{GATEWAY_V4}/32", "RouteType": 1, "NextHop": ""}]
        extra: dict[str, Any] = {}
        if w.v6:  # the host side's link-local address (fixed MAC), connected
            extra["GatewayIPv6"] = GATEWAY_V6
            routes.append({"Destination": f"{GATEWAY_V6}/128", "RouteType": 1, "NextHop": ""})
        return {
            **extra,
            "InterfaceName": {"SrcName": w.container_ifname, "DstPrefix": "cali"},
            "Gateway": GATEWAY_V4,
            "StaticRoutes": routes,
            "DisableGatewayService": False,
        }

    def leave(self, req: Request) -> dict[str, Any]:
        eid = req.docker_id("EndpointID")
        self.wiring.teardown(host_ifname(eid), "", temp_ifname(eid))
        return {}

    def delete_endpoint(self, req: Request) -> dict[str, Any]:
        eid = req.docker_id("EndpointID")
        try:
            self.ds.delete("WorkloadEndpoint", self.wep_name(eid), ORCH)
        except NotFound:
            pass
        return {}

    # ------------------------------------------------------------------ labels

    def _label_endpoint(self, nid: str, eid: str) -> None:
        """Poll Docker until the endpoint's container is known; copy its name and labels."""
        assert self.lookup is not None
        deadline = time.monotonic() + self.label_timeout
        info: ContainerInfo | None = None
        while time.monotonic() < deadline:
            try:
                info = self.lookup(nid, eid)
            except Exception as e:  # dockerd busy or restarting: keep polling
                log.debug("container lookup for %s: %s", eid[:12], e)
            if info is not None:
                break
            time.sleep(0.1)
        if info is None:
            log.warning("endpoint %s: container not found in Docker; no labels", eid[:12])
            return
        labels = {
            k.removeprefix(LABEL_PREFIX): v
            for k, v in info.labels.items()
            if k.startswith(LABEL_PREFIX)
        }
        for _ in range(10):
            try:
                wep = self.ds.get("WorkloadEndpoint", self.wep_name(eid), ORCH)
            except NotFound:
                return
            md = wep["metadata"]
            new = {
                **wep,
                "metadata": {**md, "labels": {**(md.get("labels") or {}), **labels}},
                "spec": {**wep["spec"], "workload": info.name or ORCH},
            }
            try:
                self.ds.update(new)
                return
            except Conflict:
                continue
