"""Host endpoint rendering: all-interfaces and expectedIPs-only endpoints, applyOnForward,
preDNAT and doNotTrack policy, failsafe ports with ``net`` (golden structure).

``CASES`` (name -> resources) is shared with ``tests/netns/test_felix_hep.py``, which checks
that the kernel accepts every rendered table (``nft -c``).
"""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.felix.calc import CalcGraph
from pycalico.felix.rules import RenderConfig, RenderError, RuleRenderer, TableSpec
from pycalico.felix.rules import names as N
from tests.kit import global_network_policy, host_endpoint

NODE = "node1"
ACCEPTED = "meta mark & 0x10000 == 0x10000"
AFTER_POLICY = "meta mark & 0x110000 vmap { 0x10000 : return, 0x100000 : drop }"
CLEAR_PENDING = "meta mark set meta mark & 0xffefffff"
WILD = N.ALL_INTERFACES


def hep(name: str, iface: str | None, ips: list[str], labels: dict[str, str]) -> dict[str, Any]:
    return host_endpoint(name, node=NODE, interface_name=iface, expected_ips=ips, labels=labels)


def gnp(name: str, **spec: Any) -> dict[str, Any]:
    return global_network_policy(name, **spec)


ALLOW_8080 = [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}]
DENY_FROM = [{"action": "Deny", "source": {"nets": ["198.18.0.3/32"]}}]


def _wildcard() -> list[dict[str, Any]]:
    return [hep("all", "*", ["198.18.0.1"], {"role": "host"})]


CASES: dict[str, list[dict[str, Any]]] = {
    "wildcard-no-policy": _wildcard(),
    "wildcard-normal": [
        *_wildcard(),
        gnp("host-web", selector="role == 'host'", types=["Ingress"], ingress=ALLOW_8080),
    ],
    "named-and-wildcard": [
        *_wildcard(),
        hep("eth1", "eth1", [], {"role": "other"}),
    ],
    "expected-ips-only": [
        hep("byip", None, ["198.18.0.7"], {"role": "host"}),
        gnp(
            "to-hosts",
            selector="all()",
            types=["Egress"],
            egress=[{"action": "Allow", "destination": {"selector": "role == 'host'"}}],
        ),
    ],
    "forward": [
        hep("eth0", "eth0", [], {"role": "host"}),
        gnp(
            "fwd",
            selector="role == 'host'",
            applyOnForward=True,
            types=["Ingress"],
            ingress=[{"action": "Deny", "source": {"nets": ["198.18.0.2/32"]}},
                     {"action": "Allow"}],
        ),
    ],
    "pre-dnat": [
        hep("eth0", "eth0", [], {"role": "host"}),
        gnp(
            "pre",
            selector="role == 'host'",
            preDNAT=True,
            applyOnForward=True,
            types=["Ingress"],
            ingress=DENY_FROM,
        ),
    ],
    "untracked": [
        *_wildcard(),
        gnp(
            "nt",
            selector="role == 'host'",
            doNotTrack=True,
            applyOnForward=True,
            types=["Ingress", "Egress"],
            ingress=[{"action": "Allow", "protocol": "UDP", "destination": {"ports": [5000]}}],
            egress=[{"action": "Allow", "protocol": "UDP", "source": {"ports": [5000]}}],
        ),
    ],
}  # fmt: skip

FAILSAFE_NET = {
    "failsafe_inbound": (("tcp", 22, "198.18.0.0/24"), ("tcp", 22, "fd00::/64"), ("udp", 68)),
    "failsafe_outbound": (("udp", 53), ("tcp", 179, "198.18.0.2/32")),
}


def render(resources: list[dict[str, Any]], **cfg: Any) -> RuleRenderer:
    g = CalcGraph(NODE)
    g.load(resources)
    r = RuleRenderer(RenderConfig(**cfg))
    r.apply(g.flush())
    return r


def bodies(t: TableSpec, chain: str) -> list[str]:
    return [r.body for r in t.chains[chain].rules]


