"""Transaction operations on one nft table, the delta planner, and their nft text form.

Owns: the :data:`Op` types a driver sends through an :class:`~.runner.NftRunner`,
:class:`TableState` (what a table holds, as far as reconciliation cares: rule hashes per
chain, shape + elements per set/map), :func:`plan` (actual -> desired as a minimal op list)
and :func:`render_ops` (ops -> one ``nft -f -`` script).

Invariants of :func:`plan`'s ordering (every intermediate state inside the one transaction
is valid for the kernel): new sets/maps and chains are declared first; set elements are
removed before added (collapsed CIDRs may merge); chains are (re)written next; verdict map
elements change after the chains they point to exist; chains to delete are flushed all
first, then deleted (they may jump to each other); sets/maps are deleted last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pycalico.felix.rules.model import Chain, NftSet, TableSpec, element_key

SetShape = tuple[str, str, tuple[str, ...], str | None]


@dataclass(frozen=True)
class ReplaceTable:
    """Atomically replace the whole table (create it if missing)."""

    spec: TableSpec


@dataclass(frozen=True)
class DeleteTable:
    pass


@dataclass(frozen=True)
class AddChain:
    """Declare a chain (no rules)."""

    chain: Chain


@dataclass(frozen=True)
class WriteChain:
    """Flush a chain and add all its rules."""

    chain: Chain


@dataclass(frozen=True)
class FlushChain:
    name: str


@dataclass(frozen=True)
class DeleteChain:
    name: str


@dataclass(frozen=True)
class AddSet:
    """Declare a set or map and add its elements."""

    set: NftSet


@dataclass(frozen=True)
class AddElements:
    name: str
    kind: str  # "set" | "map"
    elements: tuple[str, ...]


@dataclass(frozen=True)
class DeleteElements:
    name: str
    kind: str
    elements: tuple[str, ...]


@dataclass(frozen=True)
class DeleteSet:
    name: str
    kind: str


Op = (
    ReplaceTable
    | DeleteTable
    | AddChain
    | WriteChain
    | FlushChain
    | DeleteChain
    | AddSet
    | AddElements
    | DeleteElements
    | DeleteSet
)


@dataclass
class TableState:
    """A table's reconciliation-relevant content (desired, or read back from the kernel)."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sets: dict[str, tuple[SetShape, frozenset[str]]] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: TableSpec) -> TableState:
        return cls(
            {n: c.hashes for n, c in spec.chains.items()},
            {n: (s.shape(), s.elements) for n, s in spec.sets.items()},
        )


def plan(actual: TableState, desired: TableSpec) -> list[Op] | None:
    """Ops turning ``actual`` into ``desired``; None when only a full replace can do it
    (a set/map changed type)."""
    ops: list[Op] = []
    set_adds: list[Op] = []
    elem_ops: list[Op] = []
    map_ops: list[Op] = []
    for name in sorted(desired.sets):
        want = desired.sets[name]
        have = actual.sets.get(name)
        if have is None:
            if want.map_to:
                set_adds.append(AddSet(NftSet(want.name, want.type, frozenset(), want.flags,
                                              want.map_to)))  # fmt: skip
                if want.elements:
                    map_ops.append(AddElements(name, "map", tuple(sorted(want.elements))))
            else:
                set_adds.append(AddSet(want))
            continue
        shape, elems = have
        if shape != want.shape():
            return None
        if elems == want.elements:
            continue
        gone = elems - want.elements
        new = want.elements - elems
        target = map_ops if want.map_to else elem_ops
        if gone:
            keys = sorted(element_key(e) for e in gone) if want.map_to else sorted(gone)
            target.append(DeleteElements(name, want.kind, tuple(keys)))
        if new:
            target.append(AddElements(name, want.kind, tuple(sorted(new))))
    ops += set_adds
    writes: list[Op] = []
    for name in sorted(desired.chains):
        chain = desired.chains[name]
        have_hashes = actual.chains.get(name)
        if have_hashes is None:
            ops.append(AddChain(chain))
            if chain.rules:
                writes.append(WriteChain(chain))
        elif have_hashes != chain.hashes:
            writes.append(WriteChain(chain))
    ops += elem_ops + writes + map_ops
    gone_chains = sorted(set(actual.chains) - set(desired.chains))
    ops += [FlushChain(n) for n in gone_chains]
    # Gone sets and maps go before gone chains: a verdict map's elements name chains, so a
    # chain cannot be deleted while a map that jumps to it exists (the flushes above already
    # dropped every rule that referenced a gone set).
    for name in sorted(set(actual.sets) - set(desired.sets)):
        ops.append(DeleteSet(name, "map" if actual.sets[name][0][3] else "set"))
    ops += [DeleteChain(n) for n in gone_chains]
    return ops


