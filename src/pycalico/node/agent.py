"""calico-node command family: ``run`` — the per-host agent — and its readiness checks.

``calico-node run`` does what Calico's calico-node container does:
1. start-up (:mod:`pycalico.node.startup`): node name and IP, Node resource, default pool,
   tunnel addresses, ClusterInformation, the MTU file (retried forever while the datastore is
   unreachable; a configuration error exits 1);
2. runs, supervised (:mod:`pycalico.node.supervisor`): Felix (one syncer, one owner loop:
   nftables policy, routes, tunnels, NAT-outgoing, MTU file), the tunnel-address allocator
   (:mod:`pycalico.node.tunnels`), BGP (BIRD driven from the datastore,
   :mod:`pycalico.node.bgpdriver`), the CNI server (:mod:`pycalico.node.cniserver`), Docker's
   drivers (:mod:`pycalico.node.libnetwork`),
   workload DNS on 169.254.25.10 (:mod:`pycalico.dns`) and IPAM leak repair on the holder of
   the ``ipam-gc`` lease (:mod:`pycalico.node.ipamgc`), the flow-log collector
   (:mod:`pycalico.flows`, on when ``flowLogsFileEnabled``), the CalicoNodeStatus reporter
   (:mod:`pycalico.node.nodestatus`); ``extra_components`` adds more;
3. every second writes ``<CALICO_NODE_STATE_DIR>/status.json`` (:mod:`pycalico.node.status`),
   serves ``/liveness`` and ``/readiness`` on ``:9099`` unless ``FELIX_HEALTHENABLED=false``
   and Prometheus metrics on ``:9091`` when ``FELIX_PROMETHEUSMETRICSENABLED=true``.
   Readiness also needs the node's datastore feed (its SyncerHub) in sync: after the
   datastore has been unreachable for ``CALICO_NODE_DATASTORE_GRACE_PERIOD`` (Go duration or
   seconds, default 10s) the node reports not ready ("datastore unreachable for 12s" in the
   status errors) until the hub has resynced; liveness is unaffected
   (:mod:`pycalico.node.status`).

SIGTERM/SIGINT: components stop; the dataplane stays (nftables table, proto-80 routes,
BIRD's kernel routes — its kernel protocol has ``persist``); BIRD itself is stopped
gracefully and the next one starts in graceful restart recovery (``-R``), keeping those
routes until BGP reconverged. kill -9 of the agent leaves BIRD running; the next agent
adopts it.

``calico-node run --felix-ready --bird-ready`` (also ``-felix-ready``/``-bird-ready``,
``--felix-live``/``--bird-live``) only reads the status file and exits 0 or 1 printing
Calico's messages.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from pycalico.diag import memtrace
from pycalico.errors import CalicoError
from pycalico.model.felixconfig import FelixConfig
from pycalico.node.status import (
    DATASTORE_GRACE_ENV,
    DEFAULT_DATASTORE_GRACE,
    NodeStatus,
    bgp_rows,
    check,
    datastore_health,
    read_status,
    write_status,
)
from pycalico.node.supervisor import Component, Supervisor
from pycalico.system.kernel import Kernel
from pycalico.system.process import SubprocessRunner

log = logging.getLogger("pycalico.node")

DEFAULT_STATE_DIR = "/var/run/calico"
DEFAULT_MTU_FILE = "/var/lib/calico/mtu"


def _state_dir(env: Mapping[str, str]) -> str:
    return env.get("CALICO_NODE_STATE_DIR") or DEFAULT_STATE_DIR


def datastore_grace(env: Mapping[str, str]) -> float:
    """``CALICO_NODE_DATASTORE_GRACE_PERIOD`` in seconds (default 10); a bad value warns."""
    from pycalico.model import ModelError
    from pycalico.model.durations import parse_duration

    raw = env.get(DATASTORE_GRACE_ENV)
    if not raw:
        return DEFAULT_DATASTORE_GRACE
    try:
        return parse_duration(raw, DATASTORE_GRACE_ENV)
    except ModelError as e:
        log.warning("%s; using %.0fs", e, DEFAULT_DATASTORE_GRACE)
        return DEFAULT_DATASTORE_GRACE


def _startup(env: Mapping[str, str], stop: threading.Event) -> tuple[Any, Any]:
    """Open the datastore and run start-up, retrying while the datastore is unavailable."""
    from pycalico.config import load_config
    from pycalico.datastore import DatastoreError, open_datastore
    from pycalico.node.autodetect import read_interfaces, route_source
    from pycalico.node.startup import NodeSettings, StartupError, run_startup

    settings = NodeSettings.from_env(env)
    cfg = load_config(env=env)
    backoff = 0.5
    ds: Any = None
    while not stop.is_set():
        try:
            if ds is None:
                ds = open_datastore(cfg)
            result = run_startup(ds, settings, read_interfaces(), route_source)
            for w in result.warnings:
                log.warning("startup: %s", w)
            log.info(
                "startup: node %s ip %s ipip %s vxlan %s%s",
                settings.node_name,
                result.ipv4,
                result.ipip_tunnel,
                result.vxlan_tunnel,
                " (created default pool)" if result.created_pool else "",
            )
            return ds, result
        except StartupError:
            raise  # configuration problem: retrying cannot help
        except CalicoError as e:  # datastore outage, lost CAS races, IPAM contention, ...
            what = "datastore not ready" if isinstance(e, DatastoreError) else "start-up failed"
            log.warning("%s (%s); retrying in %.1fs", what, e, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
    raise SystemExit(0)


def _write_mtu(ds: Any, mtu_file: str, cfg: FelixConfig) -> int:
    """The MTU file before Felix runs, by Felix's own rules
    (:func:`pycalico.felix.calc.routes.node_pod_mtu` over
    :func:`pycalico.felix.calc.routes.host_mtu`)."""
    import dataclasses
    import re

    from pycalico.felix.calc.routes import host_mtu, node_pod_mtu
    from pycalico.felix.dataplane.mtu import write_mtu_file
    from pycalico.model import ModelError
    from pycalico.model.network import IPPool
    from pycalico.node.autodetect import read_interfaces

    pools = []
    for p in ds.list("IPPool").items:
        try:
            pools.append(IPPool.from_resource(p))
        except ModelError as e:
            log.warning("MTU: ignoring %s", e)
    interfaces = read_interfaces()
    try:
        host = host_mtu(interfaces, cfg.mtu_iface_pattern)
    except re.error as e:
        log.warning("mtuIfacePattern %r: %s; using the default", cfg.mtu_iface_pattern, e)
        cfg = dataclasses.replace(cfg, mtu_iface_pattern=FelixConfig().mtu_iface_pattern)
        host = host_mtu(interfaces, cfg.mtu_iface_pattern)
    mtu = node_pod_mtu(pools, cfg, host)
    write_mtu_file(mtu, mtu_file)
    return mtu


class NodeAgent:
    """The running agent: supervisor + status/health/metrics loop (see module doc)."""

    def __init__(
        self,
        node_name: str,
        state_dir: str,
        components: Sequence[Component],
        *,
        felix_cfg: Any = None,
        supervisor: Supervisor | None = None,
        hub: Any = None,
        datastore_grace: float = DEFAULT_DATASTORE_GRACE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from pycalico.node.metrics import NodeMetrics

        self.node_name = node_name
        self.state_dir = state_dir
        self.components = list(components)
        self.supervisor = supervisor or Supervisor(self.components)
        self.felix_cfg = felix_cfg
        self.metrics = NodeMetrics()
        self.status = NodeStatus(node_name, os.getpid(), None, None, None)
        self.stop_event = threading.Event()
        self._health: Any = None
        # The node's SyncerHub (started before, stopped after the components); readiness
        # follows its sync state (see pycalico.node.status.datastore_health).
        self.hub: Any = hub
        self.datastore_grace = datastore_grace
        self.monotonic = monotonic

    def _comp(self, name: str) -> Any:
        return self.supervisor.component(name)

    def collect(self) -> NodeStatus:
        report = self.supervisor.report()
        felix, bgp = self._comp("felix"), self._comp("bgp")
        felix_in_sync = report["felix"]["in_sync"] if felix is not None else None
        st = NodeStatus(
            node=self.node_name,
            pid=os.getpid(),
            felix_in_sync=felix_in_sync,
            routes_in_sync=felix_in_sync,  # one Felix programs both (kept for readers)
            bird_running=bgp.bird_running() if bgp is not None else None,
            components=report,
            time=time.time(),
        )
        if self.hub is not None:
            ok, info, reason = datastore_health(
                self.hub.sync_state, self.datastore_grace, self.monotonic()
            )
            st.datastore_ready, st.datastore = ok, info
            if reason:
                st.errors.append(reason)
        if bgp is not None:
            st.bgp = bgp_rows(bgp.protocols())
            if bgp.last_error:
                st.errors.append(f"bgp: {bgp.last_error}")
        for name, r in report.items():
            if r["last_error"] and not r["alive"]:
                st.errors.append(f"{name}: {r['last_error']}")
        return st

    def _update_metrics(self, st: NodeStatus) -> None:
        felix = self._comp("felix")
        gauges: dict[str, float] = {}
        resyncs: float | None = None
        applies: list[float] = []
        if felix is not None and hasattr(felix, "metrics"):
            gauges, resyncs, applies = felix.metrics()
        n = felix.num_routes() if felix is not None and hasattr(felix, "num_routes") else None
        if n is not None:
            gauges["felix_route_table_num_routes"] = float(n)
        bgp = self._comp("bgp")
        if bgp is not None and hasattr(bgp, "num_nodes"):
            gauges["felix_cluster_num_hosts"] = float(bgp.num_nodes())
        gauges["calico_node_bgp_sessions"] = float(len(st.bgp))
        gauges["calico_node_bgp_sessions_established"] = float(
            sum(1 for r in st.bgp if r.get("info", "").startswith("Established"))
        )
        restarts = {k: int(v["restarts"]) for k, v in st.components.items()}
        self.metrics.update(gauges, resyncs=resyncs, apply_times=applies, restarts=restarts)

    def tick(self) -> NodeStatus:
        self.supervisor.step()
        st = self.collect()
        try:  # the file first: once /readiness says it, `--felix-ready` agrees
            write_status(self.state_dir, st)
        except OSError as e:
            log.warning("cannot write status: %s", e)
        self.status = st
        try:
            self._update_metrics(st)
        except Exception:
            log.debug("metrics update failed", exc_info=True)
        return st

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        comps = self.status.components
        return all(c["alive"] for c in comps.values()) and bool(comps), comps

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        d = self.status.to_json()
        if not self.status.time:  # nothing collected yet: not ready (status.json agrees)
            d["ready"] = False
            d["errors"] = [*d["errors"], "starting: no status collected yet"]
        return bool(d["ready"]), d

    def serve(self) -> None:
        cfg = self.felix_cfg
        if cfg is None:
            return
        if cfg["healthEnabled"]:
            from pycalico.node.health import HealthServer

            try:
                self._health = HealthServer(
                    cfg["healthHost"], cfg["healthPort"], self.liveness, self.readiness
                ).start()
            except OSError as e:
                log.warning("health endpoint on %s:%s: %s", cfg["healthHost"], cfg["healthPort"], e)
        if cfg["prometheusMetricsEnabled"]:
            try:
                self.metrics.serve(cfg["prometheusMetricsHost"], cfg["prometheusMetricsPort"])
            except OSError as e:
                log.warning("metrics endpoint on port %s: %s", cfg["prometheusMetricsPort"], e)

    def run(self, interval: float = 1.0) -> None:
        self.serve()
        announced = False
        ds_ready: bool | None = None
        while not self.stop_event.is_set():
            st = self.tick()
            if st.ready and not announced:
                log.info("calico-node %s is ready", self.node_name)
                announced = True
            if st.datastore_ready is not ds_ready and ds_ready is not None:
                if st.datastore_ready is False:
                    log.warning("not ready: %s", st.datastore.get("reason"))
                else:
                    log.info("datastore in sync again: readiness restored")
            ds_ready = st.datastore_ready
            self.stop_event.wait(interval)
        self.shutdown()

    def reload(self) -> None:
        """SIGHUP (systemd ``ExecReload``): every component that can resyncs from scratch."""
        log.info("reload requested: resyncing the dataplane")
        for comp in self.components:
            resync = getattr(comp, "resync", None)
            if callable(resync):
                resync()

    def shutdown(self) -> None:
        log.info("stopping; the dataplane stays in place")
        self.supervisor.stop_all()
        if self.hub is not None:
            self.hub.stop()
        if self._health is not None:
            self._health.stop()
        self.metrics.stop()
        final = self.collect()  # every component is stopped: not ready
        try:
            write_status(self.state_dir, final)
        except OSError:
            pass
        log.info("stopped")


def build_agent(
    env: Mapping[str, str],
    stop: threading.Event,
    extra_components: Sequence[Component] = (),
) -> NodeAgent:
    """Start-up, then the supervised components; ``extra_components`` is the hook for
    later ones (DNS) — they are supervised and reported like the built-in ones."""
    from pycalico.datastore import DatastoreError
    from pycalico.datastore.hub import SyncerHub
    from pycalico.flows.metrics import FlowMetrics
    from pycalico.node import felixcfg, ipamgc
    from pycalico.node.bgpdriver import BgpComponent
    from pycalico.node.components import FelixComponent, flows_component
    from pycalico.node.startup import write_atomic
    from pycalico.node.tunnels import TunnelAddressComponent

    state_dir = _state_dir(env)
    os.makedirs(state_dir, exist_ok=True)
    ds, result = _startup(env, stop)
    node_name = result.node["metadata"]["name"]
    write_atomic(os.path.join(state_dir, "nodename"), node_name + "\n")
    try:
        fcfg = felixcfg.from_resources(env, node_name, ds.list("FelixConfiguration").items)
    except DatastoreError as e:  # an outage right after start-up: env and defaults only
        log.warning("FelixConfiguration unavailable (%s); using env and defaults", e)
        fcfg = felixcfg.effective(env)
    for w in fcfg.warnings:
        log.warning("%s", w)
    mtu_file = env.get("CALICO_MTU_FILE") or DEFAULT_MTU_FILE
    try:
        log.info("pod MTU %d written to %s", _write_mtu(ds, mtu_file, fcfg.config), mtu_file)
    except (OSError, CalicoError) as e:
        log.warning("MTU file %s: %s", mtu_file, e)
    backend = (env.get("CALICO_NETWORKING_BACKEND") or "bird").lower()
    grace = datastore_grace(env)
    # ONE Syncer for the node (pycalico.datastore.hub), over every component's kinds.
    kinds = _hub_kinds(backend == "bird")
    hub = SyncerHub(ds, kinds, poll_interval=0.5, name=f"hub-syncer-{node_name}")
    felix = FelixComponent(ds, node_name, env, mtu_file=mtu_file, hub=hub)
    flows = flows_component(felix, ds, fcfg.config)  # flow logs (pycalico.flows)
    comps: list[Component] = [TunnelAddressComponent(ds, node_name, hub=hub), felix, flows]
    bgp: Any = None
    if backend == "bird":
        socket_path = env.get("CALICO_BIRD_SOCKET") or os.path.join(state_dir, "bird.ctl")
        bgp = BgpComponent(ds, node_name, state_dir, socket_path, hub=hub)
        comps.append(bgp)
    comps.append(_node_status_reporter(ds, node_name, hub, bgp))
    from pycalico.node import cniserver

    cni = cniserver.from_env(env, state_dir)
    if cni is not None:
        comps.append(cni)
    from pycalico.node import libnetwork

    docker = libnetwork.from_env(ds, node_name, env, mtu_file)
    if docker is not None:
        comps.append(docker)
    dns = _dns_component(ds, node_name, env, hub)
    if dns is not None:
        comps.append(dns)
    comps.extend(ipamgc.components_from_env(ds, node_name, env))
    comps.extend(extra_components)
    agent = NodeAgent(node_name, state_dir, comps, felix_cfg=fcfg, datastore_grace=grace)
    flows.metrics = FlowMetrics(agent.metrics.registry)
    agent.stop_event = stop
    agent.hub = hub.start()  # before the components (the supervisor's first step)
    return agent


def _node_status_reporter(ds: Any, node_name: str, hub: Any, bgp: Any) -> Component:
    """CalicoNodeStatus reports (:mod:`pycalico.node.nodestatus`), from this node's BIRD."""
    from pycalico.node.nodestatus import NodeStatusReporter, bird_runner

    def bird() -> Any:
        if bgp is None or not bgp.bird_running():
            return None
        return bird_runner(bgp.manager.control)

    return NodeStatusReporter(ds, node_name, bird, hub=hub)


