"""The nft seam: :class:`NftRunner` (one transaction in, one table read back) and its
implementations — :class:`SubprocessNftRunner` (``nft -f -`` / ``nft -j list table``) and
:class:`FakeNftRunner` (in-memory kernel model for unit tests).

Invariants: a transaction is all-or-nothing (``nft -f`` is one netlink batch; the fake
applies ops to a copy and commits only on success); :meth:`NftRunner.transact_many` puts
the ops of several tables (e.g. ``calico`` and ``calico-guard`` of both families) into ONE
transaction, in the order given, so a write that must land together cannot be cut in two by
a crash; a runner only ever names the tables it is given, so tables it does not own are
never touched; errors raise :class:`NftError`.
nft is handed a complete script FILE, never a pipe: if the agent dies (SIGKILL) while
writing to a pipe, nft reads a truncated script, and a prefix that happens to parse (cut
after a line, or after ``th dport 4`` of ``th dport 40562``) would commit a mix of old and
new chains. A script file is written in full before nft starts, so nft either never runs
or runs the whole transaction. Script files are ``<tmp>/calico-nft-<pid>-*.nft``, removed
after the run; those of dead pids (left by a SIGKILL) are swept by the next runner.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pycalico.errors import CalicoError
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
    render_ops,
)
from pycalico.felix.dataplane.readback import parse_table
from pycalico.felix.rules.model import Rule, element_key
from pycalico.system.process import ProcessRunner, SubprocessRunner


class NftError(CalicoError):
    """An nft transaction or query failed."""


#: The ops of one table inside a multi-table transaction: (family, table, ops).
TablePart = tuple[str, str, Sequence[Op]]


class NftRunner(Protocol):
    def transact(self, family: str, table: str, ops: Sequence[Op]) -> None: ...

    def transact_many(self, parts: Sequence[TablePart]) -> None: ...

    def read_table(self, family: str, table: str) -> TableState | None: ...


class SubprocessNftRunner:
    """Runs the ``nft`` binary (optionally inside ``ip netns exec <netns>``)."""

    def __init__(
        self,
        process: ProcessRunner | None = None,
        nft: str = "nft",
        netns: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        # nft children die with the agent: a SIGKILLed agent's nft -f never commits after a
        # new agent started, and its nft monitor never outlives it.
        self.process = process or SubprocessRunner(die_with_parent=True)
        self.argv = ["ip", "netns", "exec", netns, nft] if netns else [nft]
        self.timeout = timeout
        self.spool = tempfile.gettempdir()
        _sweep_scripts(self.spool)

    def monitor_argv(self) -> list[str]:
        """argv of ``nft monitor`` in the same namespace (for the kernel watcher)."""
        return [*self.argv, "monitor"]

    def transact(self, family: str, table: str, ops: Sequence[Op]) -> None:
        self.transact_many([(family, table, ops)])

    def transact_many(self, parts: Sequence[TablePart]) -> None:
        parts = [p for p in parts if p[2]]
        if not parts:
            return
        script = "".join(render_ops(f, t, ops) for f, t, ops in parts)
        fd, path = tempfile.mkstemp(prefix=f"{_SCRIPT_PREFIX}{os.getpid()}-", suffix=".nft",
                                    dir=self.spool)  # fmt: skip
        try:
            with os.fdopen(fd, "w") as f:
                f.write(script)
            r = self.process.run([*self.argv, "-f", path], timeout=self.timeout)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if r.returncode != 0:
            names = ", ".join(f"{f} {t}" for f, t, _o in parts)
            raise NftError(f"nft -f (table {names}): {r.stderr.strip()[:2000]}")

    def read_table(self, family: str, table: str) -> TableState | None:
        r = self.process.run([*self.argv, "-j", "list", "table", family, table],
                             timeout=self.timeout)  # fmt: skip
        if r.returncode != 0:
            if "No such file" in r.stderr:
                return None
            raise NftError(f"nft -j list table {family} {table}: {r.stderr.strip()[:500]}")
        return parse_table(json.loads(r.stdout), family, table)


_SCRIPT_PREFIX = "calico-nft-"
_SCRIPT_NAME = re.compile(re.escape(_SCRIPT_PREFIX) + r"(\d+)-.*\.nft$")


def _sweep_scripts(spool: str) -> None:
    """Remove script files left behind by runners whose process has died."""
    try:
        names = os.listdir(spool)
    except OSError:
        return
    for name in names:
        m = _SCRIPT_NAME.match(name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(spool, name))


_REF_CHAIN = re.compile(r"\b(?:jump|goto) ([A-Za-z0-9_./-]+)")
_REF_SET = re.compile(r"@([A-Za-z0-9_./-]+)")


@dataclass
class _FakeTable:
    chains: dict[str, list[Rule]] = field(default_factory=dict)
    sets: dict[str, tuple[tuple[str, str, tuple[str, ...], str | None], set[str]]] = field(
        default_factory=dict
    )

    def refs(self) -> tuple[set[str], set[str]]:
        chains: set[str] = set()
        sets: set[str] = set()
        for rules in self.chains.values():
            for r in rules:
                chains.update(_REF_CHAIN.findall(r.body))
                sets.update(_REF_SET.findall(r.body))
        for _shape, elems in self.sets.values():
            for e in elems:
                chains.update(_REF_CHAIN.findall(e))
        return chains, sets


@dataclass
class FakeNftRunner:
    """An in-memory model of the kernel's tables with the kernel's referential checks
    (jump/goto targets and ``@set`` references must exist; a referenced chain or set cannot
    be deleted; a non-empty chain cannot be deleted).

    ``fail_next`` makes that many transactions fail; ``transactions`` records every
    (family, table, ops) part sent; ``batches`` records how the parts were grouped into
    transactions (one list of (family, table) per transaction); ``reads`` counts readbacks.
    """

    tables: dict[tuple[str, str], _FakeTable] = field(default_factory=dict)
    transactions: list[tuple[str, str, list[Op]]] = field(default_factory=list)
    batches: list[list[tuple[str, str]]] = field(default_factory=list)
    fail_next: int = 0
    reads: int = 0

    # -- seam ---------------------------------------------------------------------------
    def transact(self, family: str, table: str, ops: Sequence[Op]) -> None:
        self.transact_many([(family, table, ops)])

    def transact_many(self, parts: Sequence[TablePart]) -> None:
        parts = [p for p in parts if p[2]]
        if not parts:
            return
        self.transactions += [(f, t, list(ops)) for f, t, ops in parts]
        self.batches.append([(f, t) for f, t, _o in parts])
        if self.fail_next > 0:
            self.fail_next -= 1
            raise NftError("injected failure")
        tables = copy.deepcopy(self.tables)
        for family, table, ops in parts:
            key = (family, table)
            for op in ops:
                self._apply(tables, key, op)
            t = tables.get(key)
            if t is not None:
                chains, sets = t.refs()
                if missing := (chains - set(t.chains)) | (sets - set(t.sets)):
                    raise NftError(f"reference to missing object(s): {sorted(missing)}")
        self.tables = tables

    def read_table(self, family: str, table: str) -> TableState | None:
        self.reads += 1
        t = self.tables.get((family, table))
        if t is None:
            return None
        return TableState(
            {n: tuple(r.hash for r in rules) for n, rules in t.chains.items()},
            {n: (shape, frozenset(e)) for n, (shape, e) in t.sets.items()},
        )

    # -- model --------------------------------------------------------------------------
    def _apply(self, tables: dict[tuple[str, str], _FakeTable], key: tuple[str, str],
               op: Op) -> None:  # fmt: skip
        if isinstance(op, ReplaceTable):
            t = _FakeTable()
            for name, chain in op.spec.chains.items():
                t.chains[name] = list(chain.rules)
            for name, s in op.spec.sets.items():
                t.sets[name] = (s.shape(), set(s.elements))
            tables[key] = t
            return
        if isinstance(op, DeleteTable):
            tables.pop(key, None)
            return
        if isinstance(op, (AddChain, AddSet)):
            t = tables.setdefault(key, _FakeTable())
        else:
            if key not in tables:
                raise NftError(f"table {key} does not exist")
            t = tables[key]
        if isinstance(op, AddChain):
            t.chains.setdefault(op.chain.name, [])
        elif isinstance(op, WriteChain):
            if op.chain.name not in t.chains:
                raise NftError(f"chain {op.chain.name} does not exist")
            t.chains[op.chain.name] = list(op.chain.rules)
        elif isinstance(op, FlushChain):
            if op.name not in t.chains:
                raise NftError(f"chain {op.name} does not exist")
            t.chains[op.name] = []
        elif isinstance(op, DeleteChain):
            if t.chains.get(op.name):
                raise NftError(f"chain {op.name} is not empty")
            if op.name in t.refs()[0]:
                raise NftError(f"chain {op.name} is in use")
            if t.chains.pop(op.name, None) is None:
                raise NftError(f"chain {op.name} does not exist")
        elif isinstance(op, AddSet):
            if op.set.name not in t.sets:
                t.sets[op.set.name] = (op.set.shape(), set())
            t.sets[op.set.name][1].update(op.set.elements)
        elif isinstance(op, AddElements):
            if op.name not in t.sets:
                raise NftError(f"set {op.name} does not exist")
            t.sets[op.name][1].update(op.elements)
        elif isinstance(op, DeleteElements):
            if op.name not in t.sets:
                raise NftError(f"set {op.name} does not exist")
            elems = t.sets[op.name][1]
            keys = set(op.elements)
            present = {element_key(e) for e in elems}
            if keys - present:
                raise NftError(f"delete of missing element(s) {sorted(keys - present)}")
            elems.difference_update({e for e in elems if element_key(e) in keys})
        elif isinstance(op, DeleteSet):
            if op.name in t.refs()[1]:
                raise NftError(f"set {op.name} is in use")
            if t.sets.pop(op.name, None) is None:
                raise NftError(f"set {op.name} does not exist")

    # -- tampering (what another program might do) ---------------------------------------
    def flush_table(self, family: str, table: str) -> None:
        for name in self.tables[(family, table)].chains:
            self.tables[(family, table)].chains[name] = []

    def delete_chain(self, family: str, table: str, name: str) -> None:
        t = self.tables[(family, table)]
        t.chains.pop(name)
        for rules in t.chains.values():
            rules[:] = [r for r in rules if name not in _REF_CHAIN.findall(r.body)]
        for _shape, elems in t.sets.values():
            elems.difference_update({e for e in elems if name in _REF_CHAIN.findall(e)})