def test_wildcard_is_the_dispatch_default_except_lo_and_workloads() -> None:
    t = render(CASES["wildcard-no-policy"]).tables()["ip"]
    th, fh = f"cali-th-{WILD}", f"cali-fh-{WILD}"
    assert len(th) == N.MAX_NAME  # Calico's name fits exactly
    assert bodies(t, N.FROM_HEP_DISPATCH) == [
        f"iifname vmap @{N.FROM_HEP_MAP}",
        f'iifname != "lo" iifname != "cali*" goto {fh}',
    ]
    assert bodies(t, N.TO_HEP_DISPATCH)[1] == f'oifname != "lo" oifname != "cali*" goto {th}'
    assert t.sets[N.FROM_HEP_MAP].elements == frozenset()  # "*" is not an interface name
    # No policy and no profile: default deny of host traffic, except failsafe.
    assert bodies(t, fh)[2] == "jump cali-failsafe-in"
    assert bodies(t, fh)[-1] == "drop"
    # Forwarded traffic: no applyOnForward policy -> allowed by default.
    fhfw = N.endpoint_chain(N.FROM_HEP_FWD, WILD)
    assert fhfw.startswith("cali-fhfw-_")  # too long for 28 chars: hashed
    assert bodies(t, N.FROM_HEP_FWD_DISPATCH)[1].endswith(f"goto {fhfw}")
    assert bodies(t, fhfw) == [
        "ct state established,related accept",
        "ct state invalid drop",
        "meta mark set meta mark & 0xffe4ffff",
        "meta mark set meta mark | 0x10000 return",
    ]
    # Neither pre-DNAT nor untracked policy: no raw/mangle chains, empty raw/mangle dispatch.
    assert not [c for c in t.chains if c.startswith(("raw-cali-th-", "mangle-cali-fh-"))]
    assert bodies(t, N.RAW_FROM_HEP_DISPATCH) == [f"iifname vmap @{N.RAW_FROM_HEP_MAP}"]


def test_wildcard_normal_policy_not_applied_to_forwarded_traffic() -> None:
    t = render(CASES["wildcard-normal"]).tables()["ip"]
    assert any("jump cali-pi-gnp/host-web" in b for b in bodies(t, f"cali-fh-{WILD}"))
    fhfw = N.endpoint_chain(N.FROM_HEP_FWD, WILD)
    assert not any("cali-pi-" in b for b in bodies(t, fhfw))


def test_named_endpoint_wins_over_wildcard() -> None:
    t = render(CASES["named-and-wildcard"]).tables()["ip"]
    assert t.sets[N.FROM_HEP_MAP].elements == {'"eth1" : goto cali-fh-eth1'}
    assert t.sets[N.TO_HEP_FWD_MAP].elements == {'"eth1" : goto cali-thfw-eth1'}
    assert bodies(t, N.FROM_HEP_DISPATCH)[1].endswith(f"goto cali-fh-{WILD}")


def test_expected_ips_only_endpoint_has_no_chains_but_is_in_ip_sets() -> None:
    t = render(CASES["expected-ips-only"]).tables()["ip"]
    assert not [c for c in t.chains if c.startswith(("cali-th-", "cali-fh-", "cali-thfw-"))]
    assert len(bodies(t, N.FROM_HEP_DISPATCH)) == 1
    host_sets = [s for n, s in t.sets.items() if n.startswith("cali40s-")]
    assert [s.elements for s in host_sets] == [frozenset({"198.18.0.7/32"})]


def test_apply_on_forward_chains() -> None:
    t = render(CASES["forward"]).tables()["ip"]
    fhfw = bodies(t, "cali-fhfw-eth0")
    assert fhfw[3:] == [
        "meta mark set meta mark & 0xfffdffff",  # start of tier default
        "meta mark & 0x20000 == 0 meta mark set meta mark | 0x100000 jump cali-pi-gnp/fwd",
        AFTER_POLICY,
        "meta mark & 0x20000 == 0 drop",  # end of tier: a forward policy applies
        "meta mark set meta mark | 0x10000 return",
    ]
    # Egress direction has no forward policy: allowed by default.
    assert bodies(t, "cali-thfw-eth0")[-1] == "meta mark set meta mark | 0x10000 return"
    assert len(bodies(t, "cali-thfw-eth0")) == 4
    # A normal applyOnForward policy also applies to the host's own traffic.
    assert any("jump cali-pi-gnp/fwd" in b for b in bodies(t, "cali-fh-eth0"))
    assert t.sets[N.FROM_HEP_FWD_MAP].elements == {'"eth0" : goto cali-fhfw-eth0'}
    fwd = bodies(t, "filter-FORWARD")
    hep_in = fwd.index("meta mark & 0x10000 == 0 jump cali-from-hep-forward")
    assert hep_in < fwd.index('iifname "cali*" jump cali-from-wl-dispatch')
    assert fwd.index("jump cali-to-hep-forward") < fwd.index('iifname "cali*" accept')


