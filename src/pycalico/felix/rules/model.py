"""Value objects of the nftables ruleset Felix wants, and their nft text form.

Owns: :class:`Family` (the per-IP-version constants: ``ip``/``ip6`` table, address match
keywords, set type), :class:`Hook`, :class:`Rule`, :class:`Chain`, :class:`NftSet` (plain
sets and verdict maps) and :class:`TableSpec` (one whole ``calico`` table).

Invariants:
- Everything is frozen and compared structurally; a chain's identity for reconciliation is
  the tuple of its rule hashes (:attr:`Chain.hashes`), which is exactly what a readback of
  the kernel (rule comments ``cali:<hash>``) gives back.
- A rule's hash covers the chain name, the previous rule's hash and the rule text (Calico's
  chained rule hashes), so inserting a rule changes the hashes of the rules after it.
- Set elements are kept in canonical text (``10.0.0.0/24``, ``10.0.0.1/32``,
  ``10.0.0.1 . 6 . 80``, ``"cali1234" : goto cali-tw-cali1234``) so that desired and
  read-back states compare with ``==``.
- Text rendering is deterministic (chains and sets sorted by name, elements sorted).
"""

from __future__ import annotations

from base64 import urlsafe_b64encode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import sha224

HASH_LEN = 16
COMMENT_PREFIX = "cali:"


@dataclass(frozen=True)
class Family:
    """One IP version's table family and match keywords (IPv4 and IPv6 share all code)."""

    name: str  # nft family: "ip" or "ip6"
    version: int
    addr: str  # "ip" / "ip6" payload keyword for saddr/daddr
    addr_type: str  # "ipv4_addr" / "ipv6_addr"
    icmp: str  # "icmp" / "icmpv6"
    icmp_proto: int  # 1 / 58
    set_prefix: str  # "cali40" / "cali60"


IPV4 = Family("ip", 4, "ip", "ipv4_addr", "icmp", 1, "cali40")
IPV6 = Family("ip6", 6, "ip6", "ipv6_addr", "icmpv6", 58, "cali60")
FAMILIES = {"ip": IPV4, "ip6": IPV6}


@dataclass(frozen=True)
class Hook:
    """A base chain's hook: ``type <type> hook <hook> priority <priority>; policy <policy>``."""

    hook: str
    priority: int
    type: str = "filter"
    policy: str = "accept"

    def text(self) -> str:
        return f"type {self.type} hook {self.hook} priority {self.priority}; policy {self.policy};"


@dataclass(frozen=True)
class Rule:
    body: str
    hash: str

    def text(self) -> str:
        return f'{self.body} comment "{COMMENT_PREFIX}{self.hash}"'


def rule_hash(chain: str, prev: str, body: str) -> str:
    digest = sha224(f"{chain}\0{prev}\0{body}".encode()).digest()
    return urlsafe_b64encode(digest).decode()[:HASH_LEN]


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    hook: Hook | None = None
    hashes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hashes", tuple(r.hash for r in self.rules))

    def decl(self, family: str, table: str) -> str:
        """``add chain`` command (with the hook for a base chain)."""
        hook = f" {{ {self.hook.text()} }}" if self.hook else ""
        return f"add chain {family} {table} {self.name}{hook}"

    def block(self) -> str:
        lines = [f"\tchain {self.name} {{"]
        if self.hook:
            lines.append(f"\t\t{self.hook.text()}")
        lines += [f"\t\t{r.text()}" for r in self.rules]
        lines.append("\t}")
        return "\n".join(lines)


def make_chain(name: str, bodies: Iterable[str], hook: Hook | None = None) -> Chain:
    """A chain whose rules get chained content hashes."""
    rules = []
    prev = ""
    for body in bodies:
        h = rule_hash(name, prev, body)
        rules.append(Rule(body, h))
        prev = h
    return Chain(name, tuple(rules), hook)


@dataclass(frozen=True)
class NftSet:
    """A named set (``map_to`` None) or map (``map_to="verdict"``).

    ``type`` is the nft type text (``ipv4_addr``, ``ipv4_addr . inet_proto . inet_service``,
    ``ifname``); ``flags`` e.g. ``("interval",)``. Map elements are ``key : verdict``.
    """

    name: str
    type: str
    elements: frozenset[str]
    flags: tuple[str, ...] = ()
    map_to: str | None = None

    @property
    def kind(self) -> str:
        return "map" if self.map_to else "set"

    def shape(self) -> tuple[str, str, tuple[str, ...], str | None]:
        """What must match for two versions of the set to be updatable element-wise."""
        return (self.name, self.type, self.flags, self.map_to)

    def type_text(self) -> str:
        t = f"type {self.type}"
        if self.map_to:
            t += f" : {self.map_to}"
        t += ";"
        if self.flags:
            t += f" flags {', '.join(self.flags)};"
        return t

    def decl(self, family: str, table: str) -> str:
        return f"add {self.kind} {family} {table} {self.name} {{ {self.type_text()} }}"

    def block(self) -> str:
        lines = [f"\t{self.kind} {self.name} {{", f"\t\t{self.type_text()}"]
        if self.elements:
            lines.append(f"\t\telements = {{ {', '.join(sorted(self.elements))} }}")
        lines.append("\t}")
        return "\n".join(lines)


def element_key(elem: str) -> str:
    """The key part of a set/map element (what ``delete element`` takes)."""
    key, sep, _ = elem.partition(" : ")
    return key if sep else elem


@dataclass(frozen=True)
class TableSpec:
    """A whole table: what the driver reconciles the kernel to."""

    family: str
    name: str
    chains: Mapping[str, Chain]
    sets: Mapping[str, NftSet]

    def text(self) -> str:
        """``table <family> <name> { ... }`` with everything in it (deterministic)."""
        parts = [f"table {self.family} {self.name} {{"]
        parts += [self.sets[n].block() for n in sorted(self.sets)]
        parts += [self.chains[n].block() for n in sorted(self.chains)]
        parts.append("}")
        return "\n".join(parts) + "\n"

    def rule_count(self) -> int:
        return sum(len(c.rules) for c in self.chains.values())