def apply_to_state(state: TableState, ops: Sequence[Op]) -> TableState:
    """The state after ``ops`` (what the driver believes once a transaction succeeded)."""
    chains = dict(state.chains)
    sets = dict(state.sets)
    for op in ops:
        if isinstance(op, ReplaceTable):
            new = TableState.from_spec(op.spec)
            chains, sets = new.chains, new.sets
        elif isinstance(op, DeleteTable):
            chains, sets = {}, {}
        elif isinstance(op, AddChain):
            chains.setdefault(op.chain.name, ())
        elif isinstance(op, WriteChain):
            chains[op.chain.name] = op.chain.hashes
        elif isinstance(op, FlushChain):
            chains[op.name] = ()
        elif isinstance(op, DeleteChain):
            chains.pop(op.name, None)
        elif isinstance(op, AddSet):
            sets[op.set.name] = (op.set.shape(), op.set.elements)
        elif isinstance(op, AddElements):
            shape, elems = sets[op.name]
            sets[op.name] = (shape, elems | frozenset(op.elements))
        elif isinstance(op, DeleteElements):
            shape, elems = sets[op.name]
            keys = set(op.elements)
            sets[op.name] = (shape, frozenset(e for e in elems if element_key(e) not in keys))
        elif isinstance(op, DeleteSet):
            sets.pop(op.name, None)
    return TableState(chains, sets)


def render_ops(family: str, table: str, ops: Sequence[Op]) -> str:
    """One ``nft -f`` script (one atomic transaction) for ``ops``."""
    t = f"{family} {table}"
    out: list[str] = []
    for op in ops:
        if isinstance(op, ReplaceTable):
            out += [f"add table {t}", f"delete table {t}", op.spec.text()]
        elif isinstance(op, DeleteTable):
            out += [f"add table {t}", f"delete table {t}"]
        elif isinstance(op, AddChain):
            out.append(f"add table {t}")
            out.append(op.chain.decl(family, table))
        elif isinstance(op, WriteChain):
            out.append(f"flush chain {t} {op.chain.name}")
            out += [f"add rule {t} {op.chain.name} {r.text()}" for r in op.chain.rules]
        elif isinstance(op, FlushChain):
            out.append(f"flush chain {t} {op.name}")
        elif isinstance(op, DeleteChain):
            out.append(f"delete chain {t} {op.name}")
        elif isinstance(op, AddSet):
            out.append(f"add table {t}")
            out.append(op.set.decl(family, table))
            if op.set.elements:
                elems = ", ".join(sorted(op.set.elements))
                out.append(f"add element {t} {op.set.name} {{ {elems} }}")
        elif isinstance(op, AddElements):
            out.append(f"add element {t} {op.name} {{ {', '.join(op.elements)} }}")
        elif isinstance(op, DeleteElements):
            out.append(f"delete element {t} {op.name} {{ {', '.join(op.elements)} }}")
        elif isinstance(op, DeleteSet):
            out.append(f"delete {op.kind} {t} {op.name}")
    return "\n".join(out) + "\n"
