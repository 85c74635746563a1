"""The typed traffic-control seam: token bucket filters, ingress redirects, IFB devices and
the fail-closed tc guard of one network namespace, behind a narrow :class:`TrafficControl`
protocol.

Owns: :class:`Tbf` (a root token bucket filter, in bytes), :class:`TcKernel` (the real one,
``tc``/``ip`` through :class:`pycalico.system.process.ProcessRunner`) and :class:`FakeTc`
(the in-memory twin for unit tests, with failure injection).

Invariants:
- Reads of a device that does not exist return None / empty, never raise.
- ``replace_tbf`` replaces the root qdisc of a device with handle ``1:`` (one process);
  ``set_redirect`` makes the device's ``clsact`` qdisc (``ffff:``) redirect every ingress
  packet to an IFB device with one u32 filter (preference :data:`REDIRECT_PREF`), replacing
  the filter of that preference only (a legacy ``ingress`` qdisc, as older versions made,
  is replaced by ``clsact``: both cannot exist on one device).
- Guard filters (:mod:`pycalico.system.tcbpf`) sit at preference 1 of the ``clsact`` hooks
  (before the redirect) and are named ``calico-guard-<program>``; a device's guard reads
  back as the set of ``<hook>:<program>`` of those filters (:data:`WORKLOAD_GUARD`,
  :data:`HOST_GUARD`; ``<hook>:?`` for someone else's filter at that preference, which is
  never replaced nor deleted). ``set_guards`` writes a whole batch of devices with one ``tc -batch``
  and one netlink socket.
- The local-delivery guard (:mod:`pycalico.system.nfbpf`, a netfilter BPF link, not tc
  but the same guard's other half) is held by the seam object: ``set_local_guard``
  attaches or detaches it; it lives as long as this process.
- A read-back TBF is what the kernel reports: ``rate`` exact, ``burst`` rounded to the
  scheduler's 64 ns ticks (compare with :meth:`Tbf.same`); peakrate is not reported by
  iproute2 6.1 and reads back 0.
- Failures raise :class:`TcError` naming the command and the kernel's message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pycalico.errors import CalicoError
from pycalico.system import tcbpf
from pycalico.system.bpfsys import BpfError, BpfUnsupported
from pycalico.system.iproute import decode_json_stream
from pycalico.system.nfbpf import LocalInGuard
from pycalico.system.process import ProcessRunner

#: Kernel packet-scheduler tick (PSCHED_SHIFT 6): a TBF's bucket is a u32 count of these.
TICK_NS = 64
MAX_BUCKET_SECONDS = (2**32 - 1) * TICK_NS / 1e9
_MISSING = (
    "Cannot find device",
    "does not exist",
    "Cannot find specified",
    "not found",
)
#: The QoS redirect's filter preference on the clsact ingress hook (after the guard's 1).
REDIRECT_PREF = 2
#: A workload interface's guard: mark at ingress (from the workload), check at egress.
WORKLOAD_GUARD = frozenset({"ingress:wl-in", "egress:wl-out"})
#: Any other interface of the node: drop unevaluated workload traffic at egress.
HOST_GUARD = frozenset({"egress:host-out"})
#: The same, checking IPv4 packets only (Felix without ipv6Support).
WORKLOAD_GUARD_V4 = frozenset({"ingress:wl-in", "egress:wl-out-v4"})
HOST_GUARD_V4 = frozenset({"egress:host-out-v4"})


class TcError(CalicoError):
    """A traffic-control command failed."""


class TcGuardUnsupported(TcError):
    """The kernel cannot load the tc guard's programs (retrying will not help)."""


class TcGuardForeign(TcError):
    """Someone else's ingress qdisc or filter holds the guard's place on a device: theirs
    stays and that device is not guarded (the other devices of the batch were written)."""


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

    def list_links(self) -> dict[str, int]:
        """Every device of the namespace: name -> ifindex."""
        ...

    def get_guards(self, devs: Sequence[str]) -> dict[str, frozenset[str]]:
        """The guard filters (``<hook>:<program>``) of each device of ``devs`` that exists
        (a device without any: an empty set)."""
        ...

    def set_guards(self, want: Mapping[str, frozenset[str]]) -> None:
        """Make each device's guard filters exactly ``want[dev]`` (creating ``clsact``; a
        legacy ``ingress`` qdisc is replaced on a workload interface - ours, QoS's - and left
        alone elsewhere: that device is reported, the others are written)."""
        ...

    def del_guard(self, dev: str, *, qdisc: bool = False) -> None:
        """Remove our guard filters from ``dev`` (``qdisc``: the whole clsact qdisc, with
        the QoS redirect: for workload interfaces on uninstall). Absent: no error."""
        ...

    def set_local_guard(self, versions: frozenset[int]) -> bool:
        """The local-delivery guard (:mod:`pycalico.system.nfbpf`, held by this seam: it
        lives as long as this process) on for exactly the IP ``versions``; True when
        anything changed."""
        ...


#: In a read-back guard: ``<hook>:`` + this = someone else's filter holds our preference.
FOREIGN = "?"


