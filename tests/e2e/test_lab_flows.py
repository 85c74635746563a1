"""calico-lab e2e: flow logs with policy attribution (issue 13 acceptance), on one 2-node lab.

A multi-tier case: tier ``sec`` (order 10) denies ns1/c -> ns1/d and passes everything else;
in ``default``, ns1/b admits only ns1/a on 80/TCP (so ns1/c -> ns1/b ends at the end of
tier), ns1/c may not reach ns1/a (egress deny), ns1/d has no policy (profile). Checks:

- a denied probe appears in ``calico-lab flows --action deny`` within 2 s, on the node that
  dropped it, naming the policy and rule;
- an allowed connection shows its byte counts once it closed;
- every probe of ``calico-lab matrix`` is recorded with the same action and deciding rule
  (per direction) as ``calicoctl policy explain`` gives for it;
- forwarding does not depend on the collector: a foreign NFLOG rule with a malformed prefix
  is counted and ignored; a killed calico-node (log rules still in place, nobody listening)
  still forwards; the next collector reports what the killed one lost; a per-node
  ``flowLogsFileEnabled: false`` removes the log rules and stops that node's collector.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")
PODS = {"ns1/a": "node1", "ns1/b": "node2", "ns1/c": "node1", "ns1/d": "node2"}
POLICY = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: sec}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: sec.guard-d}
spec:
  tier: sec
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: app == 'c'}
    destination: {selector: app == 'd'}
  - action: Pass
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-in, namespace: ns1}
spec:
  selector: app == 'b'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'a'}
    destination: {ports: [80]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: c-out}
spec:
  selector: app == 'c'
  types: [Egress]
  egress:
  - action: Deny
    destination: {selector: app == 'a'}
  - action: Allow
"""


@pytest.fixture(scope="module")
def lab(lab_factory: Any) -> Iterator[Lab]:
    lab: Lab = lab_factory()
    lab.up("--nodes", "2")
    for key, node in PODS.items():
        lab.run("pod", "add", node, key, "--labels", f"app={key[-1]}", "--ports", "80/TCP")
    lab.run("apply", "-f", "-", input=POLICY)
    # Settled: the kernel matrix equals the model's.
    lab.matrix_settled(lambda m: m == lab.policy_matrix(), timeout=30)
    yield lab


def flows(lab: Lab, *args: str) -> list[dict[str, Any]]:
    out = lab.run("flows", "-o", "json", *args).stdout
    recs: list[dict[str, Any]] = json.loads(out)["flows"]
    return recs


def probe(lab: Lab, src: str, dst: str, tries: int = 3) -> bool:
    """One probe; a reachable pair gets three tries (this machine is shared: a slow
    neighbour can make one connection time out; a denied one never succeeds)."""
    for _ in range(tries):
        if lab.run("probe", src, dst, "80/TCP", "--timeout", "2", check=False).returncode == 0:
            return True
    return False


def test_denied_probe_is_reported_within_2s_by_the_dropping_node(lab: Lab) -> None:
    assert not probe(lab, "ns1/c", "ns1/b", tries=1)
    done = time.monotonic()
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        nonlocal found
        if time.monotonic() - done > 2.0:  # a query started after 2 s does not count
            return True
        found = flows(lab, "--action", "deny", "--from", "ns1/c", "--to", "ns1/b", "--since", "10s")
        return bool(found)

    wait_for(seen, 10, 0.1)
    assert found, "no deny record within 2 s"
    rec = found[-1]
    assert rec["node"] == "node2" and rec["reporter"] == "dst"
    assert rec["policy"]["tier"] == "default" and rec["policy"]["end_of_tier"] is True
    assert rec["dst"]["labels"]["app"] == "b" and rec["packets_in"] >= 1
    # Policy-rule denials name the policy and the rule; the table shows them.
    assert not probe(lab, "ns1/c", "ns1/d", tries=1)
    recs = wait_for(lambda: flows(lab, "--policy", "sec.guard-d", "--action", "deny"), 5, 0.2)
    assert recs and recs[-1]["policy"]["rule"] == 0 and recs[-1]["node"] == "node2"
    table = lab.run("flows", "--action", "deny", "--to", "ns1/d").stdout
    assert "sec/gnp/sec.guard-d#0" in table


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 179), timeout=1).close()
    print("open")