def _hub_kinds(bgp: bool) -> tuple[str, ...]:
    """The union of the kinds of this node's components (the node's SyncerHub syncs them)."""
    from pycalico.dns.server import KINDS as DNS_KINDS
    from pycalico.felix.agent import FELIX_KINDS
    from pycalico.node.bgpdriver import BGP_KINDS
    from pycalico.node.nodestatus import NodeStatusReporter
    from pycalico.node.tunnels import TunnelAddressComponent

    kinds = {*FELIX_KINDS, *TunnelAddressComponent.KINDS, *DNS_KINDS, *(BGP_KINDS if bgp else ())}
    kinds.update(NodeStatusReporter.KINDS)
    return tuple(sorted(kinds))


def _dns_component(
    ds: Any,
    node_name: str,
    env: Mapping[str, str],
    hub: Any = None,
    kernel: Kernel | None = None,
) -> Component | None:
    """The workload DNS server (``CALICO_DNS_*``), with its link-local listen addresses put on
    this node's ``lo`` (through the typed kernel seam) so pods reach them through their
    169.254.1.1 gateway."""
    import ipaddress

    from pycalico.dns import server_from_env
    from pycalico.system.kernel import Address, IpRouteKernel, KernelError

    kernel = kernel or IpRouteKernel(SubprocessRunner())
    try:
        server = server_from_env(ds, node_name, env, hub)
    except CalicoError as e:
        log.error("workload DNS disabled: %s", e)
        return None
    if server is None:
        return None
    for host, _port in server.listen:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            continue
        if addr.is_link_local and not addr.is_unspecified:
            try:
                kernel.replace_addr(Address("lo", ipaddress.ip_interface(addr)))
            except KernelError as e:
                log.warning("cannot add DNS address %s to lo: %s", addr, e)
    component: Component = server
    return component


