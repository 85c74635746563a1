"""Route driver: main-table routes of one IP family carrying our protocol mark (80).

Owns exactly the main-table routes with ``proto`` :data:`ROUTE_PROTO`; it never reads into,
writes or deletes any other route (BIRD's proto 12, the kernel's, the CNI plugin's own).

Invariants:
- Desired vs dataplane is a :class:`DeltaTracker` keyed by destination; an apply writes only
  the pending delta, deletes first then replaces, in ONE kernel batch.
- After :meth:`request_resync` (full apply, device recreated, failed delete) the next apply
  re-reads our routes from the kernel first, so drift made by others is repaired.
- A workload route (``scope link``) whose interface does not exist yet is skipped (left
  pending, not an error): the CNI plugin adds it itself. A delete that fails because the
  route is already gone (with its interface) counts as done.
- A failed replace raises :class:`KernelError` (only the failed ops stay pending).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pycalico.felix.calc.routetypes import ROUTE_PROTO, Net, Route
from pycalico.felix.dataplane.deltatracker import DeltaTracker
from pycalico.system.kernel import Kernel, KernelError, KernelRoute, Op, RouteType


def to_kernel(r: Route) -> KernelRoute:
    if r.kind == "blackhole":
        return KernelRoute(r.dst, "blackhole", proto=ROUTE_PROTO)
    return KernelRoute(r.dst, "unicast", r.gateway, r.dev, r.onlink, r.scope_link, ROUTE_PROTO)


def from_kernel(kr: KernelRoute) -> Route:
    if kr.type != "unicast":
        return Route(kr.dst, kind=kr.type)
    return Route(kr.dst, "unicast", kr.gateway, kr.dev, kr.onlink, kr.scope_link)


def net_order(keys: Iterable[Net]) -> list[Net]:
    return sorted(keys, key=lambda d: (d.version, int(d.network_address), d.prefixlen))


def gone(error: str) -> bool:
    """A delete failed because the object is not there (any more)."""
    return "No such process" in error or "No such file" in error or "Cannot find device" in error


class RouteDriver:
    def __init__(self, kernel: Kernel, version: int = 4) -> None:
        self.kernel = kernel
        self.version = version
        self.tracker: DeltaTracker[Net, Route] = DeltaTracker()
        self._resync = True
        self.writes = 0  # write batches issued

    def set_desired(self, routes: Mapping[Net, Route]) -> None:
        self.tracker.replace_all_desired(routes)

    def request_resync(self) -> None:
        self._resync = True

    def apply(self) -> None:
        t = self.tracker
        if self._resync:
            actual = self.kernel.list_routes(self.version, ROUTE_PROTO)
            t.replace_all_dataplane({kr.dst: from_kernel(kr) for kr in actual})
            self._resync = False
        if t.in_sync():
            return
        updates = dict(t.pending_updates)
        waiting: set[Net] = set()
        if any(r.scope_link for r in updates.values()):  # only then is the link list needed
            present = {link.name for link in self.kernel.list_links()}
            waiting = {d for d, r in updates.items() if r.scope_link and r.dev not in present}
        dels: dict[Op, Net] = {}
        puts: dict[Op, Net] = {}
        try:
            with self.kernel.batch() as b:
                for d in net_order(t.pending_deletes):
                    # by destination, type and our mark only: a stale view still deletes
                    kind: RouteType = (
                        "blackhole" if t.dataplane[d].kind == "blackhole" else "unicast"
                    )
                    dels[b.del_route(KernelRoute(d, kind, proto=ROUTE_PROTO))] = d
                for d in net_order(updates):
                    if d not in waiting:
                        puts[b.replace_route(to_kernel(updates[d]))] = d
                if dels or puts:
                    self.writes += 1
        except KernelError as e:
            failed = {f.op: f.error for f in e.failed}
            self._confirm(dels, puts, failed, updates)
            put_failures = [f for f in e.failed if f.op in puts]
            if any(not gone(f.error) for f in e.failed if f.op in dels):
                self._resync = True  # unknown state: re-read next time
            if put_failures:
                raise KernelError(str(e), put_failures) from None
            return
        self._confirm(dels, puts, {}, updates)

    def _confirm(
        self,
        dels: Mapping[Op, Net],
        puts: Mapping[Op, Net],
        failed: Mapping[Op, str],
        updates: Mapping[Net, Route],
    ) -> None:
        for op, d in dels.items():
            if op not in failed or gone(failed[op]):
                self.tracker.delete_dataplane(d)
        for op, d in puts.items():
            if op not in failed:
                self.tracker.set_dataplane(d, updates[d])