except OSError:
    print("blocked")
"""


def test_a_pods_connection_to_its_own_node_is_reported_denied_by_the_host_default(
    lab: Lab,
) -> None:
    """ns1/a's profile allows its egress, then ``defaultEndpointToHostAction: Drop`` drops
    the packet at its own node (here: BIRD's port 179): the node reports the drop, naming
    the host default, not only the egress allow."""
    node = json.loads(lab.calicoctl("get", "node", "node1", "-o", "json").stdout)
    node_ip = node["spec"]["bgp"]["ipv4Address"].split("/")[0]
    assert lab.exec("ns1/a", sys.executable, "-c", CONNECT, node_ip).stdout.strip() == "blocked"

    def denied() -> list[dict[str, Any]]:
        return flows(lab, "--action", "deny", "--from", "ns1/a", "--policy", "host")

    recs = wait_for(denied, 10, 0.2)
    assert recs, flows(lab, "--from", "ns1/a")
    rec = recs[-1]
    assert rec["node"] == "node1" and rec["reporter"] == "dst" and rec["dport"] == 179
    assert rec["policy"]["kind"] == "host" and rec["dst"]["ip"] == node_ip
    table = lab.run("flows", "--action", "deny", "--from", "ns1/a").stdout
    assert "endpoint-to-host-default" in table


def test_allowed_connection_shows_bytes_after_close(lab: Lab) -> None:
    assert probe(lab, "ns1/a", "ns1/b")

    def closed() -> list[dict[str, Any]]:
        recs = flows(lab, "--from", "ns1/a", "--to", "ns1/b", "--action", "allow", "--since",
                     "30s")  # fmt: skip
        return [r for r in recs if r["connections_completed"] and r["bytes_in"]]

    recs = wait_for(closed, 10, 0.3)
    assert recs, "no closed allowed connection with byte counts"
    by = {r["reporter"]: r for r in recs}
    assert by["dst"]["node"] == "node2" and by["dst"]["policy"]["name"] == "b-in"
    assert by["src"]["node"] == "node1" and by["src"]["policy"]["kind"] == "profile"
    assert by["dst"]["bytes_in"] > 0 and by["dst"]["packets_out"] > 0


def _explained(d: dict[str, Any]) -> tuple[str, str, str, int | None]:
    """(action, owner-ish kind, name, rule) of one explain direction."""
    reason = d["reason"]
    if reason == "rule":
        return d["verdict"], d["tier"], d["policy"], d["rule"]
    if reason == "tier-default":
        return d["verdict"], d["tier"], "end-of-tier", None
    if reason == "profile-rule":
        return d["verdict"], "profile", d["profile"], d["rule"]
    return d["verdict"], "profile", "", None  # no-profile-match / missing-profile


def _recorded(p: dict[str, Any]) -> tuple[str, str, str, int | None]:
    action = "deny" if p["action"] == "deny" else "allow"
    if p["kind"] == "profile" or (not p["kind"] and not p["tier"]):
        return action, "profile", p["name"], p["rule"]
    if p["end_of_tier"]:
        return action, p["tier"], "end-of-tier", None
    ns = f"{p['namespace']}/" if p["namespace"] else ""
    return action, p["tier"], f"{p['kind']}/{ns}{p['name']}", p["rule"]


def test_matrix_records_agree_with_policy_explain(lab: Lab) -> None:
    start = time.time()
    time.sleep(0.05)
    matrix = lab.matrix()
    time.sleep(1.0)  # the last probes' records settle
    recs = [r for r in flows(lab, "--since", "2m") if r["start"] + 15 >= start]
    recs = [r for r in recs if r["end"] >= start and r["dport"] == 80]
    got: dict[tuple[str, str, str], set[tuple[str, str, str, int | None]]] = {}
    for r in recs:
        key = (f"{r['src']['namespace']}/{r['src']['name']}",
               f"{r['dst']['namespace']}/{r['dst']['name']}", r["reporter"])  # fmt: skip
        got.setdefault(key, set()).add(_recorded(r["policy"]))
    mismatches = []
    for src, dst, _port, _proto in matrix:
        ex = json.loads(
            lab.calicoctl(
                "policy", "explain", "--from", src, "--to", dst, "--port", "80", "-o", "json"
            ).stdout
        )
        want_src = _explained(ex["egress"])
        if got.get((src, dst, "src")) != {want_src}:
            mismatches.append((src, dst, "egress", want_src, got.get((src, dst, "src"))))
        if want_src[0] == "allow":  # a packet denied on egress never reaches ingress policy
            want_dst = _explained(ex["ingress"])
            if got.get((src, dst, "dst")) != {want_dst}:
                mismatches.append((src, dst, "ingress", want_dst, got.get((src, dst, "dst"))))
        elif (src, dst, "dst") in got:
            mismatches.append((src, dst, "ingress", None, got[(src, dst, "dst")]))
    assert len(matrix) == 12
    assert not mismatches, "\n".join(map(str, mismatches))


def _api(lab: Lab) -> Path:
    return lab.dir / lab.name / "flows-api"  # the lab's CA, certificates and token


def _curl(lab: Lab, node: str, url: str, *args: str) -> tuple[int, str]:
    """(exit code, ``<body>\n<HTTP status>``) of curl from inside ``node``'s namespace."""
    r = lab.exec(node, "curl", "-s", "-m", "5", "--cacert", str(_api(lab) / "ca.pem"),
                 "-w", "\n%{http_code}", *args, url, check=False)  # fmt: skip
    return r.returncode, r.stdout


def _health(lab: Lab, node: str) -> dict[str, Any]:
    d = _api(lab)
    _rc, out = _curl(lab, node, "https://127.0.0.1:9098/health",
                     "--cert", str(d / "client.pem"), "--key", str(d / "client.key"))  # fmt: skip
    data: dict[str, Any] = json.loads(out.rsplit("\n", 1)[0])
    return data


def test_flow_api_answers_only_the_labs_credentials_across_nodes(lab: Lab) -> None:
    """node2's API seen from node1: HTTPS on the node address; no or wrong credentials get
    401 (or no TLS session); the lab's client certificate and token work; ``calicoctl flows``
    on a node finds the token and CA in FelixConfiguration ``default`` by itself."""
    d = _api(lab)
    assert (d / "token").stat().st_mode & 0o077 == 0
    ip2 = next(n["ip"] for n in lab.state()["nodes"] if n["name"] == "node2").split("/")[0]
    url = f"https://{ip2}:9098/flows?since=0"
    assert _curl(lab, "node1", url)[1].endswith("\n401")
    assert _curl(lab, "node1", url, "-H", "Authorization: Bearer nope")[1].endswith("\n401")
    token = (d / "token").read_text().strip()
    assert _curl(lab, "node1", url, "-H", f"Authorization: Bearer {token}")[1].endswith("\n200")
    cert = ("--cert", str(d / "client.pem"), "--key", str(d / "client.key"))
    assert _curl(lab, "node1", url, *cert)[1].endswith("\n200")
    assert _curl(lab, "node1", f"http://{ip2}:9098/flows")[1].endswith("\n000")  # no plain HTTP
    assert probe(lab, "ns1/a", "ns1/b")
    out = lab.exec("node1", CALICOCTL, "flows", "--since", "10m", "-o", "json").stdout
    assert {r["node"] for r in json.loads(out)["flows"]} == {"node1", "node2"}


def test_collector_never_affects_forwarding(lab: Lab) -> None:
    # A foreign rule with a malformed prefix on NFLOG group 2: counted, ignored.
    junk = (
        "table ip flowjunk {\n chain f {\n  type filter hook forward priority -5; policy accept;\n"
        '  ct state new log prefix "junk|||x" group 2\n'
        '  ct state new log prefix "API|" group 1\n }\n}\n'
    )
    lab.exec("node2", "nft", "-f", "-", input=junk)
    try:
        assert probe(lab, "ns1/a", "ns1/b")
        h = wait_for(lambda: _health(lab, "node2")["aggregator"].get("dropped_unknown_prefix"), 5)
        assert h and h >= 2
        assert _health(lab, "node2")["alive"] is True
    finally:
        lab.exec("node2", "nft", "delete", "table", "ip", "flowjunk", check=False)
    # A killed calico-node: its log rules stay, nobody listens; forwarding continues.
    lab.run("node", "kill", "node2")
    try:
        rules = lab.exec("node2", "nft", "list", "table", "ip", "calico").stdout
        assert 'log prefix "API0|np/ns1/b-in" group 1' in rules
        assert probe(lab, "ns1/a", "ns1/b") and not probe(lab, "ns1/c", "ns1/b", tries=1)
    finally:
        lab.run("node", "start", "node2")
    h = wait_for(lambda: _health(lab, "node2"), 10, 0.5, ignore=(Exception,))
    assert h and h["lost"].get("unclean_restarts") == 1 and h["enabled"] is True
    # Per-node off switch: no log rules on node2, its collector idles; node1 unaffected.
    off_yaml = (
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\n"
        "metadata: {name: node.node2}\nspec: {flowLogsFileEnabled: false}\n"
    )
    lab.run("apply", "-f", "-", input=off_yaml)
    try:

        def off() -> bool:
            rules = lab.exec("node2", "nft", "list", "table", "ip", "calico").stdout
            return "log prefix" not in rules and _health(lab, "node2")["enabled"] is False

        assert wait_for(off, 10, 0.5)
        assert probe(lab, "ns1/a", "ns1/b")
        assert "log prefix" in lab.exec("node1", "nft", "list", "table", "ip", "calico").stdout
    finally:
        lab.calicoctl("delete", "felixconfiguration", "node.node2")


B_IN_PROPOSED = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-in, namespace: ns1}
spec:
  selector: app == 'b'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: "app in {'a', 'c'}"
    destination: {ports: [80]}
