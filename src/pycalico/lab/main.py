"""calico-lab: a whole multi-node pycalico cluster on one machine, in network namespaces.

Every command takes ``--name`` (default ``lab``); all state lives under
``$CALICO_LAB_DIR/<name>`` (default ``/var/lib/calico-lab``). Errors print one line and exit 1.
Families: ``up``/``down``/``status``, ``pod add|del``, with ``--runtime docker|podman``
``run`` (a real container), ``docker`` (the node's engine client) and ``engine restart``,
``probe``/``matrix``, ``apply``/``calicoctl``/``env``, ``exec`` (node, pod, router,
underlay, tor), ``node stop|start|kill|restart``, ``etcd stop|start`` and ``tor`` (vtysh
on the FRR router).
``up --dual-stack`` adds IPv6 everywhere (underlay, pools, pods); ``probe``/``matrix
--ip-version 6`` then probe the pods' v6 addresses (docs/dual-stack.md).
A failed ``up`` prints why (per node: status errors, BGP sessions, log tail) and keeps the
logs in ``<lab dir>.failed/``. Commands may run in parallel (the lab state is locked, see
:mod:`pycalico.lab.state`). Every node serves health and metrics as a real node does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from pycalico.errors import CalicoError
from pycalico.flows.options import filter_options
from pycalico.lab import cluster, engine, pods
from pycalico.lab import nodes as nodemod
from pycalico.lab.cliutil import (
    errors_to_exit,
    ip_version_option,
    load,
    name_option,
    run_attached,
    say,
)
from pycalico.lab.netns import LabError, in_ns, pid_alive
from pycalico.lab.probe import format_matrix, matrix, matrix_pods, parse_ports, probe
from pycalico.lab.state import LabState


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Build and drive a multi-node pycalico cluster in network namespaces.

    Every node's calico-node serves health and Prometheus metrics as on a real node, inside
    the node's namespace:

    \b
      calico-lab exec node1 curl -s localhost:9099/readiness   (also /liveness)
      calico-lab exec node1 curl -s localhost:9091/metrics
    """


@cli.command()
@name_option
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 60))
@click.option(
    "--encap",
    default="none",
    show_default=True,
    type=click.Choice(sorted(nodemod.ENCAP_MODES)),
)
@click.option("--subnets", default=1, show_default=True, type=click.IntRange(1, 2))
@click.option("--route-reflectors", default=0, show_default=True, type=click.IntRange(0, 2))
@click.option("--datastore", default="sqlite", type=click.Choice(["sqlite", "etcd"]))
@click.option("--pool", default="10.244.0.0/16", show_default=True, help="IPv4 pool CIDR.")
@click.option(
    "--dual-stack",
    is_flag=True,
    help="IPv4 and IPv6: v6 underlay (fd00:198:18::/48), IPv6 pool, every pod gets both.",
)
@click.option(
    "--pool6", default="fd00:10:244::/48", show_default=True, help="IPv6 pool (--dual-stack)."
)
@click.option("--tor", is_flag=True, help="Add an FRR top-of-rack router peering over eBGP.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for ready.")
@click.option(
    "--runtime",
    default="netns",
    show_default=True,
    type=click.Choice(list(engine.RUNTIMES)),
    help="Pods as bare namespaces; docker: one dockerd per node; podman: podman per node.",
)
@errors_to_exit
def up(
    name: str,
    nodes: int,
    encap: str,
    subnets: int,
    route_reflectors: int,
    datastore: str,
    pool: str,
    dual_stack: bool,
    pool6: str,
    tor: bool,
    timeout: float,
    runtime: str,
) -> None:
    """Create the lab and start calico-node on every node; returns when all are ready."""
    try:
        cluster.up(
            name,
            nodes,
            encap,
            subnets,
            route_reflectors,
            datastore,
            pool,
            tor,
            timeout,
            say,
            runtime,
            pool6 if dual_stack else "",
        )
    except BaseException:
        kept = cluster.preserve_logs(name)
        where = f"; logs kept in {kept}" if kept else ""
        click.echo(f"calico-lab: up failed; removing what was created{where}", err=True)
        cluster.down(name, lambda _m: None)
        raise


@cli.command()
@name_option
@errors_to_exit
def down(name: str) -> None:
    """Stop everything the lab started and delete its namespaces and directory."""
    cluster.down(name, say)