def test_pre_dnat_chain_in_mangle_before_dnat() -> None:
    t = render(CASES["pre-dnat"]).tables()["ip"]
    base = t.chains["mangle-PREROUTING"]
    assert base.hook is not None and (base.hook.hook, base.hook.priority) == ("prerouting", -150)
    assert bodies(t, "mangle-PREROUTING")[-1] == f"jump {N.MANGLE_FROM_HEP_DISPATCH}"
    assert t.sets[N.MANGLE_FROM_HEP_MAP].elements == {'"eth0" : goto mangle-cali-fh-eth0'}
    assert bodies(t, "mangle-cali-fh-eth0") == [
        "jump cali-failsafe-in",
        "meta mark set meta mark & 0xffe4ffff",
        "meta mark set meta mark & 0xfffdffff",
        "meta mark & 0x20000 == 0 meta mark set meta mark | 0x100000 jump cali-pi-gnp/pre",
        AFTER_POLICY,
    ]  # no end-of-tier drop: unmatched packets go on to normal policy
    assert bodies(t, "cali-pi-gnp/pre") == ["ip saddr 198.18.0.3/32 drop", CLEAR_PENDING]
    # Pre-DNAT policy is not normal or forward policy.
    assert not any("gnp/pre" in b for c in ("cali-fh-eth0", "cali-fhfw-eth0") for b in bodies(t, c))
    # The normal host chain of a HEP with only pre-DNAT policy: profiles/drop as before.
    assert bodies(t, "cali-fh-eth0")[-1] == "drop"


def test_untracked_chains_in_raw_both_directions() -> None:
    t = render(CASES["untracked"]).tables()["ip"]
    pre, out = t.chains["raw-PREROUTING"], t.chains["raw-OUTPUT"]
    assert pre.hook is not None and (pre.hook.hook, pre.hook.priority) == ("prerouting", -300)
    assert out.hook is not None and (out.hook.hook, out.hook.priority) == ("output", -300)
    assert bodies(t, "raw-PREROUTING") == [
        "meta mark set meta mark & 0xffe4ffff",
        f"jump {N.RAW_FROM_HEP_DISPATCH}",
        f"{ACCEPTED} notrack accept",
    ]
    raw_fh = N.endpoint_chain(N.RAW_FROM_HEP, WILD)
    raw_th = N.endpoint_chain(N.RAW_TO_HEP, WILD)
    assert bodies(t, N.RAW_FROM_HEP_DISPATCH)[1].endswith(f"goto {raw_fh}")
    assert bodies(t, N.RAW_TO_HEP_DISPATCH)[1].endswith(f"goto {raw_th}")
    assert bodies(t, raw_fh)[0] == "jump raw-cali-failsafe-in"
    assert (
        "meta mark & 0x20000 == 0 meta mark set meta mark | 0x100000 jump cali-pi-gnp/nt"
        in bodies(t, raw_fh)
    )
    assert (
        "meta mark & 0x20000 == 0 meta mark set meta mark | 0x100000 jump cali-po-gnp/nt"
        in bodies(t, raw_th)
    )
    assert not any(b.endswith(" drop") for b in bodies(t, raw_fh) + bodies(t, raw_th))
    # Filter base chains accept what untracked policy allowed.
    untracked = f"ct state untracked {ACCEPTED} accept"
    for base in ("filter-INPUT", "filter-OUTPUT", "filter-FORWARD"):
        assert untracked in bodies(t, base)
    # Untracked policy is neither normal nor forward policy.
    assert not any("gnp/nt" in b for b in bodies(t, f"cali-fh-{WILD}"))


def test_untracked_egress_only_still_renders_both_raw_chains() -> None:
    res = [*_wildcard(), gnp("nt", selector="all()", doNotTrack=True, applyOnForward=True,
                             types=["Egress"], egress=[{"action": "Allow"}])]  # fmt: skip
    t = render(res).tables()["ip"]
    assert N.endpoint_chain(N.RAW_TO_HEP, WILD) in t.chains
    assert N.endpoint_chain(N.RAW_FROM_HEP, WILD) in t.chains


