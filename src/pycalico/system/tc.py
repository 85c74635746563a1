"""The typed traffic-control seam: token bucket filters, ingress redirects and IFB devices of
one network namespace, behind a narrow :class:`TrafficControl` protocol.

Owns: :class:`Tbf` (a root token bucket filter, in bytes), :class:`TcKernel` (the real one,
``tc``/``ip`` through :class:`pycalico.system.process.ProcessRunner`) and :class:`FakeTc`
(the in-memory twin for unit tests, with failure injection).

Invariants:
- Reads of a device that does not exist return None / empty, never raise.
- ``replace_tbf`` replaces the root qdisc of a device with handle ``1:`` (one process);
  ``set_redirect`` makes the device's ingress qdisc (``ffff:``) redirect every packet to an
  IFB device with one u32 filter (prio 1), replacing any filter it had.
- A read-back TBF is what the kernel reports: ``rate`` exact, ``burst`` rounded to the
  scheduler's 64 ns ticks (compare with :meth:`Tbf.same`); peakrate is not reported by
  iproute2 6.1 and reads back 0.
- Failures raise :class:`TcError` naming the command and the kernel's message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pycalico.errors import CalicoError
from pycalico.system.process import ProcessRunner

#: Kernel packet-scheduler tick (PSCHED_SHIFT 6): a TBF's bucket is a u32 count of these.
TICK_NS = 64
MAX_BUCKET_SECONDS = (2**32 - 1) * TICK_NS / 1e9
_MISSING = ("Cannot find device", "does not exist", "Cannot find specified qdisc")


class TcError(CalicoError):
    """A traffic-control command failed."""


@dataclass(frozen=True)
class Tbf:
    """A root TBF: ``rate``/``peakrate`` in bytes/s, ``burst``/``limit``/``minburst`` in
    bytes (0 = not set)."""

    rate: int
    burst: int
    limit: int = 0
    peakrate: int = 0
    minburst: int = 0

    def same(self, other: Tbf | None) -> bool:
        """Equal as the kernel keeps it: same rate, burst within tick rounding (1 %)."""
        if other is None:
            return False
        return self.rate == other.rate and abs(self.burst - other.burst) <= max(
            2, self.burst // 100
        )


class TrafficControl(Protocol):
    def get_tbf(self, dev: str) -> Tbf | None: ...

    def replace_tbf(self, dev: str, tbf: Tbf) -> None: ...

    def del_tbf(self, dev: str) -> None: ...

    def get_redirect(self, dev: str) -> str | None:
        """The device ``dev``'s ingress qdisc redirects to; "" for an ingress qdisc without
        a redirect; None without an ingress qdisc (or device)."""
        ...

    def set_redirect(self, dev: str, ifb: str) -> None: ...

    def del_ingress(self, dev: str) -> None: ...

    def list_ifbs(self) -> list[str]: ...

    def add_ifb(self, name: str, mtu: int) -> None: ...

    def del_link(self, name: str) -> None: ...

    def get_mtu(self, dev: str) -> int | None: ...


@dataclass
class TcKernel:
    """The real seam: ``tc``/``ip`` (``netns``: a named namespace, ``-n``)."""

    runner: ProcessRunner
    netns: str | None = None
    timeout: float = 30.0

    def _run(self, tool: str, *args: str, missing_ok: bool = False) -> str:
        argv = [tool, *(("-n", self.netns) if self.netns else ()), *args]
        r = self.runner.run(argv, timeout=self.timeout)
        if r.returncode != 0:
            err = (r.stderr or r.stdout).strip()
            if missing_ok and any(m in err for m in _MISSING):
                return ""
            raise TcError(f"{' '.join(argv)}: {err}")
        return r.stdout

    def _json(self, tool: str, *args: str) -> list[dict[str, Any]]:
        out = self._run(tool, "-j", *args, missing_ok=True).strip()
        try:
            return list(json.loads(out)) if out else []
        except ValueError as e:
            raise TcError(f"{tool} {' '.join(args)}: unparsable output: {e}") from None

    def get_tbf(self, dev: str) -> Tbf | None:
        for q in self._json("tc", "qdisc", "show", "dev", dev):
            if q.get("kind") == "tbf" and q.get("root"):
                o = q.get("options") or {}
                return Tbf(
                    rate=int(o.get("rate", 0)),
                    burst=int(o.get("burst", 0)),
                    peakrate=int(o.get("peakrate", 0)),
                    minburst=int(o.get("minburst", 0)),
                )
        return None

    def replace_tbf(self, dev: str, tbf: Tbf) -> None:
        args = ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "tbf"]
        args += ["rate", f"{tbf.rate * 8}bit", "burst", f"{tbf.burst}b"]
        args += ["limit", f"{tbf.limit or tbf.burst}b"]
        if tbf.peakrate:
            args += ["peakrate", f"{tbf.peakrate * 8}bit", "minburst", f"{tbf.minburst}b"]
        self._run("tc", *args)

    def del_tbf(self, dev: str) -> None:
        if self.get_tbf(dev) is not None:
            self._run("tc", "qdisc", "del", "dev", dev, "root", missing_ok=True)

    def get_redirect(self, dev: str) -> str | None:
        qdiscs = self._json("tc", "qdisc", "show", "dev", dev)
        if not any(q.get("kind") == "ingress" for q in qdiscs):
            return None
        for f in self._json("tc", "filter", "show", "dev", dev, "parent", "ffff:"):
            for a in (f.get("options") or {}).get("actions") or []:
                if a.get("kind") == "mirred" and a.get("mirred_action") == "redirect":
                    return str(a.get("to_dev", ""))
        return ""

    def set_redirect(self, dev: str, ifb: str) -> None:
        self._run("tc", "qdisc", "replace", "dev", dev, "handle", "ffff:", "ingress")
        self._run("tc", "filter", "del", "dev", dev, "parent", "ffff:", missing_ok=True)
        self._run(
            "tc", "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "prio",
            "1", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect",
            "dev", ifb,
        )  # fmt: skip

    def del_ingress(self, dev: str) -> None:
        if self.get_redirect(dev) is not None:
            self._run("tc", "qdisc", "del", "dev", dev, "ingress", missing_ok=True)

    def list_ifbs(self) -> list[str]:
        return [str(r["ifname"]) for r in self._json("ip", "link", "show", "type", "ifb")]

    def add_ifb(self, name: str, mtu: int) -> None:
        self._run("ip", "link", "add", name, "mtu", str(mtu), "type", "ifb")
        self._run("ip", "link", "set", name, "up")

    def del_link(self, name: str) -> None:
        self._run("ip", "link", "del", name, missing_ok=True)

    def get_mtu(self, dev: str) -> int | None:
        recs = self._json("ip", "link", "show", "dev", dev)
        return int(recs[0].get("mtu", 1500)) if recs else None


@dataclass
class FakeTc:
    """In-memory :class:`TrafficControl`: ``links`` (name -> MTU; an IFB is a link in
    ``ifbs`` too), ``tbfs``, ``redirects`` (dev -> IFB, "" = bare ingress qdisc).
    ``fail`` names methods that raise :class:`TcError`; ``calls`` records every write."""

    links: dict[str, int] = field(default_factory=dict)
    ifbs: set[str] = field(default_factory=set)
    tbfs: dict[str, Tbf] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def _write(self, op: str, dev: str) -> None:
        if op in self.fail:
            raise TcError(f"injected failure: {op} {dev}")
        if dev not in self.links:
            raise TcError(f"{op} {dev}: Cannot find device {dev!r}")
        self.calls.append((op, dev))

    def get_tbf(self, dev: str) -> Tbf | None:
        tbf = self.tbfs.get(dev)
        return replace(tbf, limit=0, peakrate=0) if tbf is not None else None

    def replace_tbf(self, dev: str, tbf: Tbf) -> None:
        self._write("replace_tbf", dev)
        self.tbfs[dev] = tbf

    def del_tbf(self, dev: str) -> None:
        if dev in self.tbfs:
            self._write("del_tbf", dev)
            del self.tbfs[dev]

    def get_redirect(self, dev: str) -> str | None:
        return self.redirects.get(dev)

    def set_redirect(self, dev: str, ifb: str) -> None:
        self._write("set_redirect", dev)
        self.redirects[dev] = ifb

    def del_ingress(self, dev: str) -> None:
        if dev in self.redirects:
            self._write("del_ingress", dev)
            del self.redirects[dev]

    def list_ifbs(self) -> list[str]:
        return sorted(self.ifbs)

    def add_ifb(self, name: str, mtu: int) -> None:
        if "add_ifb" in self.fail:
            raise TcError(f"injected failure: add_ifb {name}")
        if name in self.links:
            raise TcError(f"add_ifb {name}: File exists")
        self.calls.append(("add_ifb", name))
        self.links[name] = mtu
        self.ifbs.add(name)

    def del_link(self, name: str) -> None:
        if name in self.links:
            self._write("del_link", name)
            del self.links[name]
            self.ifbs.discard(name)
            self.tbfs.pop(name, None)
            self.redirects.pop(name, None)
            for dev, ifb in list(self.redirects.items()):
                if ifb == name:
                    self.redirects[dev] = ""

    def get_mtu(self, dev: str) -> int | None:
        return self.links.get(dev)
