"""One pool-routing rule, pinned: Felix's route calc and BIRD's rendered kernel export both
follow pycalico.model.routing.cluster_route_owner for every combination of encapsulation,
mode and FelixConfiguration/BGPConfiguration ``programClusterRoutes``."""

from __future__ import annotations

import ipaddress
import itertools
import re
from typing import Any

import pytest

from pycalico.bgp import compute_bird_config, render_bird_config
from pycalico.felix.calc.routes import HostFacts, compute
from pycalico.model.felixconfig import resolve, specs_by_name
from pycalico.model.network import Block, IPPool, Node
from pycalico.model.routing import BGP_DEFAULT_PCR, FELIX_DEFAULT_PCR, cluster_route_owner
from tests.kit import node, resource

POOL_CIDR = "10.244.0.0/16"
REMOTE_BLOCK = "10.244.2.0/26"
PCRS = ("Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly", None)
POOLS = (  # (ipipMode, vxlanMode)
    ("Never", "Never"),
    ("Always", "Never"),
    ("CrossSubnet", "Never"),
    ("Never", "Always"),
    ("Never", "CrossSubnet"),
)


def _node(name: str, i: int) -> dict[str, Any]:
    return node(
        name,
        f"198.18.1.{i}/24",
        ipip_tunnel_addr=f"10.244.{i}.1",
        vxlan_tunnel_addr=f"10.244.{i}.0",
        vxlan_mac=f"66:00:00:00:00:0{i}",
    )


NODES = [_node("n1", 1), _node("n2", 2)]
BLOCKS = [
    resource("IPAMBlock", "b1", {"cidr": "10.244.1.0/26", "affinity": "host:n1"}),
    resource("IPAMBlock", "b2", {"cidr": REMOTE_BLOCK, "affinity": "host:n2"}),
]


def _cfg(kind: str, pcr: str | None) -> list[dict[str, Any]]:
    spec = {} if pcr is None else {"programClusterRoutes": pcr}
    return [resource(kind, "default", spec)]


def felix_programs(pool: dict[str, Any], felix_pcr: str | None) -> bool:
    felix_cfgs = {"default": _cfg("FelixConfiguration", felix_pcr)[0]}
    cfg = resolve("n1", specs_by_name(felix_cfgs))
    nodes = {n["metadata"]["name"]: Node.from_resource(n) for n in NODES}
    blocks = [b for b in (Block.from_resource(x) for x in BLOCKS) if b is not None]
    facts = HostFacts(underlay_iface="eth0", host_mtu=1500)
    d = compute("n1", [IPPool.from_resource(pool)], nodes, blocks, cfg, facts)
    return ipaddress.ip_network(REMOTE_BLOCK) in d.routes


def bird_programs(
    pool: dict[str, Any], felix_pcr: str | None, bgp_pcr: str | None
) -> tuple[bool, tuple[str, ...]]:
    cfg = compute_bird_config(
        "n1",
        nodes=NODES,
        pools=[pool],
        bgp_configurations=_cfg("BGPConfiguration", bgp_pcr),
        felix_configurations=_cfg("FelixConfiguration", felix_pcr),
    )
    text = render_bird_config(cfg)
    m = re.search(r"filter calico_kernel_programming4 \{(.*?)\n\}", text, re.S)
    assert m is not None, text
    rejected = re.search(r"if \( net ~ \[ ([^\]]*) \] \) then \{ reject; \}", m.group(1))
    rejects = rejected is not None and f"{POOL_CIDR}+" in rejected.group(1)
    return not rejects, cfg.warnings


@pytest.mark.parametrize(
    ("modes", "felix_pcr", "bgp_pcr"), list(itertools.product(POOLS, PCRS, PCRS))
)
def test_felix_and_bird_follow_the_one_rule(
    modes: tuple[str, str], felix_pcr: str | None, bgp_pcr: str | None
) -> None:
    ipip, vxlan = modes
    pool = {
        "kind": "IPPool",
        "metadata": {"name": "p"},
        "spec": {"cidr": POOL_CIDR, "ipipMode": ipip, "vxlanMode": vxlan},
    }
    owner = cluster_route_owner(IPPool.from_resource(pool), felix_pcr, bgp_pcr)
    felix = felix_programs(pool, felix_pcr)
    bird, warnings = bird_programs(pool, felix_pcr, bgp_pcr)
    assert felix == (owner == "felix")
    assert bird == (owner == "bird")
    assert not (felix and bird)
    if not felix and not bird:
        assert any("IPPool p" in w for w in warnings), warnings


def test_defaults_and_precedence() -> None:
    assert (FELIX_DEFAULT_PCR, BGP_DEFAULT_PCR) == ("EnabledIPIPOnly", "EnabledNoEncapOnly")

    def owner(ipip: str, vxlan: str, f: str | None, b: str | None) -> str | None:
        p = IPPool("p", ipaddress.ip_network(POOL_CIDR), ipip_mode=ipip, vxlan_mode=vxlan)
        return cluster_route_owner(p, f, b)

    assert owner("Never", "Always", "Disabled", "Enabled") == "felix"
    assert owner("Always", "Never", None, None) == "felix"
    assert owner("Never", "Never", None, None) == "bird"
    assert owner("Never", "Never", "Enabled", "Enabled") == "felix"
    assert owner("Always", "Never", "Disabled", "EnabledNoEncapOnly") is None