@cli.group()
def pod() -> None:
    """Add or delete pods (network namespaces wired by the real CNI plugin)."""


@pod.command("add")
@click.argument("node")
@click.argument("key", metavar="NS/NAME")
@click.option("--labels", default="", help="k=v,k2=v2")
@click.option("--serviceaccount", default="", help="Service account name.")
@click.option("--ports", default="80/TCP,80/UDP,81/TCP,81/UDP", show_default=True)
@click.option(
    "--annotation",
    "annotations",
    multiple=True,
    metavar="K=V",
    help="A pod annotation (repeatable), e.g. qos.projectcalico.org/ingressBandwidth=10M.",
)
@name_option
@errors_to_exit
def pod_add(
    node: str,
    key: str,
    labels: str,
    serviceaccount: str,
    ports: str,
    annotations: tuple[str, ...],
    name: str,
) -> None:
    """Create pod NS/NAME on NODE and start its servers on PORTS."""
    state = load(name)
    label_map = dict(kv.split("=", 1) for kv in labels.split(",") if kv)
    port_list = [p.strip().upper() for p in ports.split(",") if p.strip()]
    notes = {k: v for k, v in pods.parse_annotations(annotations).items() if v is not None}
    p = pods.add_pod(state, node, key, label_map, serviceaccount, port_list, notes)
    say(f"pod {p.key} on {node}: {', '.join(p.ips)}")


@pod.command("annotate")
@click.argument("key", metavar="NS/NAME")
@click.argument("annotations", nargs=-1, required=True, metavar="K=V|K-...")
@name_option
@errors_to_exit
def pod_annotate(key: str, annotations: tuple[str, ...], name: str) -> None:
    """Set (K=V) or remove (K-) annotations of pod NS/NAME, live: its WorkloadEndpoint's
    qosControls follow its qos.projectcalico.org/* annotations."""
    notes = pods.annotate_pod(load(name), key, pods.parse_annotations(annotations))
    say(f"pod {key}: " + (", ".join(f"{k}={v}" for k, v in sorted(notes.items())) or "-"))


@pod.command("del")
@click.argument("key", metavar="NS/NAME")
@name_option
@errors_to_exit
def pod_del(key: str, name: str) -> None:
    """Delete pod NS/NAME (CNI DEL, then its namespace)."""
    pods.delete_pod(load(name), key)
    say(f"pod {key} deleted")


def _ctl_argv(state: LabState, args: list[str]) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env.update(state.datastore_env())
    argv = [str(Path(sys.executable).parent / "calicoctl"), *args]
    if state.datastore_netns:
        argv = in_ns(state.datastore_netns, argv)
    return argv, env


@cli.command("apply")
@click.option("-f", "--filename", required=True)
@name_option
@errors_to_exit
def apply_cmd(filename: str, name: str) -> None:
    """calicoctl apply -f FILE against the lab's datastore."""
    state = load(name)
    data = sys.stdin.read() if filename == "-" else None
    argv, env = _ctl_argv(state, ["apply", "-f", filename])
    run_attached(argv, env=env, input=data)