def _guard_of(filters: list[dict[str, Any]], hook: str) -> set[str]:
    out = set()
    for f in filters:
        if not f.get("options"):
            continue  # the preference's head entry
        name = str(f["options"].get("bpf_name", ""))
        if f.get("kind") == "bpf" and name.startswith(tcbpf.NAME_PREFIX):
            out.add(f"{hook}:{name.removeprefix(tcbpf.NAME_PREFIX)}")
        elif f.get("pref") == tcbpf.PREF:
            out.add(f"{hook}:{FOREIGN}")
    return out


@dataclass
class TcKernel:
    """The real seam: ``tc``/``ip`` (``netns``: a named namespace, ``-n``)."""

    runner: ProcessRunner
    netns: str | None = None
    timeout: float = 30.0
    _local: LocalInGuard | None = field(default=None, init=False, repr=False)

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

    def _ingress_kind(self, dev: str) -> str | None:
        """``clsact``, a legacy ``ingress`` or None (no such qdisc or device)."""
        for q in self._json("tc", "qdisc", "show", "dev", dev):
            if q.get("kind") in ("clsact", "ingress"):
                return str(q["kind"])
        return None

    def get_redirect(self, dev: str) -> str | None:
        kind = self._ingress_kind(dev)
        if kind is None:
            return None
        for f in self._json("tc", "filter", "show", "dev", dev, "ingress"):
            for a in (f.get("options") or {}).get("actions") or []:
                if a.get("kind") == "mirred" and a.get("mirred_action") == "redirect":
                    return str(a.get("to_dev", ""))
        # A legacy ingress qdisc without a redirect is ours to remove; a clsact is shared.
        return "" if kind == "ingress" else None

    def _ensure_clsact(self, dev: str) -> None:
        kind = self._ingress_kind(dev)
        if kind == "ingress":
            self._run("tc", "qdisc", "del", "dev", dev, "ingress", missing_ok=True)
        if kind != "clsact":
            self._run("tc", "qdisc", "add", "dev", dev, "clsact")

    def set_redirect(self, dev: str, ifb: str) -> None:
        self._ensure_clsact(dev)
        pref = str(REDIRECT_PREF)
        self._run("tc", "filter", "del", "dev", dev, "ingress", "pref", pref, missing_ok=True)
        self._run(
            "tc", "filter", "add", "dev", dev, "ingress", "protocol", "all", "pref", pref,
            "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect",
            "dev", ifb,
        )  # fmt: skip

    def del_ingress(self, dev: str) -> None:
        kind = self._ingress_kind(dev)
        if kind == "ingress":
            self._run("tc", "qdisc", "del", "dev", dev, "ingress", missing_ok=True)
        elif kind == "clsact":
            self._run("tc", "filter", "del", "dev", dev, "ingress", "pref",
                      str(REDIRECT_PREF), missing_ok=True)  # fmt: skip

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

    def list_links(self) -> dict[str, int]:
        return {str(r["ifname"]): int(r["ifindex"]) for r in self._json("ip", "link", "show")}

    def _batch(self, lines: Sequence[str], *, json_out: bool = False) -> str:
        argv = ["tc", *(("-n", self.netns) if self.netns else ())]
        argv += [*(("-j",) if json_out else ()), "-batch", "-"]
        r = self.runner.run(argv, input="\n".join(lines) + "\n", timeout=self.timeout)
        if r.returncode != 0:
            raise TcError(f"tc -batch: {(r.stderr or r.stdout).strip()}")
        return r.stdout

    def get_guards(self, devs: Sequence[str]) -> dict[str, frozenset[str]]:
        links = self.list_links()
        devs = [d for d in devs if d in links]
        if not devs:
            return {}
        lines = [f"filter show dev {d} {hook}" for d in devs for hook in ("ingress", "egress")]
        try:
            out = decode_json_stream(self._batch(lines, json_out=True))
        except TcError as e:
            if not any(m in str(e) for m in _MISSING):
                raise
            out = []  # a device went away meanwhile: one process per hook instead
        if len(out) != len(lines):
            out = [self._json("tc", *ln.split()) for ln in lines]
        got: dict[str, set[str]] = {d: set() for d in devs}
        for line, filters in zip(lines, out, strict=True):
            _, _, _, dev, hook = line.split()
            got[dev] |= _guard_of(list(filters), hook)
        return {d: frozenset(g) for d, g in got.items()}

    def set_guards(self, want: Mapping[str, frozenset[str]]) -> None:
        if not want:
            return
        workloads = {d for d, g in want.items() if any(x.startswith("ingress:") for x in g)}
        have = self.get_guards(list(want))
        missing = sorted(set(want) - set(have))
        if missing:
            raise TcError(f"tc guard: Cannot find device {missing[0]!r}")
        kinds = {
            str(q.get("dev")): str(q.get("kind"))
            for q in self._json("tc", "qdisc", "show")
            if q.get("kind") in ("clsact", "ingress")
        }
        foreign = sorted(
            d
            for d in want
            if (kinds.get(d) == "ingress" and d not in workloads)
            or any(
                g.endswith(":" + FOREIGN) and any(w.startswith(g[:-1]) for w in want[d])
                for g in have[d]
            )
        )
        want = {d: g for d, g in want.items() if d not in foreign}
        lines = []
        for dev in sorted(want):
            if kinds.get(dev) == "ingress":  # our QoS's, from an older version
                lines.append(f"qdisc del dev {dev} ingress")
            if kinds.get(dev) != "clsact":
                lines.append(f"qdisc add dev {dev} clsact")
            for hook in ("ingress", "egress"):
                stale = {
                    g
                    for g in have[dev] - want[dev]
                    if g.startswith(hook + ":") and not g.endswith(":" + FOREIGN)
                }
                if stale and not any(g.startswith(hook + ":") for g in want[dev]):
                    lines.append(f"filter del dev {dev} {hook} pref {tcbpf.PREF}")
        if lines:
            self._batch(lines)
        items = [
            tcbpf.Attach(dev, g.split(":")[0], g.split(":")[1])
            for dev in sorted(want)
            for g in sorted(want[dev])
            if g not in have[dev] or kinds.get(dev) != "clsact"
        ]
        try:
            tcbpf.attach(items, self.list_links(), self.netns)
        except BpfUnsupported as e:
            raise TcGuardUnsupported(str(e)) from None
        except BpfError as e:
            raise TcError(str(e)) from None
        if foreign:  # someone else's ingress qdisc or filter is in the way: theirs stays
            what = f"an ingress qdisc or a filter of preference {tcbpf.PREF}"
            raise TcGuardForeign(f"tc guard: {', '.join(foreign)}: {what} (not ours) is in "
                                 "the way; not guarded")  # fmt: skip

    def del_guard(self, dev: str, *, qdisc: bool = False) -> None:
        if qdisc:
            if self._ingress_kind(dev) == "clsact":
                self._run("tc", "qdisc", "del", "dev", dev, "clsact", missing_ok=True)
            return
        ours = {g for g in self.get_guards([dev]).get(dev, ()) if not g.endswith(":" + FOREIGN)}
        for hook in sorted({g.split(":")[0] for g in ours}):
            self._run("tc", "filter", "del", "dev", dev, hook, "pref", str(tcbpf.PREF),
                      missing_ok=True)  # fmt: skip

    def set_local_guard(self, versions: frozenset[int]) -> bool:
        if self._local is None:
            if not versions:
                return False
            self._local = LocalInGuard(self.netns)
        try:
            return self._local.ensure(versions)
        except BpfUnsupported as e:
            raise TcGuardUnsupported(str(e)) from None
        except BpfError as e:
            raise TcError(str(e)) from None

    def monitor_argv(self) -> list[str]:
        """``tc monitor`` of this namespace (for Felix's kernel watcher)."""
        return ["tc", *(("-n", self.netns) if self.netns else ()), "monitor"]


