"""calicoctl command family ``node``: ``calicoctl node status``, ``checksystem``, ``diags``.

Owns: the Calico-compatible status report — whether the agent runs (a process whose command
line has ``calico-node`` with ``run``/``felix``, or ``calico-felix``), then IPv4 and IPv6 BGP
peer tables read from BIRD's control socket (``show protocols``; rows named
``Mesh_``/``Node_``/``Global_``), formatted like Calico's go-pretty tables.

Invariants: read-only; talks only to the local BIRD socket (``--bird-socket``, env
``CALICO_BIRD_SOCKET``, default ``/var/run/calico/bird.ctl``). pycalico runs one BIRD 2 for
both families, so both tables come from the same socket (the family is read from the peer
name). Exit codes: 0 ok, 1 not root / agent not running.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import click

from pycalico.bgp.control import BirdControl, ProtocolRow
from pycalico.bgp.errors import BirdControlError
from pycalico.bgp.peers import peer_rows

DEFAULT_BIRD_SOCKET = "/var/run/calico/bird.ctl"


def calico_process_running(proc_root: str = "/proc") -> bool:
    """True if a process is the agent (``calico-node run``/``-felix``, ``calico-felix``)."""
    me = os.getpid()
    for entry in os.listdir(proc_root):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(os.path.join(proc_root, entry, "cmdline"), "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if is_calico_agent(args):
            return True
    return False


def is_calico_agent(args: Sequence[str]) -> bool:
    text = [os.path.basename(a) for a in args[:1]] + list(args[1:])
    if any(a.endswith("calico-felix") for a in text):
        return True
    if any("calico-node" in a for a in args):
        return any(a in ("run", "felix", "-felix", "--felix") for a in args)
    return False


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """go-pretty style box table: centred upper-case headers, left-aligned cells."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def centre(text: str, w: int) -> str:
        pad = w - len(text)
        return " " * (pad // 2) + text + " " * (pad - pad // 2)

    lines = [
        sep,
        "| "
        + " | ".join(centre(h.upper(), w) for h, w in zip(headers, widths, strict=True))
        + " |",
        sep,
    ]
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    lines.append(sep)
    return "\n".join(lines)


HEADERS = ("Peer address", "Peer type", "State", "Since", "Info")


def status_report(rows: list[ProtocolRow] | None) -> str:
    """The text after "Calico process is running." (``rows`` None = BIRD not running)."""
    if rows is None:
        return (
            "\nThe BGP backend process (BIRD) is not running.\n"
            "INFO: BIRDv4 process: 'bird' is not running."
        )
    parts = []
    for v in (4, 6):
        table = peer_rows(rows, v)
        parts.append(f"\nIPv{v} BGP status")
        parts.append(render_table(HEADERS, table) if table else f"No IPv{v} peers found.")
    return "\n".join(parts)


@click.group()
def node() -> None:
    """Calico node management (status, checksystem, diags)."""


@node.command()
@click.option(
    "--bird-socket",
    envvar="CALICO_BIRD_SOCKET",
    default=DEFAULT_BIRD_SOCKET,
    show_default=True,
    help="BIRD control socket.",
)
def status(bird_socket: str) -> None:
    """Show the status of the Calico agent and its BGP sessions."""
    if os.geteuid() != 0:
        click.echo("This command must be run as root.", err=True)
        raise SystemExit(1)
    if not calico_process_running():
        click.echo("Calico process is not running.")
        raise SystemExit(1)
    click.echo("Calico process is running.")
    try:
        rows: list[ProtocolRow] | None = BirdControl(bird_socket).show_protocols()
    except BirdControlError:
        rows = None
    click.echo(status_report(rows))
    click.echo()


@node.command()
@click.option("--kernel-config", "-f", default=None, help="Kernel config file to read instead "
              "of /proc/config.gz, /boot/config-<release>, ...")  # fmt: skip
def checksystem(kernel_config: str | None) -> None:
    """Verify this host can run a pycalico node (kernel, modules, programs)."""
    from pycalico.system.hostcheck import check_host, format_report

    report = check_host(kernel_config)
    click.echo(format_report(report))
    raise SystemExit(0 if report.ok else 1)


@node.command()
@click.option(
    "--log-dir",
    default="/var/log/calico",
    show_default=True,
    help="Directory whose log files are collected (their last 4 MiB each).",
)
@click.option(
    "--state-dir",
    envvar="CALICO_NODE_STATE_DIR",
    default="/var/run/calico",
    show_default=True,
    help="calico-node's state directory (status.json, bird.cfg).",
)
@click.option(
    "--bird-socket",
    envvar="CALICO_BIRD_SOCKET",
    default=None,
    help="BIRD control socket (default: <state-dir>/bird.ctl).",
)
@click.option("--output", "-o", default=None,
              help="Bundle path (default /tmp/calico-diags-<time>.tar.gz).")  # fmt: skip
def diags(log_dir: str, state_dir: str, bird_socket: str | None, output: str | None) -> None:
    """Gather a diagnostics bundle for this node (secrets redacted)."""
    from pycalico.diag.bundle import DiagsError, DiagsOptions, collect, write_bundle
    from pycalico.system.process import SubprocessRunner

    click.echo("Collecting diagnostics")
    opts = DiagsOptions(state_dir=state_dir, log_dir=log_dir, bird_socket=bird_socket)
    files = collect(SubprocessRunner(), opts, progress=lambda m: click.echo(f"  {m}", err=True))
    try:
        path = write_bundle(files, output)
    except DiagsError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(1) from e
    missing = files["errors.txt"].decode().strip()
    if missing != "none":
        click.echo(f"Some items could not be collected (see errors.txt):\n{missing}", err=True)
    click.echo(f"Diags saved to {path}")


COMMANDS: list[click.Command] = [node]
