"""render_bird_config: structure of the rendered BIRD 2 config, and `bird -p` accepts it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.bgp import BirdConfig, compute_bird_config, render_bird_config
from tests.unit.test_bgp_helpers import affinity, bgpconfig, bgpfilter, node, peer, pool

NODES = [
    node("n1", "198.18.0.1", "fd00::1"),
    node("n2", "198.18.0.2", "fd00::2", asNumber=65002),
    node("n3", "198.18.0.3", labels={"rr": ""}, routeReflectorClusterID="1.0.0.1"),
]
POOLS = [
    pool("p", "10.244.0.0/16"),
    pool("vx", "10.99.0.0/16", vxlanMode="Always"),
    pool("noexp", "10.97.0.0/16", disableBGPExport=True),
    pool("p6", "fd10::/48"),
]
AFFS = [
    affinity("n1", "10.244.1.0/26"),
    affinity("n1", "fd10::/122"),
    affinity("n3", "10.244.3.0/26"),
]
FILTER = bgpfilter(
    "f1",
    exportV4=[
        {
            "action": "Accept",
            "cidr": "10.244.0.0/16",
            "matchOperator": "In",
            "prefixLength": {"min": 24, "max": 26},
            "source": "RemotePeers",
            "interface": "eth*",
        },
        {"action": "Reject", "cidr": "10.1.0.0/16", "matchOperator": "NotEqual"},
        {"action": "Reject", "cidr": "10.2.0.0/16", "matchOperator": "NotIn"},
        {"action": "Reject"},
    ],
    importV4=[{"action": "Reject", "cidr": "0.0.0.0/0", "matchOperator": "Equal"}],
    importV6=[{"action": "Accept", "cidr": "fd00::/8", "matchOperator": "In"}],
)
PEERS = [
    peer(
        "tor",
        peerIP="198.18.0.254:1179",
        asNumber=64513,
        password="s3cret",
        keepaliveTime="10s",
        maxRestartTime="1m",
        ttlSecurity=1,
        nextHopMode="Self",
        numAllowedLocalASNumbers=2,
        filters=["f1"],
    ),
    peer("rr", nodeSelector="all()", peerSelector="has(rr)"),
    peer("v6", node="n1", peerIP="fd00::fe", asNumber="1.10", localASNumber=65100, filters=["f1"]),
    peer("keep", node="n1", peerIP="198.18.0.250", asNumber=64512, nextHopMode="Keep"),
]


def _cfg(name: str = "n1", **kw: object) -> BirdConfig:
    args: dict[str, object] = {
        "nodes": NODES,
        "peers": PEERS,
        "filters": [FILTER],
        "pools": POOLS,
        "block_affinities": AFFS,
        "borrowed": ["10.244.2.5"],
    }
    args.update(kw)
    return compute_bird_config(name, **args)  # type: ignore[arg-type]


def _protocol(text: str, name: str) -> str:
    m = re.search(rf"^protocol bgp {name} from \S+ \{{\n(.*?)^\}}", text, re.S | re.M)
    assert m, f"no protocol {name} in config"
    return m.group(1)


def _bird_parse(text: str, tmp_path: Path) -> None:
    if shutil.which("bird") is None:
        pytest.skip("bird not installed")
    path = tmp_path / "bird.cfg"
    path.write_text(text)
    p = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, f"bird rejected config: {p.stderr}\n{text}"


def test_render_is_deterministic_and_formats_the_model() -> None:
    text = render_bird_config(_cfg())
    assert text == render_bird_config(_cfg())
    assert "router id 198.18.0.1;" in text
    assert "route 10.244.1.0/26 blackhole;" in text
    assert "route 10.244.3.0/26" not in text  # other node's block
    assert re.search(
        r"protocol static borrowed4 \{\n  ipv4;\n  route 10\.244\.2\.5/32 blackhole;", text
    )
    assert "if ( net ~ [ 10.97.0.0/16+ ] ) then { reject; }" in text
    assert "if ( net ~ [ 10.99.0.0/16+, 10.244.0.0/16+ ] ) then { accept; }" in text
    assert "if ( net = 10.244.1.0/26 ) then { accept; }" in text
    kernel4 = text.split("filter calico_kernel_programming4 {")[1].split("\n}\n")[0]
    assert "10.99.0.0/16+" in kernel4 and "10.244.0.0/16" not in kernel4
    # Kernel routes are learned (next-hop resolution) except anything inside a pool.
    learn4 = text.split("filter calico_kernel_learn4 {")[1].split("\n}\n")[0]
    assert "10.244.0.0/16+" in learn4 and "10.97.0.0/16+" in learn4 and "reject" in learn4
    assert re.search(r"protocol kernel kernel4 \{\n  learn;", text)
    assert "import filter calico_kernel_learn4;" in text


def test_render_peers() -> None:
    text = render_bird_config(_cfg())
    mesh = _protocol(text, "Mesh_198_18_0_2")
    assert "neighbor 198.18.0.2 as 65002;" in mesh and "passive on;" in mesh
    assert "calico_export_to_bgp_peers4(false)" in mesh  # eBGP (different AS)
    assert "Mesh_198_18_0_3" not in text  # route reflector is not meshed
    rr = _protocol(text, "Node_198_18_0_3")
    assert "calico_export_to_bgp_peers4(true)" in rr and "rr client" not in rr
    tor = _protocol(text, "Global_198_18_0_254_port_1179")
    for line in (
        "neighbor 198.18.0.254 port 1179 as 64513;",
        'password "s3cret";',
        "ttl security on;",
        "multihop 1;",
        "keepalive time 10;",
        "graceful restart time 60;",
        "allow local as 2;",
        "next hop self;",
        "import filter { bgp_f1_importFilterV4(false); accept; };",
        "export filter { bgp_f1_exportFilterV4(false); calico_export_to_bgp_peers4(false); "
        "reject; };",
    ):
        assert line in tor, line
    assert "next hop keep;" in _protocol(text, "Node_198_18_0_250")
    v6 = _protocol(text, "Node_fd00__fe")
    assert "local as 65100;" in v6 and "neighbor fd00::fe as 65546;" in v6
    assert "bgp_f1_importFilterV6(false);" in v6
    fn = text.split("function bgp_f1_exportFilterV4(bool internal_peer) {")[1].split("\n}")[0]
    first = 'if (net ~ [ 10.244.0.0/16{24,26} ] && source = RTS_BGP && ifname ~ "eth*")'
    assert [line.strip() for line in fn.strip().splitlines()] == [
        first + " then { accept; }",
        "if (net != 10.1.0.0/16) then { reject; }",
        "if (net !~ 10.2.0.0/16) then { reject; }",
        "if (true) then { reject; }",
    ]


def test_route_reflector_render_has_rr_client() -> None:
    text = render_bird_config(_cfg("n3"))
    n1 = _protocol(text, "Node_198_18_0_1")
    assert "rr client;" in n1 and "rr cluster id 1.0.0.1;" in n1
    assert "Mesh_" not in text


def test_bind_mode_listen_port_and_log_level() -> None:
    cfgs = [
        bgpconfig(listenPort=1179, logSeverityScreen="Debug"),
        bgpconfig("node.n1", bindMode="NodeIP"),
    ]
    text = render_bird_config(_cfg(bgp_configurations=cfgs))
    assert "local 198.18.0.1 port 1179 as 64512;" in text and "strict bind on;" in text
    assert "log stderr all;" in text
    dual = [node("n1", "198.18.0.1", "fd00::1"), node("n2", "198.18.0.2", "fd00::2")]
    text = render_bird_config(_cfg(nodes=dual, bgp_configurations=cfgs))
    assert "local 198.18.0.1 port 1179 as 64512;" in text
    assert "local fd00::1 port 1179 as 64512;" in text


def test_ignored_interfaces_are_excluded() -> None:
    cfgs = [bgpconfig(ignoredInterfaces=["eth9", "kube-ipvs*"])]
    cfg = _cfg(bgp_configurations=cfgs)
    assert cfg.excluded_interfaces[-2:] == ("eth9", "kube-ipvs*")
    text = render_bird_config(cfg)
    assert 'interface -"cali*", -"vxlan.calico",' in text and '-"eth9", -"kube-ipvs*", "*";' in text
    assert 'if ( ifname ~ "kube-ipvs*" ) then { reject; }' in text


SCENARIOS = {
    "full": {},
    "rr": {"name": "n3"},
    "mesh-only": {"peers": [], "filters": []},
    "empty": {"peers": [], "filters": [], "pools": [], "block_affinities": [], "borrowed": []},
    "v6-only-node": {"nodes": [node("n1", None, "fd00::1"), node("n2", None, "fd00::2")]},
    "bind-port-warning": {
        "bgp_configurations": [
            bgpconfig(listenPort=1179, logSeverityScreen="Warning", nodeToNodeMeshEnabled=False),
            bgpconfig("node.n1", bindMode="NodeIP"),
        ]
    },
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_bird_accepts_every_rendered_config(scenario: str, tmp_path: Path) -> None:
    kw = dict(SCENARIOS[scenario])
    name = str(kw.pop("name", "n1"))
    _bird_parse(render_bird_config(_cfg(name, **kw)), tmp_path)


# -- property: whatever valid resources we get, BIRD accepts the rendered config ----------

_rule = st.fixed_dictionaries(
    {"action": st.sampled_from(["Accept", "Reject"])},
    optional={
        "cidr": st.sampled_from(["10.0.0.0/8", "10.244.0.0/16", "0.0.0.0/0"]),
        "source": st.just("RemotePeers"),
        "interface": st.sampled_from(["eth*", "eth0", "bond?"]),
    },
).map(
    lambda r: (
        {**r, "matchOperator": "In", "prefixLength": {"max": 28}}
        if r.get("cidr") == "10.0.0.0/8"
        else ({**r, "matchOperator": "NotEqual"} if "cidr" in r else r)
    )
)


_SVC = ["10.96.0.0/12", "fd00:96::/112", "10.244.0.0/16"]


@st.composite
def _world(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(2, 5))
    nodes = []
    for i in range(1, n + 1):
        kw: dict[str, object] = {}
        if draw(st.booleans()):
            kw["asNumber"] = draw(st.sampled_from([64512, 65001, "1.10"]))
        if draw(st.integers(0, 3)) == 0:
            kw["routeReflectorClusterID"] = "1.0.0.1"
        ip6 = f"fd00::{i}" if draw(st.booleans()) else None
        nodes.append(node(f"n{i}", f"198.18.0.{i}", ip6, labels={"rack": f"r{i % 2}"}, **kw))
    peers = []
    for j in range(draw(st.integers(0, 4))):
        spec: dict[str, object] = {}
        scope = draw(st.sampled_from(["global", "node", "sel"]))
        if scope == "node":
            spec["node"] = "n1"
        elif scope == "sel":
            spec["nodeSelector"] = "rack == 'r1'"
        if draw(st.booleans()):
            spec["peerSelector"] = draw(st.sampled_from(["all()", "rack == 'r0'"]))
        else:
            spec["peerIP"] = draw(
                st.sampled_from(["198.18.0.200", "198.18.0.201:1179", "[fd00::c8]:179", "fd00::c9"])
            )
            spec["asNumber"] = draw(st.sampled_from([64512, 64513, 4200000000]))
        for key, strat in (
            ("keepaliveTime", st.sampled_from(["10s", "1m"])),
            ("maxRestartTime", st.sampled_from(["30s", "2m"])),
            ("ttlSecurity", st.integers(1, 255)),
            ("nextHopMode", st.sampled_from(["Auto", "Self", "Keep"])),
            ("sourceAddress", st.sampled_from(["UseNodeIP", "None"])),
            ("numAllowedLocalASNumbers", st.integers(1, 10)),
            ("password", st.sampled_from(["pw", "another secret"])),
            ("localASNumber", st.sampled_from([65100, "2.3"])),
            ("filters", st.lists(st.sampled_from(["fa", "fb"]), max_size=2, unique=True)),
            ("failureDetectionMode", st.sampled_from(["None", "BFDIfDirectlyConnected"])),
        ):
            if draw(st.booleans()):
                spec[key] = draw(strat)
        peers.append(peer(f"p{j}", **spec))
    filters = [
        bgpfilter(
            name,
            **{
                k: draw(st.lists(_rule, max_size=3))
                for k in ("exportV4", "importV4")
                if draw(st.booleans())
            },
        )
        for name in ("fa", "fb")
    ]
    cfgs = [
        bgpconfig(
            nodeToNodeMeshEnabled=draw(st.booleans()),
            listenPort=draw(st.sampled_from([179, 1179])),
            logSeverityScreen=draw(st.sampled_from(["Info", "Debug", "Error"])),
            nodeMeshFailureDetectionMode=draw(st.sampled_from(["None", "BFDIfDirectlyConnected"])),
            serviceClusterIPs=[{"cidr": c} for c in draw(st.lists(st.sampled_from(_SVC)))],
            prefixAdvertisements=[
                {"cidr": c, "communities": [draw(st.sampled_from(["65000:1", "1:2:3"]))]}
                for c in draw(st.lists(st.sampled_from(_SVC), max_size=2))
            ],
        )
    ]
    pools = [pool("p", "10.244.0.0/16"), pool("v", "10.99.0.0/16", vxlanMode="Always")]
    pools.append(pool("p6", "fd10::/48", disableBGPExport=draw(st.booleans())))
    cidrs = ["10.244.1.0/26", "10.244.1.64/26", "10.99.0.0/26", "fd10::/122"]
    affs = [affinity("n1", c) for c in draw(st.lists(st.sampled_from(cidrs), unique=True))]
    return {
        "nodes": nodes,
        "peers": peers,
        "filters": filters,
        "bgp_configurations": cfgs,
        "pools": pools,
        "block_affinities": affs,
        "borrowed": draw(st.lists(st.sampled_from(["10.244.7.7", "10.244.1.5", "fd10::1:1"]))),
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(world=_world())
def test_bird_accepts_generated_configs(world: dict[str, object], tmp_path: Path) -> None:
    cfg = compute_bird_config("n1", **world)  # type: ignore[arg-type]
    fam = cfg.v4
    assert fam is not None
    names = [p.name for f in cfg.families for p in f.peers]
    assert len(names) == len(set(names))
    _bird_parse(render_bird_config(cfg), tmp_path)