@cli.command("calicoctl", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@name_option
@errors_to_exit
def calicoctl_cmd(args: tuple[str, ...], name: str) -> None:
    """Run calicoctl ARGS against the lab's datastore."""
    argv, env = _ctl_argv(load(name), list(args))
    run_attached(argv, env=env)


@cli.command()
@name_option
@errors_to_exit
def env(name: str) -> None:
    """Print the exports that point calicoctl at the lab's datastore."""
    state = load(name)
    for k, v in state.datastore_env().items():
        click.echo(f"export {k}={v}")
    if state.datastore_netns:
        click.echo(
            f"# etcd listens on the lab underlay: run calicoctl with "
            f"'ip netns exec {state.datastore_netns} calicoctl ...' or "
            f"'calico-lab calicoctl ...'"
        )


def _target_netns(state: LabState, target: str) -> str:
    if "/" in target:
        return state.pod(target).netns
    special = {"router": "rt", "underlay": "ul", "tor": "tor"}
    if target in special:
        return state.prefix + special[target]
    return state.node(target).netns


@cli.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@name_option
@errors_to_exit
def exec_cmd(target: str, command: tuple[str, ...], name: str) -> None:
    """Run COMMAND in a node, pod (NS/NAME), router, underlay or tor namespace."""
    state = load(name)
    env = dict(os.environ)
    env.update(state.datastore_env())
    run_attached(in_ns(_target_netns(state, target), list(command)), env=env)


@cli.command("probe")
@click.argument("src", metavar="NS/A")
@click.argument("dst", metavar="NS/B")
@click.argument("port_proto", metavar="PORT/PROTO")
@click.option("--timeout", default=1.0, show_default=True)
@ip_version_option
@name_option
@errors_to_exit
def probe_cmd(
    src: str, dst: str, port_proto: str, timeout: float, ip_version: int, name: str
) -> None:
    """Exit 0 if NS/A reaches NS/B on PORT/PROTO, else 1."""
    state = load(name)
    ((port, proto),) = parse_ports(port_proto)
    target = state.pod(dst).address(ip_version)
    if target is None:
        raise LabError(f"pod {dst} has no IPv{ip_version} address")
    ok = probe(state.pod(src), target, port, proto, timeout)
    say(f"{src} -> {dst} ({target}) {port}/{proto}: {'reachable' if ok else 'unreachable'}")
    sys.exit(0 if ok else 1)


@cli.command("matrix")
@click.option("--ports", default="80/TCP", show_default=True)
@click.option("-o", "--output", default="table", type=click.Choice(["table", "json"]))
@click.option("--timeout", default=1.0, show_default=True)
@ip_version_option
@name_option
@errors_to_exit
def matrix_cmd(ports: str, output: str, timeout: float, ip_version: int, name: str) -> None:
    """Live reachability of every ordered pod pair over one IP family (same JSON as
    calicoctl policy matrix --ip-version)."""
    state = load(name)
    probes = matrix(state, parse_ports(ports), timeout, version=ip_version)
    if output == "json":
        click.echo(json.dumps({"probes": [
            {"from": p.src, "to": p.dst, "port": p.port, "protocol": p.protocol,
             "verdict": p.verdict} for p in probes
        ]}, indent=2))  # fmt: skip
        return
    click.echo(format_matrix([p.key for p in matrix_pods(state, ip_version)], probes))


@cli.command()
@click.option("-o", "--output", default="table", type=click.Choice(["table", "json"]))
@name_option
@errors_to_exit
def status(output: str, name: str) -> None:
    """Nodes (readiness, BGP sessions) and pods of the lab."""
    state = load(name)
    rows = cluster.node_status_rows(state)
    pod_rows = [{"name": p.key, "node": p.node, "ip": p.address(4) or p.address(6) or "",
                 **({"ip6": p.address(6)} if p.address(6) else {})}
                for p in state.pods]  # fmt: skip
    out: dict[str, Any] = {"nodes": rows, "pods": pod_rows}
    if state.tor:
        from pycalico.lab import tor as tormod

        out["tor"] = tormod.summary(state)
    if output == "json":
        click.echo(json.dumps(out, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<8} {r['ip']:<15} pid={r['pid']:<7} ready={r['ready']}")
        for s in r["bgp"]:  # type: ignore[attr-defined]
            click.echo(
                f"    {s.get('peer', ''):<15} {s.get('type', ''):<18} "
                f"{s.get('state', ''):<6} {s.get('info', '')}"
            )
    if "tor" in out:
        t = out["tor"]
        click.echo(f"tor      {t['ip']:<15} AS {t['as']} {t.get('error', '')}")
        for ip, st in t["peers"].items():
            click.echo(f"    {ip:<15} {'ebgp':<18} {st}")
    busy = {p.key for p in state.pods if p.busy}
    for p in pod_rows:
        note = " (being added or deleted)" if p["name"] in busy else ""
        ip6 = f" {p['ip6']}" if "ip6" in p else ""
        click.echo(f"pod {p['name']:<20} {p['node']:<8} {p['ip']}{ip6}{note}")


@cli.group("node")
def node_group() -> None:
    """Stop, start, kill -9 or restart a node's calico-node (resilience testing)."""


def _node_op(op: str, node_name: str, name: str, timeout: float) -> None:
    state = load(name)
    node = state.node(node_name)
    if op == "stop" or (op == "restart" and pid_alive(node.pid)):
        nodemod.stop(state, node)
        say(f"calico-node on {node_name} stopped (dataplane left in place)")
    elif op == "kill":
        nodemod.kill(state, node)
        say(f"calico-node on {node_name} killed with SIGKILL (BIRD and dataplane left)")
    if op in ("start", "restart"):
        if pid_alive(node.pid):
            raise CalicoError(f"calico-node on {node_name} is already running (pid {node.pid})")
        nodemod.start(state, node)
        if timeout > 0:
            nodemod.wait_ready(state, [node], timeout)
            say(f"calico-node on {node_name} started (pid {node.pid}) and ready")
        else:
            say(f"calico-node on {node_name} started (pid {node.pid})")


def _node_command(op: str, doc: str) -> None:
    @node_group.command(op, help=doc)
    @click.argument("node")
    @click.option(
        "--timeout", default=60.0, show_default=True, help="Seconds to wait for ready (0: no wait)."
    )
    @name_option
    @errors_to_exit
    def cmd(node: str, timeout: float, name: str) -> None:
        _node_op(op, node, name, timeout)


_node_command("stop", "Stop NODE's calico-node gracefully (SIGTERM).")
_node_command("start", "Start NODE's calico-node and wait until it is ready.")
_node_command("kill", "SIGKILL NODE's calico-node (its BIRD keeps running).")
_node_command("restart", "Stop, then start NODE's calico-node and wait until it is ready.")


@cli.group("etcd")
def etcd_group() -> None:
    """Stop or start the etcd of a ``--datastore etcd`` lab."""


@etcd_group.command("stop")
@name_option
@errors_to_exit
def etcd_stop(name: str) -> None:
    """Stop the lab's etcd (its data stays)."""
    cluster.stop_etcd(load(name))
    say("etcd stopped")


@etcd_group.command("start")
@name_option
@errors_to_exit
def etcd_start(name: str) -> None:
    """Start the lab's etcd again on its data and wait until it is healthy."""
    state = load(name)
    cluster.start_etcd(state)
    say(f"etcd started (pid {state.etcd_pid})")


@cli.command("ui", context_settings={"ignore_unknown_options": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@name_option
@errors_to_exit
def ui_cmd(args: tuple[str, ...], name: str) -> None:
    """Serve the web console on the lab (calicoctl ui --lab NAME; ARGS pass through)."""
    state = load(name)
    if state.datastore_netns:
        raise CalicoError("calico-lab ui: labs with --datastore etcd are not supported yet")
    env = dict(os.environ)
    env.update(state.datastore_env())

    def interrupt(signum: int, frame: Any) -> NoReturn:
        raise KeyboardInterrupt  # subprocess.run then kills the console: none outlives us

    signal.signal(signal.SIGTERM, interrupt)
    run_attached([sys.executable, "-m", "pycalico.ui", "--lab", name, *args], env=env)


@cli.command("tor", context_settings={"ignore_unknown_options": True})
@click.argument("commands", nargs=-1)
@name_option
@errors_to_exit
def tor_cmd(commands: tuple[str, ...], name: str) -> None:
    """Run vtysh COMMANDS on the lab's FRR top-of-rack router (default: show bgp summary)."""
    from pycalico.lab import tor as tormod

    state = load(name)
    if not state.tor:
        raise CalicoError(f"lab {name!r} has no ToR (calico-lab up --tor)")
    argv = tormod.vtysh_argv(state, *(commands or ("show bgp summary",)))
    run_attached(argv)


@cli.command("flows")
@filter_options
@name_option
@errors_to_exit
def flows_cmd(
    src: str, dst: str, action: str | None, policy: str, since: str, follow: bool,
    output: str, name: str,
) -> None:  # fmt: skip
    """Flow logs of every lab node: each flow's deciding tier/policy/rule (calicoctl's
    filters and output formats)."""
    from pycalico.flows.cli import make_filter, print_flows
    from pycalico.lab.flows import lab_records

    state = load(name)
    flt = make_filter(src, dst, action, policy, since)
    print_flows(lambda: lab_records(state, flt), follow, output)


def main() -> None:
    cli()


def _add_engine_commands() -> None:
    from pycalico.lab.engine_cli import docker_cmd, engine_group, run_cmd

    for cmd in (run_cmd, docker_cmd, engine_group):
        cli.add_command(cmd)


_add_engine_commands()
