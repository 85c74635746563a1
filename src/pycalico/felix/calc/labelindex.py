"""Incremental selector <-> labelled-item matching (Felix's label index).

Owns: which registered selectors match which items, kept up to date as selectors and item
labels change, reporting every transition through ``on_match`` / ``on_unmatch`` callbacks.

How it stays incremental (never "all selectors x all items"):
- Each selector is analysed once (:func:`analyse`): the label names it references
  (``Selector.labels()``), and a *restriction* — a label (and optionally the set of values)
  an item must carry for the selector to possibly match (``Selector.required_equalities()``,
  e.g. from top-level ``a == 'x'``, ``a in {..}``, ``has(a)`` terms).
- A new selector is evaluated only against items satisfying its restriction (items are
  indexed by label name and by (name, value)).
- A new item is evaluated only against unrestricted selectors and selectors whose
  restriction it satisfies.
- A label change on an existing item re-evaluates only selectors that reference one of the
  changed label names and whose restriction the old or new labels satisfy.
``evaluations`` counts ``Selector.evaluate`` calls so tests can check this.

Invariant: after every public call, ``matches(sid)`` equals
``{iid | parse(selector).evaluate(labels[iid])}`` for every registered selector, and no
index keeps an entry (label name or value) that no registered selector or item uses: the
index's size follows what is registered now, never what was ever seen.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from pycalico.selector import Selector, parse

SID = TypeVar("SID", bound=Hashable)
IID = TypeVar("IID", bound=Hashable)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)


@dataclass(frozen=True)
class SelectorInfo:
    """Static facts about a selector used for indexing.

    ``labels``: label names the selector references; its result can only change when one
    of them changes.  ``restrict_label``/``restrict_values``: an item can only match if it
    has ``restrict_label`` (with a value in ``restrict_values`` when that is not None; an
    empty set means nothing can match).
    """

    labels: frozenset[str]
    restrict_label: str | None = None
    restrict_values: frozenset[str] | None = None


def analyse(sel: Selector) -> SelectorInfo:
    """Pick the most selective required label of ``sel`` as its index restriction."""
    best: tuple[str, frozenset[str] | None] | None = None
    for name, values in sorted(sel.required_equalities().items()):
        if best is None or (values is not None and (best[1] is None or len(values) < len(best[1]))):
            best = (name, values)
    if best is None:
        return SelectorInfo(sel.labels())
    return SelectorInfo(sel.labels(), best[0], best[1])


class LabelIndex(Generic[SID, IID]):
    """Matches selectors (by id) against items (by id) incrementally."""

    def __init__(
        self,
        on_match: Callable[[SID, IID], None],
        on_unmatch: Callable[[SID, IID], None],
    ) -> None:
        self._on_match = on_match
        self._on_unmatch = on_unmatch
        self._sels: dict[SID, tuple[str, Selector, SelectorInfo]] = {}
        self._items: dict[IID, Mapping[str, str]] = {}
        self._matches: dict[SID, set[IID]] = {}
        self._item_matches: dict[IID, set[SID]] = {}
        # Selector indexes.
        self._unrestricted: set[SID] = set()
        self._by_label: dict[str, set[SID]] = {}
        self._by_value: dict[str, dict[str, set[SID]]] = {}
        self._by_ref: dict[str, set[SID]] = {}
        # Item indexes.
        self._items_by_label: dict[str, set[IID]] = {}
        self._items_by_value: dict[tuple[str, str], set[IID]] = {}
        self.evaluations = 0

    # --- queries ------------------------------------------------------------------------
    def matches(self, sid: SID) -> frozenset[IID]:
        return frozenset(self._matches.get(sid, ()))

    def selectors_matching(self, iid: IID) -> frozenset[SID]:
        return frozenset(self._item_matches.get(iid, ()))

    def has_selector(self, sid: SID) -> bool:
        return sid in self._sels

    # --- selectors ----------------------------------------------------------------------
    def update_selector(self, sid: SID, text: str) -> None:
        """Register (or change) selector ``sid``; fires callbacks for changed matches."""
        old = self._sels.get(sid)
        if old is not None and old[0] == text:
            return
        sel = parse(text)
        info = analyse(sel)
        if old is not None:
            self._unindex_selector(sid, old[2])
        self._sels[sid] = (text, sel, info)
        self._index_selector(sid, info)
        before = self._matches.setdefault(sid, set())
        after: set[IID] = set()
        for iid in self._candidate_items(info):
            self.evaluations += 1
            if sel.evaluate(self._items[iid]):
                after.add(iid)
        for iid in before - after:
            self._unmatch(sid, iid)
        for iid in after - before:
            self._match(sid, iid)

    def remove_selector(self, sid: SID) -> None:
        old = self._sels.pop(sid, None)
        if old is None:
            return
        self._unindex_selector(sid, old[2])
        for iid in list(self._matches.get(sid, ())):
            self._unmatch(sid, iid)
        self._matches.pop(sid, None)

    def _index_selector(self, sid: SID, info: SelectorInfo) -> None:
        if info.restrict_label is None:
            self._unrestricted.add(sid)
        elif info.restrict_values is None:
            self._by_label.setdefault(info.restrict_label, set()).add(sid)
        else:
            vals = self._by_value.setdefault(info.restrict_label, {})
            for v in info.restrict_values:
                vals.setdefault(v, set()).add(sid)
        for name in info.labels:
            self._by_ref.setdefault(name, set()).add(sid)

    def _unindex_selector(self, sid: SID, info: SelectorInfo) -> None:
        """Drop ``sid`` from the selector indexes, pruning emptied entries (a selector's
        label names and values must not outlive the last selector that used them)."""
        self._unrestricted.discard(sid)
        if info.restrict_label is not None:
            if info.restrict_values is None:
                discard_member(self._by_label, info.restrict_label, sid)
            else:
                vals = self._by_value.get(info.restrict_label)
                if vals is not None:
                    for v in info.restrict_values:
                        discard_member(vals, v, sid)
                    if not vals:
                        del self._by_value[info.restrict_label]
        for name in info.labels:
            discard_member(self._by_ref, name, sid)

    def _candidate_items(self, info: SelectorInfo) -> Iterable[IID]:
        if info.restrict_label is None:
            return list(self._items)
        if info.restrict_values is None:
            return list(self._items_by_label.get(info.restrict_label, ()))
        out: set[IID] = set()
        for v in info.restrict_values:
            out |= self._items_by_value.get((info.restrict_label, v), set())
        return out

    # --- items --------------------------------------------------------------------------
    def update_item(self, iid: IID, labels: Mapping[str, str]) -> None:
        """Add or relabel item ``iid``; fires callbacks for changed matches."""
        labels = dict(labels)
        old = self._items.get(iid)
        if old == labels:
            return
        if old is not None:
            self._unindex_item(iid, old)
        self._items[iid] = labels
        self._index_item(iid, labels)
        current = self._item_matches.setdefault(iid, set())
        if old is None:
            cands: set[SID] = set(self._unrestricted)
            for name, value in labels.items():
                cands |= self._by_label.get(name, set())
                cands |= self._by_value.get(name, {}).get(value, set())
        else:
            changed = {k for k in old.keys() | labels.keys() if old.get(k) != labels.get(k)}
            refs: set[SID] = set()
            for name in changed:
                refs |= self._by_ref.get(name, set())
            # Could match now: unrestricted, or restricted on a label/value the new labels
            # carry. Could stop matching: currently matching. (All set operations.)
            possible = self._unrestricted & refs
            for name, value in labels.items():
                possible |= self._by_label.get(name, set()) & refs
                possible |= self._by_value.get(name, {}).get(value, set()) & refs
            cands = possible | (current & refs)
        for sid in cands:
            self.evaluations += 1
            now = self._sels[sid][1].evaluate(labels)
            if now and sid not in current:
                self._match(sid, iid)
            elif not now and sid in current:
                self._unmatch(sid, iid)

    def remove_item(self, iid: IID) -> None:
        old = self._items.pop(iid, None)
        if old is None:
            return
        self._unindex_item(iid, old)
        for sid in list(self._item_matches.get(iid, ())):
            self._unmatch(sid, iid)
        self._item_matches.pop(iid, None)

    def _index_item(self, iid: IID, labels: Mapping[str, str]) -> None:
        for name, value in labels.items():
            self._items_by_label.setdefault(name, set()).add(iid)
            self._items_by_value.setdefault((name, value), set()).add(iid)

    def _unindex_item(self, iid: IID, labels: Mapping[str, str]) -> None:
        for name, value in labels.items():
            discard_member(self._items_by_label, name, iid)
            discard_member(self._items_by_value, (name, value), iid)

    # --- transitions --------------------------------------------------------------------
    def _match(self, sid: SID, iid: IID) -> None:
        self._matches.setdefault(sid, set()).add(iid)
        self._item_matches.setdefault(iid, set()).add(sid)
        self._on_match(sid, iid)

    def _unmatch(self, sid: SID, iid: IID) -> None:
        self._matches.get(sid, set()).discard(iid)
        self._item_matches.get(iid, set()).discard(sid)
        self._on_unmatch(sid, iid)


def discard_member(index: dict[K, set[V]], key: K, member: V) -> None:
    """Remove ``member`` from ``index[key]``; the key goes with its last member (so an index
    of users keeps no entry for what nothing uses any more)."""
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]
