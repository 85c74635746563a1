"""calico-lab's container-engine commands (``--runtime docker|podman`` labs): ``run`` a real
container on a node, ``docker`` (the node's engine client) and ``engine restart``.

Registered on the ``calico-lab`` group by :mod:`pycalico.lab.main`.
"""

from __future__ import annotations

import click

from pycalico.dnsconf import DEFAULT_ZONE, DNS_ADDRESS
from pycalico.errors import CalicoError
from pycalico.lab import cluster, engine
from pycalico.lab import podman as podmanrt
from pycalico.lab.cliutil import errors_to_exit, load, name_option, run_attached, say
from pycalico.lab.state import LabState


def _docker_lab(name: str, podman_ok: bool = True) -> LabState:
    state = load(name)
    want = ("docker", "podman") if podman_ok else ("docker",)
    if state.runtime not in want:
        raise CalicoError(
            f"lab {name!r} runs --runtime {state.runtime}; needs --runtime {' or '.join(want)}"
        )
    return state


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("key", metavar="NS/NAME")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--image", default=engine.IMAGE, show_default=True)
@click.option("--net", "network", default=engine.NETWORK, show_default=True)
@click.option("--labels", default="", help="k=v,k2=v2 (policy selectors see them)")
@click.option("--ip", default="", help="A specific address from the network's pool.")
@name_option
@errors_to_exit
def run_cmd(
    node: str,
    key: str,
    command: tuple[str, ...],
    image: str,
    network: str,
    labels: str,
    ip: str,
    name: str,
) -> None:
    """Run a Docker container NAME on NODE (--runtime docker): COMMAND in IMAGE on a calico
    network, labelled namespace=NS plus LABELS, names resolved by Docker and pycalico DNS."""
    state = _docker_lab(name)
    ns, _, cname = key.rpartition("/")
    if not ns or not cname:
        raise CalicoError(f"{key!r}: want NS/NAME")
    label_map = dict(kv.split("=", 1) for kv in labels.split(",") if kv)
    label_map.setdefault("namespace", ns)
    n = state.node(node)
    if state.runtime == "podman":
        pargs = ["run", "-d", "--name", cname, "--hostname", cname, "--network", podmanrt.NETWORK]
        cid = podmanrt.podman(state, n, *pargs, *(["--ip", ip] if ip else []), podmanrt.IMAGE,
                              *command)  # fmt: skip
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        got = podmanrt.podman(state, n, "inspect", "-f", fmt, cname)
        say(f"container {cname} ({cid[:12]}) on {node}: {got}")
        return
    search = f"{engine.ORCH_NAMESPACE}.{DEFAULT_ZONE}"
    args = ["run", "-d", "--name", cname, "--hostname", cname, "--net", network,
            "--dns", DNS_ADDRESS, "--dns-search", search]  # fmt: skip
    for k, v in label_map.items():
        args += ["--label", f"{engine.LABEL_PREFIX}{k}={v}"]
    if ip:
        args += ["--ip", ip]
    cid = engine.docker(state, n, *args, image, *command)
    say(f"container {cname} ({cid[:12]}) on {node}: {engine.container_ip(state, n, cname)}")


@click.command("docker", context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
@name_option
@errors_to_exit
def docker_cmd(node: str, args: tuple[str, ...], name: str) -> None:
    """Run the engine's client ARGS on NODE: docker against its dockerd (--runtime docker),
    or podman with its configuration in its network namespace (--runtime podman)."""
    state = _docker_lab(name)
    n = state.node(node)
    if state.runtime == "podman":
        r = podmanrt.root(state, n)
        run_attached(["nsenter", f"--net=/run/netns/{n.netns}", "podman", *args],
                     env=podmanrt.env(r))  # fmt: skip
    sock = engine.node_paths(state, n)[0] / "docker.sock"
    run_attached([engine.DOCKER, "-H", f"unix://{sock}", *args])


@click.group("engine")
def engine_group() -> None:
    """Stop, start or restart a node's dockerd (--runtime docker; --live-restore keeps its
    containers running meanwhile)."""


@engine_group.command("restart")
@click.argument("node")
@name_option
@errors_to_exit
def engine_restart(node: str, name: str) -> None:
    state = _docker_lab(name, podman_ok=False)
    n = state.node(node)
    cluster.stop_engine(state, n, keep_containers=True)
    cluster.start_engine(state, n)
    say(f"dockerd on {node} restarted (pid {n.engine_pid})")