"""


def test_policy_diff_lists_exactly_the_flows_that_change(lab: Lab, tmp_path: Any) -> None:
    model = lab.policy_matrix()
    before = lab.matrix_settled(lambda m: m == model, timeout=30)  # recorded by the flow logs
    time.sleep(1.0)
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(B_IN_PROPOSED)
    out = lab.exec("node1", CALICOCTL, "policy", "diff", "-f", str(proposed), "--since", "10m",
                   "-o", "json").stdout  # fmt: skip
    result = json.loads(out)
    predicted = {(c["from"], c["to"]) for c in result["changes"]}
    delta = {(m["from"], m["to"]) for m in result["matrix_delta"]}
    # Nothing was written: the model of the datastore is unchanged.
    assert lab.policy_matrix() == model
    lab.run("apply", "-f", str(proposed))
    try:
        after = lab.matrix_settled(lambda m: m == lab.policy_matrix(), timeout=30)
        real = {(s, d) for (s, d, _p, _pr), v in after.items() if before[(s, d, _p, _pr)] != v}
    finally:
        lab.run("apply", "-f", "-", input=POLICY)
        lab.matrix_settled(lambda m: m == model, timeout=30)
    assert real == {("ns1/c", "ns1/b")}
    assert predicted == real and delta == real
    assert (
        result["changes"][0]["recorded"] == "deny" and result["changes"][0]["proposed"] == "allow"
    )


STAGED_DENY_A = """
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: stage-deny-a, namespace: ns1}
spec:
  order: 1
  selector: app == 'b'
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: app == 'a'}
"""


def test_staged_deny_shows_pending_deny_on_a_flow_still_allowed(lab: Lab) -> None:
    lab.run("apply", "-f", "-", input=STAGED_DENY_A)
    try:
        start = time.time()

        def pending_deny() -> list[dict[str, Any]]:
            assert probe(lab, "ns1/a", "ns1/b")  # staged: enforcement is unchanged
            recs = flows(lab, "--from", "ns1/a", "--to", "ns1/b", "--since", "1m")
            return [r for r in recs if r["reporter"] == "dst" and r["end"] >= start
                    and (r["pending"] or {}).get("action") == "deny"]  # fmt: skip

        recs = wait_for(pending_deny, 30, 1.0)
        rec = recs[-1]
        assert rec["action"] == "allow" and rec["node"] == "node2"
        last = rec["pending"]["trace"][-1]
        assert (last["kind"], last["namespace"], last["name"], last["rule"]) == (
            "snp",
            "ns1",
            "stage-deny-a",
            0,
        )
    finally:
        lab.calicoctl("delete", "stagednetworkpolicy", "stage-deny-a", "-n", "ns1")
