"""NAT-outgoing: our own nftables table ``ip calico-nat`` (render + reconcile).

Owns exactly one table per family, ``ip calico-nat`` (``ip6 calico-nat`` for IPv6), separate
from the policy dataplane's ``calico`` table so the two owners never write each other's
objects. Contents (Calico's
``cali-nat-outgoing`` semantics):

    set masq-ipam-pools   { natOutgoing pools }       set network-ip-pools { every pool }
    [set all-hosts-net    { node IPs }  with natOutgoingExclusions: IPPoolsAndHostIPs]
    chain nat-POSTROUTING  (type nat, hook postrouting, priority srcnat + 10)
      ip saddr @masq-ipam-pools ip daddr != @network-ip-pools [ip daddr != @all-hosts-net]
        oifname != <tunnels> masquerade      (snat to <natOutgoingAddress> when set)

Traffic to other pods (destination inside any pool, or leaving by ``tunl0``/``vxlan.calico``)
is never masqueraded; traffic from a natOutgoing pool to anything else leaves with the node's
address.

Invariants: the table is replaced as a whole in one ``nft -f`` transaction (create-if-absent,
delete, re-add), so a reader never sees a half-written table; :meth:`NatOutgoing.reconcile`
re-applies only when the desired text changed or the kernel listing drifted from the listing
taken right after our last write; with no natOutgoing pool the table is removed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pycalico.errors import CalicoError
from pycalico.felix.calc.routetypes import IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE, Net
from pycalico.system.process import ProcessRunner

TABLE_FAMILY = "ip"  # "ip6" for the IPv6 instance
TABLE_NAME = "calico-nat"
MASQ_SET = "masq-ipam-pools"
POOLS_SET = "network-ip-pools"
HOSTS_SET = "all-hosts-net"


def _family(version: int) -> tuple[str, str]:
    """(nft table family, address match keyword)."""
    return ("ip", "ip") if version == 4 else ("ip6", "ip6")


class NatOutgoingError(CalicoError):
    """nft refused our table."""


def _set(name: str, nets: Sequence[Net], version: int) -> list[str]:
    typ = "ipv4_addr" if version == 4 else "ipv6_addr"
    lines = [f"  set {name} {{", f"    type {typ}; flags interval;"]
    if nets:
        elems = sorted({str(n) for n in nets}, key=lambda t: ipaddress.ip_network(t))
        lines.append("    elements = { " + ", ".join(elems) + " }")
    lines.append("  }")
    return lines


def render(
    masq_pools: Sequence[Net],
    all_pools: Sequence[Net],
    *,
    exclude_hosts: Sequence[Net] | None = None,
    snat_to: str | None = None,
    version: int = 4,
) -> str:
    """The full table definition (deterministic). ``exclude_hosts`` (natOutgoingExclusions
    ``IPPoolsAndHostIPs``) adds set ``all-hosts-net`` to the exclusions; ``snat_to``
    (natOutgoingAddress) replaces masquerade with ``snat to``."""
    tunnels = ", ".join(f'"{d}"' for d in (IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE))
    fam, ip = _family(version)
    lines = [f"table {fam} {TABLE_NAME} {{"]
    lines += _set(MASQ_SET, masq_pools, version)
    lines += _set(POOLS_SET, all_pools, version)
    match = f"{ip} saddr @{MASQ_SET} {ip} daddr != @{POOLS_SET}"
    if exclude_hosts is not None:
        lines += _set(HOSTS_SET, exclude_hosts, version)
        match += f" {ip} daddr != @{HOSTS_SET}"
    action = f"snat to {snat_to}" if snat_to else "masquerade"
    lines += [
        "  chain nat-POSTROUTING {",
        "    type nat hook postrouting priority srcnat + 10; policy accept;",
        f"    {match} oifname != {{ {tunnels} }} {action}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


class NatOutgoing:
    """Reconciles ``ip calico-nat`` in the current network namespace."""

    def __init__(self, runner: ProcessRunner, version: int = 4) -> None:
        self.runner = runner
        self.version = version
        self.family = _family(version)[0]
        self._applied: str | None = None  # desired text last written
        self._listing: str | None = None  # `nft list table` right after that write

    def _list(self) -> str | None:
        r = self.runner.run(["nft", "list", "table", self.family, TABLE_NAME], timeout=30)
        return r.stdout if r.returncode == 0 else None

    def _nft(self, script: str) -> None:
        r = self.runner.run(["nft", "-f", "-"], input=script, timeout=30)
        if r.returncode != 0:
            raise NatOutgoingError(f"nft -f ({TABLE_NAME}): {(r.stderr or r.stdout).strip()}")

    def reconcile(
        self,
        masq_pools: Sequence[Net],
        all_pools: Sequence[Net],
        *,
        exclude_hosts: Sequence[Net] | None = None,
        snat_to: str | None = None,
        check: bool = False,
    ) -> bool:
        """Make the kernel match; ``check`` compares with the kernel (periodic resync).
        Returns True when something was written."""
        want = (
            render(
                masq_pools,
                all_pools,
                exclude_hosts=exclude_hosts,
                snat_to=snat_to,
                version=self.version,
            )
            if masq_pools
            else None
        )
        if want == self._applied and not check:
            return False
        current = self._list()
        if want is None:
            if current is None:
                self._applied, self._listing = None, None
                return False
            self._nft(f"delete table {self.family} {TABLE_NAME}\n")
            self._applied, self._listing = None, None
            return True
        if want == self._applied and current is not None and current == self._listing:
            return False
        self._nft(
            f"table {self.family} {TABLE_NAME} {{}}\n"
            f"delete table {self.family} {TABLE_NAME}\n" + want
        )
        self._applied, self._listing = want, self._list()
        action = "snat to" if snat_to else "masquerade"
        if self._listing is None or action not in self._listing:
            # Changed by someone else between our commit and this read (a hand-flushed
            # chain): never take that as our state; the next reconcile rewrites the table.
            self._applied, self._listing = None, None
        return True

    def remove(self) -> None:
        if self._list() is not None:
            self._nft(f"delete table {self.family} {TABLE_NAME}\n")
        self._applied, self._listing = None, None
