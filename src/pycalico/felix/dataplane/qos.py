"""Bandwidth QoS of workload interfaces with tc (side effects only), as Calico programs it.

Owns, per local workload interface with ``spec.qosControls`` bandwidth (see
:class:`pycalico.model.types.QoSControls`):
- ingress (traffic TO the workload): a root TBF (handle ``1:``) on the host-side veth;
- egress (traffic FROM the workload): a u32 filter on the ingress hook of the veth's
  ``clsact`` qdisc (``ffff:``, shared with the tc guard: see :mod:`pycalico.system.tc`) that
  redirects every packet to an IFB device ``bwcali<sha512(iface)[:9]>`` (Calico's name), and
  a root TBF on that IFB (a TBF only shapes what the kernel sends to a device).
Packet-rate and connection limits are nftables rules (:mod:`pycalico.felix.rules.endpoints`).

TBF values (Calico's ``GetTBFValues`` in bytes): rate = bandwidth / 8; burst = burst / 8,
capped at what the kernel's u32 bucket of 64 ns ticks can hold (~274.9 s at the rate: Calico
saturates the same way, so its default 4Gi-bit burst is that cap); limit = rate x 25 ms +
burst (u32); with a peakrate, peakrate / 8 and minburst at least the interface MTU + 14.

Invariants:
- Mark and sweep: only IFBs named ``bwcali*`` and the root TBF / redirect filter of interfaces
  this driver was given are touched; a full apply deletes every ``bwcali*`` IFB no wanted
  egress uses.
- Idempotent: an apply reads the interface's state and writes only what differs (a TBF is
  compared as the kernel keeps it, :meth:`~pycalico.system.tc.Tbf.same`).
- An interface that does not exist (yet) is not an error: it stays pending and is retried
  by the next full apply. A failed write leaves the interface dirty and is reported.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pycalico.model.types import QoSControls
from pycalico.system.tc import MAX_BUCKET_SECONDS, Tbf, TcError, TrafficControl

log = logging.getLogger(__name__)

IFB_PREFIX = "bwcali"
LATENCY_SECONDS = 0.025
_U32 = 2**32 - 1


def ifb_name(iface: str) -> str:
    """Calico's IFB device name for a workload interface (15 characters)."""
    return IFB_PREFIX + hashlib.sha512(iface.encode()).hexdigest()[: 15 - len(IFB_PREFIX)]


def tbf_values(bandwidth: int, burst: int, peakrate: int, minburst: int, mtu: int) -> Tbf:
    """The TBF of a bandwidth control (bits/s, bits, bits/s, bytes) on a device of ``mtu``."""
    rate = bandwidth // 8
    burst_bytes = max(1, min(burst // 8, int(rate * MAX_BUCKET_SECONDS)))
    limit = min(int(rate * LATENCY_SECONDS) + burst_bytes, _U32)
    peak = peakrate // 8
    return Tbf(
        rate=rate,
        burst=burst_bytes,
        limit=limit,
        peakrate=peak,
        minburst=max(minburst, mtu + 14) if peak else 0,
    )


@dataclass(frozen=True)
class Wanted:
    """The TBFs one interface needs (None: no control in that direction)."""

    ingress: Tbf | None
    egress: Tbf | None


def wanted(qos: QoSControls | None, mtu: int) -> Wanted:
    if qos is None:
        return Wanted(None, None)
    ing = egr = None
    if qos.ingressBandwidth:
        ing = tbf_values(
            qos.ingressBandwidth, qos.ingressBurst, qos.ingressPeakrate, qos.ingressMinburst, mtu
        )
    if qos.egressBandwidth:
        egr = tbf_values(
            qos.egressBandwidth, qos.egressBurst, qos.egressPeakrate, qos.egressMinburst, mtu
        )
    return Wanted(ing, egr)


class QosDataplane:
    """See the module docstring. ``set(iface, qos)`` records the desired controls (None or
    no bandwidth: remove ours); ``apply()`` programs the dirty interfaces, ``apply(full=True)``
    re-reads every known interface and sweeps unused IFBs. Both return the errors (as text)
    of interfaces that stay dirty."""

    def __init__(self, tc: TrafficControl) -> None:
        self.tc = tc
        self._desired: dict[str, QoSControls] = {}
        self._known: set[str] = set()  # interfaces we may have programmed
        self._dirty: set[str] = set()
        self.writes = 0

    def set(self, iface: str, qos: QoSControls | None) -> None:
        has_bw = qos is not None and bool(qos.ingressBandwidth or qos.egressBandwidth)
        if has_bw and qos is not None:
            if self._desired.get(iface) == qos:
                return
            self._desired[iface] = qos
        elif iface in self._desired:
            del self._desired[iface]
        else:
            return
        self._known.add(iface)
        self._dirty.add(iface)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def desired(self) -> dict[str, QoSControls]:
        return dict(self._desired)

    def apply(self, full: bool = False) -> list[str]:
        todo: Iterable[str] = sorted(self._known | self._dirty) if full else sorted(self._dirty)
        errors: list[str] = []
        for iface in todo:
            try:
                self._apply_one(iface)
            except TcError as e:
                log.warning("qos %s: %s", iface, e)
                errors.append(f"{iface}: {e}")
                self._dirty.add(iface)
        if full:
            try:
                self._sweep()
            except TcError as e:
                errors.append(str(e))
        return errors

    def _apply_one(self, iface: str) -> None:
        qos = self._desired.get(iface)
        mtu = self.tc.get_mtu(iface)
        ifb = ifb_name(iface)
        if mtu is None:  # gone (removed workload) or not there yet
            if ifb in self.tc.list_ifbs():
                self._write(lambda: self.tc.del_link(ifb))
            if qos is None:
                self._known.discard(iface)
            self._dirty.discard(iface)
            return
        want = wanted(qos, mtu)
        cur = self.tc.get_tbf(iface)
        if want.ingress is not None and not want.ingress.same(cur):
            tbf = want.ingress
            self._write(lambda: self.tc.replace_tbf(iface, tbf))
        elif want.ingress is None and cur is not None:
            self._write(lambda: self.tc.del_tbf(iface))
        redirect = self.tc.get_redirect(iface)
        if want.egress is not None:
            egress = want.egress
            if ifb not in self.tc.list_ifbs():
                self._write(lambda: self.tc.add_ifb(ifb, mtu))
            if redirect != ifb:
                self._write(lambda: self.tc.set_redirect(iface, ifb))
            if not egress.same(self.tc.get_tbf(ifb)):
                self._write(lambda: self.tc.replace_tbf(ifb, egress))
        else:
            if redirect is not None:
                self._write(lambda: self.tc.del_ingress(iface))
            if ifb in self.tc.list_ifbs():
                self._write(lambda: self.tc.del_link(ifb))
        if qos is None:
            self._known.discard(iface)
        self._dirty.discard(iface)

    def _sweep(self) -> None:
        keep = {ifb_name(i) for i, q in self._desired.items() if q.egressBandwidth}
        for ifb in self.tc.list_ifbs():
            if ifb.startswith(IFB_PREFIX) and ifb not in keep:
                self.tc.del_link(ifb)
                self.writes += 1

    def _write(self, op: Callable[[], None]) -> None:
        op()
        self.writes += 1
