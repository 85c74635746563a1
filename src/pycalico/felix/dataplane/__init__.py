"""pycalico.felix.dataplane: side effects only — every driver of Felix's one owner loop.

Public API:
- :class:`NftTable` — ``set_desired(TableSpec)``, ``request_resync()``, ``apply()``;
  counters in ``.stats``; :func:`apply_tables` applies several in one transaction.
- :class:`NftRunner` (protocol), :class:`SubprocessNftRunner`, :class:`FakeNftRunner`,
  :class:`NftError`.
- :class:`TableState`, :func:`plan`, :func:`render_ops`, the op types, :func:`parse_table`.

Route side (import the submodules; not re-exported here): :mod:`.routing`
(:class:`RouteDataplane`, the facade), :mod:`.deltatracker`, and the drivers :mod:`.routes`,
:mod:`.vxlan`, :mod:`.ipip` (over :mod:`.uipip`, the userspace IPIP tunnel), :mod:`.sysctls`,
:mod:`.natout`, :mod:`.mtu`. Drivers reach the kernel only through :mod:`pycalico.system`.
"""

from pycalico.felix.dataplane.ops import (
    AddChain,
    AddElements,
    AddSet,
    DeleteChain,
    DeleteElements,
    DeleteSet,
    DeleteTable,
    FlushChain,
    Op,
    ReplaceTable,
    TableState,
    WriteChain,
    apply_to_state,
    plan,
    render_ops,
)
from pycalico.felix.dataplane.readback import parse_table
from pycalico.felix.dataplane.runner import (
    FakeNftRunner,
    NftError,
    NftRunner,
    SubprocessNftRunner,
)
from pycalico.felix.dataplane.table import NftTable, TableStats, apply_tables

__all__ = [
    "AddChain",
    "AddElements",
    "AddSet",
    "DeleteChain",
    "DeleteElements",
    "DeleteSet",
    "DeleteTable",
    "FakeNftRunner",
    "FlushChain",
    "NftError",
    "NftRunner",
    "NftTable",
    "Op",
    "ReplaceTable",
    "SubprocessNftRunner",
    "TableState",
    "TableStats",
    "WriteChain",
    "apply_tables",
    "apply_to_state",
    "parse_table",
    "plan",
    "render_ops",
]
