"""In-memory record index: the answer set of the DNS server, updated incrementally.

Owns: records by owner name and type (with reference counts, so several sources may contribute
the same record, e.g. two WEPs of one pod or an IP briefly held by an old and a new WEP), the
empty non-terminals (ENTs) above every owner name, and the set of zones we are authoritative
for (the forward zones given at construction plus one reverse zone per IPPool).

Invariants:
- ``lookup`` is O(labels of the name): two dict probes plus a walk over the name's suffixes.
- ``set_source(key, records)`` replaces exactly what ``key`` contributed before; after
  ``remove_source(key)`` nothing of it remains (no stale names, no stale ENTs).
- ``generation`` increases on every change that alters an answer; response caches keyed on it
  (or cleared on change) therefore never serve stale data.
- Not thread-safe: one thread (the server's event loop) owns it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from pycalico.dns.records import REVERSE_ROOTS, RData, Record


class Status(Enum):
    """Outcome of a lookup."""

    FOUND = "found"  # the name owns records (see ``rrsets``)
    NODATA = "nodata"  # the name exists in a zone (apex or ENT) but owns no records
    NXDOMAIN = "nxdomain"  # in one of our zones, the name does not exist
    OUTSIDE = "outside"  # not ours: forward or refuse


@dataclass(frozen=True, slots=True)
class Lookup:
    status: Status
    zone: str | None  # the apex of the zone the name falls in (None: no zone of ours)
    rrsets: dict[int, list[RData]]


_EMPTY: dict[int, list[RData]] = {}


class RecordIndex:
    """Names -> records, ENTs and zones (see module doc)."""

    def __init__(self, zones: Iterable[str]) -> None:
        self._static_zones = {z.lower().rstrip(".") for z in zones}
        self._zone_refs: Counter[str] = Counter()
        self.zones: set[str] = set(self._static_zones)
        self._sources: dict[str, tuple[Record, ...]] = {}
        self._pools: dict[str, str] = {}
        self._rr: dict[str, dict[int, Counter[RData]]] = {}
        self._ent: Counter[str] = Counter()
        self.generation = 0

    # -- updates -----------------------------------------------------------------------
    def set_source(self, key: str, records: Iterable[Record]) -> None:
        new = tuple(dict.fromkeys(records))
        old = self._sources.get(key, ())
        if set(new) == set(old):
            return
        for r in old:
            self._remove(r)
        for r in new:
            self._add(r)
        if new:
            self._sources[key] = new
        else:
            self._sources.pop(key, None)
        self.generation += 1

    def remove_source(self, key: str) -> None:
        self.set_source(key, ())

    def set_pool(self, key: str, zone: str | None) -> None:
        """IPPool ``key`` now makes ``zone`` authoritative (None: none)."""
        old = self._pools.pop(key, None)
        if old == zone:
            if zone is not None:
                self._pools[key] = zone
            return
        if old is not None:
            self._zone_refs[old] -= 1
            if self._zone_refs[old] <= 0:
                del self._zone_refs[old]
        if zone is not None:
            self._pools[key] = zone
            self._zone_refs[zone] += 1
        self.zones = self._static_zones | set(self._zone_refs)
        self.generation += 1

    def remove_pool(self, key: str) -> None:
        self.set_pool(key, None)

    def _ancestors(self, name: str) -> list[str]:
        """Names strictly between ``name`` and its static zone / reverse root (ENT candidates).
        Empty when the name is under none of them."""
        out: list[str] = []
        s = name
        while True:
            i = s.find(".")
            if i < 0:
                return []
            s = s[i + 1 :]
            if s in self._static_zones or s in REVERSE_ROOTS:
                return out
            out.append(s)

    def _add(self, r: Record) -> None:
        types = self._rr.get(r.name)
        if types is None:
            types = self._rr[r.name] = {}
            for a in self._ancestors(r.name):
                self._ent[a] += 1
        types.setdefault(r.rtype, Counter())[r.rdata] += 1

    def _remove(self, r: Record) -> None:
        types = self._rr.get(r.name)
        if types is None:
            return
        c = types.get(r.rtype)
        if c is None:
            return
        c[r.rdata] -= 1
        if c[r.rdata] <= 0:
            del c[r.rdata]
        if not c:
            del types[r.rtype]
        if not types:
            del self._rr[r.name]
            for a in self._ancestors(r.name):
                self._ent[a] -= 1
                if self._ent[a] <= 0:
                    del self._ent[a]

    # -- queries -----------------------------------------------------------------------
    def zone_of(self, name: str) -> str | None:
        """The longest of our zones ``name`` is in or equal to."""
        zones = self.zones
        s = name
        while True:
            if s in zones:
                return s
            i = s.find(".")
            if i < 0:
                return None
            s = s[i + 1 :]

    def lookup(self, name: str) -> Lookup:
        """Classify lower-case ``name`` (no trailing dot) and return its records."""
        zone = self.zone_of(name)
        types = self._rr.get(name)
        if types:
            return Lookup(Status.FOUND, zone, {t: list(c) for t, c in types.items()})
        if zone is None:
            return Lookup(Status.OUTSIDE, None, _EMPTY)
        if name == zone or name in self._ent:
            return Lookup(Status.NODATA, zone, _EMPTY)
        return Lookup(Status.NXDOMAIN, zone, _EMPTY)

    def names(self) -> list[str]:
        """Every owner name (for debugging and tests)."""
        return sorted(self._rr)

    def empty_non_terminals(self) -> list[str]:
        return sorted(self._ent)

    def __len__(self) -> int:
        return len(self._rr)
