"""Host compatibility checks: can this machine run a pycalico node?

Owns: the list of kernel features and programs pycalico needs (:data:`FEATURES`,
:data:`PROGRAMS`), and how each is detected. A kernel feature counts as present, in Calico's
order, when its module is loaded (``/proc/modules``), listed in ``modules.dep`` or
``modules.builtin`` of the running kernel, or enabled (``=y``/``=m``) in the kernel config
(``--kernel-config``, ``/proc/config.gz``, ``/boot/config-<release>``, the usual source
trees). A feature with an alternative (kernel IPIP -> the userspace IPIP tunnel over TUN)
is satisfied by either and says which.

Invariants: read-only (nothing is loaded or changed); never raises for a missing file (a
source that cannot be read is skipped); the verdict is ``ok`` only when every required
feature and program is present. Optional features only inform: they name what stops working
without them (VXLAN pools, IPv6, flow logs, BGP passwords).
"""

from __future__ import annotations

import gzip
import os
import platform
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: The oldest kernel pycalico's nftables programming is tested against (Debian 11's 5.10):
#: ``inet`` tables with ``ct`` expressions, interval sets and verdict maps.
MIN_KERNEL = (5, 10)


@dataclass(frozen=True)
class Feature:
    """A kernel feature: its module name(s) and config symbol(s) (any one suffices)."""

    name: str
    modules: tuple[str, ...]
    configs: tuple[str, ...]
    required: bool
    needed_for: str
    #: A feature that stands in when this one is missing (e.g. the userspace IPIP over TUN).
    fallback: str | None = None


FEATURES: tuple[Feature, ...] = (
    Feature("net_namespaces", (), ("CONFIG_NET_NS",), True, "workload isolation"),
    Feature("veth", ("veth",), ("CONFIG_VETH",), True, "workload interfaces"),
    Feature("nf_tables", ("nf_tables",), ("CONFIG_NF_TABLES",), True, "policy"),
    Feature("nf_tables_inet", ("nf_tables_inet",), ("CONFIG_NF_TABLES_INET",), True, "policy"),
    Feature("nft_ct", ("nft_ct",), ("CONFIG_NFT_CT",), True, "connection tracking in policy"),
    Feature("nf_conntrack", ("nf_conntrack",), ("CONFIG_NF_CONNTRACK",), True, "policy"),
    Feature("nft_nat", ("nft_nat",), ("CONFIG_NFT_NAT",), True, "natOutgoing"),
    Feature("nft_masq", ("nft_masq",), ("CONFIG_NFT_MASQ",), True, "natOutgoing"),
    Feature("vxlan", ("vxlan",), ("CONFIG_VXLAN",), False, "VXLAN IP pools"),
    Feature("ipip", ("ipip",), ("CONFIG_NET_IPIP",), False, "IPIP IP pools (kernel)", "tun"),
    Feature("tun", ("tun",), ("CONFIG_TUN",), False, "the userspace IPIP fallback"),
    Feature("ipv6", ("ipv6",), ("CONFIG_IPV6",), False, "IPv6 pools"),
    Feature("tcp_md5", (), ("CONFIG_TCP_MD5SIG",), False, "BGP passwords"),
    Feature(
        "nfnetlink_log", ("nfnetlink_log",), ("CONFIG_NETFILTER_NETLINK_LOG",), False, "flow logs"
    ),
    Feature(
        "nf_conntrack_netlink",
        ("nf_conntrack_netlink",),
        ("CONFIG_NF_CT_NETLINK",),
        False,
        "flow logs (byte counts)",
    ),
)

