"""``calico-node uninstall``: remove what Felix programmed into this host's kernel.

Owns the list of kernel objects an uninstall removes - everything Felix creates and a
restart keeps (a SIGTERM or SIGKILL of the agent leaves them on purpose: the next agent
adopts them with no window, and the ``calico-guard`` table must keep failing closed while no
agent runs):

- the nft tables ``calico``, ``calico-guard`` (the fail-closed guard: it goes together with
  the main table, in the same transaction, so there is never a main table without its guard
  nor a guard left behind dropping new workload traffic forever) and ``calico-nat``, both
  families, in ONE atomic ``nft -f`` transaction;
- the devices ``vxlan.calico``, ``vxlan-v6.calico`` and ``tunl0`` (their VTEP neighbours,
  FDB entries and routes go with them);
- the routes of Felix's protocol (80), IPv4 and IPv6;
- the pod-bandwidth IFB devices ``bwcali*`` (:mod:`pycalico.felix.dataplane.qos`; the TBF
  qdiscs on workload veths go with the veths);
- the tc guard (:mod:`pycalico.felix.dataplane.tcguard`): the ``clsact`` qdisc of every
  ``cali*`` interface (the guard and the QoS redirect; without the ``calico`` table the
  guard would drop all forwarded workload traffic) and the ``calico-guard-*`` filters of
  every other interface (only those: a clsact there may hold others' filters).

Invariants: idempotent (absent objects are not errors; a second run removes nothing); it
touches nothing else (other tables, BIRD's routes, workload interfaces - the CNI plugin owns
those); run it after stopping the agent (a running agent re-creates what it owns within
seconds). Exit 0 when everything is gone, 1 with the failing command's error otherwise.
"""

from __future__ import annotations

import click

from pycalico.felix.calc.routetypes import IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE
from pycalico.felix.dataplane.natout import TABLE_NAME as NAT_TABLE
from pycalico.felix.dataplane.qos import IFB_PREFIX
from pycalico.felix.rules.guard import GUARD_TABLE
from pycalico.system.process import ProcessRunner, SubprocessRunner
from pycalico.system.tc import TcError, TcKernel

MAIN_TABLE = "calico"
TABLES = (MAIN_TABLE, GUARD_TABLE, NAT_TABLE)
DEVICES = (VXLAN_DEVICE, VXLAN_V6_DEVICE, IPIP_DEVICE)
ROUTE_PROTO = "80"


def nft_script() -> str:
    """One transaction deleting every table of :data:`TABLES` in both families (``add``
    first, so an absent table is no error)."""
    lines = []
    for fam in ("ip", "ip6"):
        for t in TABLES:
            lines += [f"add table {fam} {t}", f"delete table {fam} {t}"]
    return "\n".join(lines) + "\n"


def uninstall(runner: ProcessRunner) -> list[str]:
    """Remove Felix's kernel state; returns the errors (empty: all gone)."""
    errors = []
    try:  # the tc guard first: it must not outlive the calico table that feeds it its mark
        tc = TcKernel(runner)
        for dev in tc.list_links():
            if dev.startswith("cali"):
                tc.del_guard(dev, qdisc=True)
            elif dev != "lo":
                tc.del_guard(dev)
    except TcError as e:
        errors.append(str(e))
    r = runner.run(["nft", "-f", "-"], input=nft_script())
    if r.returncode != 0:
        errors.append(f"nft: {r.stderr.strip()}")
    for dev in DEVICES:
        if runner.run(["ip", "link", "show", "dev", dev]).returncode == 0:
            r = runner.run(["ip", "link", "del", "dev", dev])
            # (tunl0 may be the kernel's own ipip fallback device: not ours, not deletable)
            if r.returncode != 0 and "not supported" not in r.stderr:
                errors.append(f"ip link del {dev}: {r.stderr.strip()}")
    try:
        for ifb in tc.list_ifbs():
            if ifb.startswith(IFB_PREFIX):
                tc.del_link(ifb)
    except TcError as e:
        errors.append(str(e))
    for fam in ("-4", "-6"):
        r = runner.run(["ip", fam, "route", "flush", "proto", ROUTE_PROTO])
        if r.returncode != 0 and "Nothing to flush" not in r.stderr:
            errors.append(f"ip {fam} route flush proto {ROUTE_PROTO}: {r.stderr.strip()}")
    return errors


@click.command("uninstall")
def uninstall_cmd() -> None:
    """Remove Felix's nft tables (calico, calico-guard, calico-nat), tc guard, devices and
    proto-80 routes from this host (stop the agent first)."""
    errors = uninstall(SubprocessRunner())
    for e in errors:
        click.echo(e, err=True)
    if errors:
        raise SystemExit(1)
    click.echo(
        "Removed the calico, calico-guard and calico-nat tables, the tc guard, Felix's devices "
        "and routes."
    )


COMMANDS: list[click.Command] = [uninstall_cmd]