@dataclass
class FakeTc:
    """In-memory :class:`TrafficControl`: ``links`` (name -> MTU; an IFB is a link in
    ``ifbs`` too), ``tbfs``, ``redirects`` (dev -> IFB, "" = bare ingress qdisc),
    ``guards`` (dev -> its guard filters; a device with none is absent), ``local_guard``
    (the IP versions of the local-delivery guard).
    ``fail`` names methods that raise :class:`TcError`; ``calls`` records every write."""

    links: dict[str, int] = field(default_factory=dict)
    ifbs: set[str] = field(default_factory=set)
    tbfs: dict[str, Tbf] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    guards: dict[str, frozenset[str]] = field(default_factory=dict)
    local_guard: frozenset[int] = frozenset()
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
            self.guards.pop(name, None)
            for dev, ifb in list(self.redirects.items()):
                if ifb == name:
                    self.redirects[dev] = ""

    def get_mtu(self, dev: str) -> int | None:
        return self.links.get(dev)

    def list_links(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(sorted(self.links), start=2)}

    def get_guards(self, devs: Sequence[str]) -> dict[str, frozenset[str]]:
        return {d: self.guards.get(d, frozenset()) for d in devs if d in self.links}

    def set_guards(self, want: Mapping[str, frozenset[str]]) -> None:
        for dev in sorted(want):
            self._write("set_guards", dev)
        for dev, g in want.items():
            if g:
                self.guards[dev] = frozenset(g)
            else:
                self.guards.pop(dev, None)

    def del_guard(self, dev: str, *, qdisc: bool = False) -> None:
        if dev in self.guards or (qdisc and dev in self.redirects):
            self._write("del_guard", dev)
            self.guards.pop(dev, None)
            if qdisc:
                self.redirects.pop(dev, None)

    def set_local_guard(self, versions: frozenset[int]) -> bool:
        if versions == self.local_guard:
            return False
        if "set_local_guard" in self.fail:
            raise TcError("injected failure: set_local_guard")
        self.calls.append(("set_local_guard", ",".join(map(str, sorted(versions)))))
        self.local_guard = versions
        return True