def run_agent(env: Mapping[str, str]) -> int:
    level = env.get("CALICO_STARTUP_LOGLEVEL") or env.get("FELIX_LOGSEVERITYSCREEN") or "INFO"
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s [%(levelname)s][%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        memtrace.install(env)  # opt-in heap snapshots on SIGUSR2 (CALICO_MEMTRACE_DIR)
        agent = build_agent(env, stop)
    except CalicoError as e:
        log.error("calico-node cannot start: %s", e)
        return 1
    signal.signal(signal.SIGHUP, lambda *_: agent.reload())
    agent.run()
    return 0


@click.command("run")
@click.option("--felix-ready", "-felix-ready", is_flag=True, help="Check Felix readiness.")
@click.option("--bird-ready", "-bird-ready", is_flag=True, help="Check BGP readiness.")
@click.option("--felix-live", "-felix-live", is_flag=True, help="Check Felix liveness.")
@click.option("--bird-live", "-bird-live", is_flag=True, help="Check BIRD liveness.")
@click.option("--bird6-ready", "-bird6-ready", is_flag=True, help="Check IPv6 BGP readiness.")
@click.option(
    "--state-dir",
    envvar="CALICO_NODE_STATE_DIR",
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Per-node state directory (status.json, bird.cfg, ...).",
)
@click.option(
    "--config-file",
    envvar="CALICO_NODE_CONFIG",
    default=None,
    help="Settings file (Calico's variable names; env file or .yaml) "
    "[default: /etc/calico/calico-node.env if present]; the environment wins over it.",
)
@click.pass_context
def run(
    ctx: click.Context,
    felix_ready: bool,
    bird_ready: bool,
    felix_live: bool,
    bird_live: bool,
    bird6_ready: bool,
    state_dir: str,
    config_file: str | None,
) -> None:
    """Run the node agent, or (with a check flag) report its readiness/liveness."""
    if felix_ready or bird_ready or felix_live or bird_live or bird6_ready:
        problems = check(
            read_status(state_dir),
            felix_ready=felix_ready,
            bird_ready=bird_ready,
            felix_live=felix_live,
            bird_live=bird_live,
            bird6_ready=bird6_ready,
        )
        for p in problems:
            click.echo(p)
        sys.exit(1 if problems else 0)
    from pycalico.node.envfile import NodeConfigError, effective_env

    try:
        env = effective_env(os.environ, config_file)
    except NodeConfigError as e:
        click.echo(f"calico-node: invalid configuration: {e}", err=True)
        sys.exit(1)
    if ctx.get_parameter_source("state_dir") != click.core.ParameterSource.DEFAULT:
        env["CALICO_NODE_STATE_DIR"] = state_dir
    env.setdefault("CALICO_NODE_STATE_DIR", state_dir)
    sys.exit(run_agent(env))


@click.command("check-config")
@click.option("--config-file", envvar="CALICO_NODE_CONFIG", default=None,
              help="Settings file to check [default: /etc/calico/calico-node.env].")  # fmt: skip
def check_config(config_file: str | None) -> None:
    """Validate the settings file (and environment) calico-node would start with."""
    from pycalico.node.envfile import DEFAULT_CONFIG_FILE, NodeConfigError, load

    path = config_file or DEFAULT_CONFIG_FILE
    try:
        settings = load(path)
    except NodeConfigError as e:
        click.echo(f"invalid: {e}", err=True)
        sys.exit(1)
    click.echo(f"{path}: {len(settings)} settings, valid")


COMMANDS: list[click.Command] = [run, check_config]