#: Programs: (name, required, needed for).
PROGRAMS: tuple[tuple[str, bool, str], ...] = (
    ("nft", True, "policy, NAT (nftables)"),
    ("ip", True, "routes, links (iproute2)"),
    ("bird", False, "BGP (bird2); not needed with CALICO_NETWORKING_BACKEND=vxlan or none"),
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    required: bool
    detail: str


@dataclass
class HostReport:
    kernel: str
    kernel_ok: bool
    features: list[CheckResult] = field(default_factory=list)
    programs: list[CheckResult] = field(default_factory=list)
    config_source: str | None = None

    @property
    def ok(self) -> bool:
        checks = [*self.features, *self.programs]
        return self.kernel_ok and all(c.ok for c in checks if c.required)


def parse_release(release: str) -> tuple[int, int]:
    """``"6.18.44-fc"`` -> ``(6, 18)``; unparseable parts count as 0."""
    major, minor = [*release.split("-", 1)[0].split("."), "0", "0"][:2]
    return (int(major) if major.isdigit() else 0, int(minor) if minor.isdigit() else 0)


def _read_text(path: Path) -> str | None:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", errors="replace") as f:
                return f.read()
        return path.read_text(errors="replace")
    except OSError:
        return None


def config_candidates(release: str, override: str | None = None) -> list[Path]:
    """Where the kernel config may be, in Calico's order (with ``/proc/config.gz`` first)."""
    if override:
        return [Path(override)]
    return [
        Path("/proc/config.gz"),
        Path("/usr/src/linux/.config"),
        Path(f"/boot/config-{release}"),
        Path(f"/usr/src/linux-{release}/.config"),
        Path(f"/usr/src/linux-headers-{release}/.config"),
        Path(f"/lib/modules/{release}/build/.config"),
    ]


def parse_kernel_config(text: str) -> set[str]:
    """The symbols enabled (``=y`` or ``=m``) in a kernel config."""
    out: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and value in ("y", "m"):
            out.add(key)
    return out


def module_names(text: str, *, path_column: bool) -> set[str]:
    """Module names from ``/proc/modules`` (first column) or ``modules.dep``/``.builtin``
    (``kernel/net/.../vxlan.ko[.xz]:`` paths); ``-`` and ``_`` are the same to the kernel."""
    out: set[str] = set()
    for line in text.splitlines():
        word = line.split(":", 1)[0].split()[0] if line.strip() else ""
        if not word:
            continue
        if path_column:
            word = os.path.basename(word).split(".ko", 1)[0]
        out.add(word.replace("-", "_"))
    return out


@dataclass
class KernelFacts:
    """What the detectors read: loaded/known modules and enabled config symbols."""

    release: str
    modules: set[str] = field(default_factory=set)
    configs: set[str] = field(default_factory=set)
    config_source: str | None = None

    @classmethod
    def read(cls, release: str | None = None, kernel_config: str | None = None) -> KernelFacts:
        release = release or platform.release()
        facts = cls(release)
        loaded = _read_text(Path("/proc/modules"))
        if loaded:
            facts.modules |= module_names(loaded, path_column=False)
        for name in ("modules.dep", "modules.builtin"):
            text = _read_text(Path(f"/lib/modules/{release}/{name}"))
            if text:
                facts.modules |= module_names(text, path_column=True)
        for path in config_candidates(release, kernel_config):
            text = _read_text(path)
            if text:
                facts.configs = parse_kernel_config(text)
                facts.config_source = str(path)
                break
        return facts

    def has(self, feature: Feature) -> bool:
        return any(m in self.modules for m in feature.modules) or any(
            c in self.configs for c in feature.configs
        )


def check_features(facts: KernelFacts, features: Iterable[Feature] = FEATURES) -> list[CheckResult]:
    by_name = {f.name: f for f in FEATURES}
    out: list[CheckResult] = []
    for f in features:
        if facts.has(f):
            out.append(CheckResult(f.name, True, f.required, "OK"))
            continue
        fb = by_name.get(f.fallback or "")
        if fb is not None and facts.has(fb):
            out.append(CheckResult(f.name, True, f.required, f"OK (fallback: {fb.name})"))
            continue
        verdict = "FAIL" if f.required else "missing"
        out.append(CheckResult(f.name, False, f.required, f"{verdict}: needed for {f.needed_for}"))
    return out


def check_programs(
    programs: Sequence[tuple[str, bool, str]] = PROGRAMS, path: str | None = None
) -> list[CheckResult]:
    out: list[CheckResult] = []
    for name, required, why in programs:
        found = shutil.which(name, path=path)
        if found:
            out.append(CheckResult(name, True, required, f"OK ({found})"))
        else:
            verdict = "FAIL" if required else "missing"
            out.append(CheckResult(name, False, required, f"{verdict}: needed for {why}"))
    return out


def check_host(
    kernel_config: str | None = None, release: str | None = None, path: str | None = None
) -> HostReport:
    """Every check, against this host (or the given release/config/PATH)."""
    facts = KernelFacts.read(release, kernel_config)
    return HostReport(
        kernel=facts.release,
        kernel_ok=parse_release(facts.release) >= MIN_KERNEL,
        features=check_features(facts),
        programs=check_programs(path=path),
        config_source=facts.config_source,
    )


def format_report(report: HostReport) -> str:
    """Calico's ``node checksystem`` layout: version, modules, then one verdict line."""
    lines = ["Checking kernel version..."]
    want = ".".join(map(str, MIN_KERNEL))
    lines.append(f"\t\t{report.kernel:<24}{'OK' if report.kernel_ok else f'FAIL (< {want})'}")
    src = f" (config: {report.config_source})" if report.config_source else " (no kernel config)"
    lines.append(f"Checking kernel modules...{src}")
    lines += [f"\t\t{c.name:<24}{c.detail}" for c in report.features]
    lines.append("Checking programs...")
    lines += [f"\t\t{c.name:<24}{c.detail}" for c in report.programs]
    lines.append(
        "System meets minimum system requirements to run Calico!"
        if report.ok
        else "System doesn't meet one or more minimum systems requirements to run Calico"
    )
    return "\n".join(lines)