def test_failsafe_net_restricts_remote_end_per_family() -> None:
    tables = render(CASES["wildcard-no-policy"], **FAILSAFE_NET).tables()
    v4, v6 = tables["ip"], tables["ip6"]
    assert bodies(v4, N.FAILSAFE_IN) == [
        "ip saddr 198.18.0.0/24 tcp dport 22 accept",
        "udp dport 68 accept",
    ]
    assert bodies(v6, N.FAILSAFE_IN) == [
        "ip6 saddr fd00::/64 tcp dport 22 accept",
        "udp dport 68 accept",
    ]
    assert bodies(v4, N.FAILSAFE_OUT) == [
        "ip daddr 198.18.0.2/32 tcp dport 179 accept",
        "udp dport 53 accept",
    ]
    assert bodies(v6, N.FAILSAFE_OUT) == ["udp dport 53 accept"]  # v4-only net left out
    # Raw failsafe also passes the replies of the other direction's failsafe flows.
    assert bodies(v4, N.RAW_FAILSAFE_IN) == [
        "ip saddr 198.18.0.0/24 tcp dport 22 accept",
        "udp dport 68 accept",
        "ip saddr 198.18.0.2/32 tcp sport 179 accept",
        "udp sport 53 accept",
    ]
    assert bodies(v4, N.RAW_FAILSAFE_OUT)[2:] == [
        "ip daddr 198.18.0.0/24 tcp sport 22 accept",
        "udp sport 68 accept",
    ]


@pytest.mark.parametrize(
    "ports,match",
    [
        ((("icmp", 1),), "protocol must be TCP, UDP or SCTP"),
        ((("tcp", 70000),), "invalid port"),
        ((("tcp", 22, "10.0.0.300/8"),), "invalid net"),
    ],
)
def test_bad_failsafe_ports_are_rejected(ports: Any, match: str) -> None:
    with pytest.raises(RenderError, match=f"failsafeInboundHostPorts: {match}"):
        RenderConfig(failsafe_inbound=ports)


def test_policy_and_endpoint_changes_update_hep_chains_and_maps() -> None:
    g = CalcGraph(NODE)
    g.load(CASES["wildcard-no-policy"])
    r = RuleRenderer()
    r.apply(g.flush())
    raw_fh = N.endpoint_chain(N.RAW_FROM_HEP, WILD)
    assert raw_fh not in r.tables()["ip"].chains
    nt = CASES["untracked"][-1]
    g.load([*CASES["wildcard-no-policy"], nt])
    r.apply(g.flush())
    t = r.tables()["ip"]
    assert raw_fh in t.chains and bodies(t, N.RAW_FROM_HEP_DISPATCH)[1].endswith(raw_fh)
    # Rename the interface: the wildcard default goes away, the named entry appears.
    g.load([hep("all", "eth9", ["198.18.0.1"], {"role": "host"}), nt])
    r.apply(g.flush())
    t = r.tables()["ip"]
    assert raw_fh not in t.chains and f"cali-fh-{WILD}" not in t.chains
    assert len(bodies(t, N.RAW_FROM_HEP_DISPATCH)) == 1
    assert t.sets[N.RAW_FROM_HEP_MAP].elements == {'"eth9" : goto raw-cali-fh-eth9'}
    # Deterministic: a fresh renderer of the same state gives the same table.
    assert render([hep("all", "eth9", ["198.18.0.1"], {"role": "host"}), nt]).tables() == (
        r.tables()
    )


def test_every_referenced_chain_and_map_exists() -> None:
    for name, res in CASES.items():
        for t in render(res, **FAILSAFE_NET).tables().values():
            for chain in t.chains.values():
                for rule in chain.rules:
                    words = rule.body.split()
                    for verb in ("jump", "goto"):
                        if verb in words:
                            target = words[words.index(verb) + 1]
                            assert target in t.chains, f"{name}: {chain.name} -> {target}"
                    for w in words:
                        if w.startswith("@"):
                            assert w[1:] in t.sets, f"{name}: {chain.name} uses {w}"
            for s in t.sets.values():
                for e in s.elements if s.map_to else ():
                    assert e.split(" goto ")[1] in t.chains, f"{name}: {s.name}: {e}"
