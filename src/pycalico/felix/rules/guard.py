"""The ``calico-guard`` table: fail closed while the ``calico`` table is gone (pure).

One tiny table per family, separate from the main ``calico`` table so that deleting (or
flushing the base chains of) the main table cannot remove it. Its base chains hook
forward/input/output at ``filter + 10`` (after the main table's filter chains at 0) and hold
ONE rule per workload direction: a new (or invalid/untracked) packet to or from a workload
interface (``<interfacePrefix>*``) that does not carry
:data:`~pycalico.felix.rules.policy.MARK_EVALUATED` is dropped. Only the main table's filter
base chains set that mark, so:

- main table intact: it drops what policy denies and marks what it lets through; the guard
  passes it (host endpoint traffic never matches: the guard names workload interfaces only);
- main table deleted, or a base chain flushed: nothing sets the mark; new workload traffic
  drops until Felix re-creates the table (established flows, allowed when they started,
  keep going, as Calico keeps them);
- guard deleted: the main table still enforces policy; Felix re-creates the guard.

Invariants: the spec depends only on the family and the interface prefix; it is valid for
``nft -c``; it never references the main table (tables cannot reference each other).
"""

from __future__ import annotations

from pycalico.felix.rules.model import Hook, TableSpec, make_chain
from pycalico.felix.rules.policy import MARK_EVALUATED, mark_is_clear
from pycalico.felix.rules.settings import RenderConfig

GUARD_TABLE = "calico-guard"
#: After the main table's filter base chains (priority 0).
GUARD_PRIORITY = 10
_NOT_ESTABLISHED = "ct state invalid,new,untracked"


def guard_table(family: str, cfg: RenderConfig, name: str = GUARD_TABLE) -> TableSpec:
    """The guard table of one family (``ip`` or ``ip6``)."""
    wl = f'"{cfg.interface_prefix}*"'
    unmarked = f"{_NOT_ESTABLISHED} {mark_is_clear(MARK_EVALUATED)} drop"
    chains = [
        make_chain(
            "guard-FORWARD",
            [f"iifname {wl} {unmarked}", f"oifname {wl} {unmarked}"],
            Hook("forward", GUARD_PRIORITY),
        ),
        make_chain("guard-INPUT", [f"iifname {wl} {unmarked}"], Hook("input", GUARD_PRIORITY)),
        make_chain("guard-OUTPUT", [f"oifname {wl} {unmarked}"], Hook("output", GUARD_PRIORITY)),
    ]
    return TableSpec(family, name, {c.name: c for c in chains}, {})
