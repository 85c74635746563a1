"""Pod QoS controls: annotation and spec parsing (Calico's names, units, limits, defaults),
the calc graph carrying them in EndpointUpdate, the connection-limit rule, the tc bandwidth
driver over the FakeTc (add, change, remove, sweep, missing interface, failure and retry)
and the QoS half of Felix's owner loop. Real tc is exercised by tests/e2e/test_lab_qos.py."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.api import ValidationFailed, decode
from pycalico.cni.workload import build_wep, build_workload
from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.agent import Felix
from pycalico.felix.calc import CalcGraph
from pycalico.felix.calc.messages import EndpointRemove, EndpointUpdate, InSync
from pycalico.felix.dataplane import FakeNftRunner
from pycalico.felix.dataplane.qos import QosDataplane, ifb_name, tbf_values
from pycalico.felix.qosloop import REFRESH_S, RETRY_S, QosLoop
from pycalico.felix.rules import RuleRenderer
from pycalico.model import convert
from pycalico.model.qos import (
    DEFAULT_BURST,
    controls_from_annotations,
    controls_from_spec,
    parse_quantity,
)
from pycalico.model.types import ModelError, QoSControls
from pycalico.system.clock import FakeClock
from pycalico.system.tc import HOST_GUARD, WORKLOAD_GUARD, FakeTc, Tbf, TcError, TrafficControl
from tests.kit import wait_for, workload_endpoint

Q = "qos.projectcalico.org/"


# --- parsing -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [("10M", 10**7), ("1Gi", 2**30), ("1.01k", 1010), ("5e3", 5000), ("500m", 1), ("7", 7)],
)
def test_quantities_as_kubernetes_rounds_them(text: str, value: int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["10Mbit", "", "M", "1.2.3", "ten"])
def test_non_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


def test_annotations_become_qos_controls_with_calicos_defaults() -> None:
    spec = controls_from_annotations(
        {
            f"{Q}ingressBandwidth": "10M",
            f"{Q}egressBandwidth": "1G",
            f"{Q}egressBurst": "8M",
            f"{Q}ingressPacketRate": "100",
            f"{Q}egressMaxConnections": "3",
            "other/annotation": "x",
        }
    )
    assert spec == {
        "ingressBandwidth": 10**7,
        "ingressBurst": DEFAULT_BURST,
        "egressBandwidth": 10**9,
        "egressBurst": 8 * 10**6,
        "ingressPacketRate": 100,
        "ingressPacketBurst": 5,
        "egressMaxConnections": 3,
    }
    assert controls_from_annotations({"app": "x"}) is None


def test_calico_annotation_wins_over_the_kubernetes_one() -> None:
    spec = controls_from_annotations(
        {"kubernetes.io/ingress-bandwidth": "5M", f"{Q}ingressBandwidth": "7M"}
    )
    assert spec is not None and spec["ingressBandwidth"] == 7 * 10**6
    spec = controls_from_annotations({"kubernetes.io/egress-bandwidth": "5M"})
    assert spec is not None and spec["egressBandwidth"] == 5 * 10**6


@pytest.mark.parametrize(
    ("annotations", "named", "why"),
    [
        ({f"{Q}ingressBandwidth": "10Mbit"}, "ingressBandwidth", "not a quantity"),
        ({f"{Q}ingressBandwidth": "999"}, "ingressBandwidth", "out of range"),
        ({f"{Q}egressBandwidth": "2P"}, "egressBandwidth", "out of range"),
        ({f"{Q}ingressPacketRate": "20k"}, "ingressPacketRate", "out of range"),
        ({f"{Q}egressMaxConnections": "0"}, "egressMaxConnections", "out of range"),
        ({f"{Q}ingressBurst": "1M"}, "ingressBurst", "ingressBandwidth must be specified"),
        (
            {f"{Q}egressBandwidth": "10M", f"{Q}egressPeakrate": "5M"},
            "egressPeakrate",
            "greater than egressBandwidth",
        ),
        (
            {f"{Q}ingressBandwidth": "10M", f"{Q}ingressMinburst": "2k"},
            "ingressMinburst",
            "ingressPeakrate must be specified",
        ),
        ({f"{Q}egressPacketBurst": "9"}, "egressPacketBurst", "egressPacketRate must be"),
        ({f"{Q}ingressBandwith": "10M"}, "ingressBandwith", "unknown QoS annotation"),
    ],
)
def test_bad_annotations_name_the_annotation(
    annotations: dict[str, str], named: str, why: str
) -> None:
    with pytest.raises(ModelError) as exc:
        controls_from_annotations(annotations)
    assert f"annotation {Q}{named}:" in str(exc.value) and why in str(exc.value)


def test_spec_is_validated_and_defaulted() -> None:
    got = controls_from_spec({"egressBandwidth": 10**7, "egressPacketRate": 10})
    assert got == QoSControls(
        egressBandwidth=10**7, egressBurst=DEFAULT_BURST, egressPacketRate=10, egressPacketBurst=5
    )
    assert controls_from_spec({}) is None and controls_from_spec(None) is None
    with pytest.raises(ModelError, match=r"spec.qosControls.ingressBandwidth: 5 is too small"):
        controls_from_spec({"ingressBandwidth": 5})
    with pytest.raises(ModelError, match=r"spec.qosControls.ingressBurst: must be an integer"):
        controls_from_spec({"ingressBandwidth": 10**6, "ingressBurst": "1M"})


def test_calicoctl_validation_names_the_field() -> None:
    doc = workload_endpoint("a", qosControls={"ingressBandwidth": 10, "egressBurst": 10**6})
    with pytest.raises(ValidationFailed) as exc:
        decode(doc)
    problems = [f"{p.path}: {p.reason}" for p in exc.value.problems]
    assert any("spec.qosControls.ingressBandwidth" in p and "too small" in p for p in problems)
    assert any("spec.qosControls.egressBurst" in p and "egressBandwidth" in p for p in problems)
    decode(workload_endpoint("a", qosControls={"ingressBandwidth": 10**7, "dscp": "AF11"}))


def test_cni_writes_qos_controls_into_the_workload_endpoint() -> None:
    w = build_workload(
        cni_args={"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p"}, container_id="c1",
        ifname="eth0", node="n1", network="k8s-pod-network", extra_labels={},
    )  # fmt: skip
    from dataclasses import replace

    qos = controls_from_annotations({f"{Q}ingressBandwidth": "10M"})
    wep = build_wep(replace(w, qos_controls=qos), host_ifname="cali1", mac="", ip_networks=[])
    assert wep["spec"]["qosControls"] == {"ingressBandwidth": 10**7, "ingressBurst": DEFAULT_BURST}
    assert "qosControls" not in build_wep(w, host_ifname="cali1", mac="", ip_networks=[])["spec"]


# --- calc graph and rules ----------------------------------------------------------------
def _wep(**qos: int) -> dict[str, Any]:
    return workload_endpoint("a", interface_name="calia", qosControls=qos or None)


WEP_KEY = f"projectcalico.org/v3/WorkloadEndpoint/default/{_wep()['metadata']['name']}"


def test_a_qos_change_is_an_endpoint_update_and_invalid_qos_rejects_the_endpoint() -> None:
    g = CalcGraph("node1")
    g.load([_wep()])
    g.flush()
    g.on_update(WEP_KEY, _wep(ingressBandwidth=10**7))
    (up,) = [m for m in g.flush() if isinstance(m, EndpointUpdate)]
    assert up.endpoint.qos == QoSControls(ingressBandwidth=10**7, ingressBurst=DEFAULT_BURST)
    g.on_update(WEP_KEY, _wep(ingressBandwidth=1))
    assert any(isinstance(m, EndpointRemove) for m in g.flush())
    assert "ingressBandwidth" in g.rejected[WEP_KEY]


def test_max_connections_rule_in_each_direction_after_conntrack() -> None:
    r = RuleRenderer()
    g = CalcGraph("node1")
    g.load([_wep(ingressMaxConnections=2, egressMaxConnections=7)])
    r.apply(g.flush())
    text = {n: [x.body for x in c.rules] for n, c in r.tables()["ip"].chains.items()}
    tw, fw = text["cali-tw-calia"], text["cali-fw-calia"]
    assert tw[2] == "meta l4proto tcp ct count over 2 reject with tcp reset"
    assert fw[2] == "meta l4proto tcp ct count over 7 reject with tcp reset"
    assert tw[:2] == ["ct state established,related accept", "ct state invalid drop"]


def test_packet_rates_get_their_own_base_chains_before_conntrack_accept() -> None:
    r = RuleRenderer(families=["ip"])
    g = CalcGraph("node1")
    g.load([_wep(ingressPacketRate=100, ingressPacketBurst=200, egressPacketRate=50)])
    r.apply(g.flush())
    t = r.tables()["ip"]
    assert t.chains["cali-qtw-calia"].rules[0].body == (
        "limit rate over 100/second burst 200 packets drop"
    )
    assert t.chains["cali-qfw-calia"].rules[0].body == (
        "limit rate over 50/second burst 5 packets drop"
    )
    fwd, inp = t.chains["qos-FORWARD"], t.chains["qos-INPUT"]
    assert fwd.hook is not None and (fwd.hook.hook, fwd.hook.priority) == ("forward", -1)
    assert inp.hook is not None and (inp.hook.hook, inp.hook.priority) == ("input", -1)
    assert t.sets["cali-qtw-dispatch"].elements == {'"calia" : jump cali-qtw-calia'}
    assert t.sets["cali-qfw-dispatch"].elements == {'"calia" : jump cali-qfw-calia'}
    g.on_update(WEP_KEY, _wep())
    r.apply(g.flush())
    t = r.tables()["ip"]
    assert not [n for n in t.chains if "qtw" in n or "qfw" in n or n.startswith("qos-")]
    assert t.sets["cali-qtw-dispatch"].elements == frozenset()  # the maps stay, empty


# --- the tc seam: one contract for FakeTc and (tests/netns/test_tc_seam.py) TcKernel ---
def tc_contract(tc: TrafficControl, dev: str) -> None:
    """What the QoS driver relies on, on device ``dev`` (up, no qdiscs of ours)."""
    missing = "nosuchdev0"
    assert tc.get_tbf(dev) is None and tc.get_redirect(dev) is None
    assert tc.get_tbf(missing) is None and tc.get_redirect(missing) is None
    assert tc.get_mtu(missing) is None
    mtu = tc.get_mtu(dev)
    assert mtu is not None and mtu > 0
    t = tbf_values(10**7, 10**6, 0, 0, mtu)
    tc.replace_tbf(dev, t)
    assert t.same(tc.get_tbf(dev))
    peaked = tbf_values(2 * 10**7, 10**6, 4 * 10**7, 0, mtu)
    tc.replace_tbf(dev, peaked)
    assert peaked.same(tc.get_tbf(dev)) and not t.same(tc.get_tbf(dev))
    tc.del_tbf(dev)
    tc.del_tbf(dev)
    assert tc.get_tbf(dev) is None
    ifb = ifb_name(dev)
    tc.add_ifb(ifb, mtu)
    assert ifb in tc.list_ifbs() and tc.get_mtu(ifb) == mtu
    tc.set_redirect(dev, ifb)
    tc.set_redirect(dev, ifb)  # a replace, not a second filter
    assert tc.get_redirect(dev) == ifb
    tc.replace_tbf(ifb, t)
    assert t.same(tc.get_tbf(ifb))
    tc.del_ingress(dev)
    tc.del_ingress(dev)
    assert tc.get_redirect(dev) is None
    tc.del_link(ifb)
    tc.del_link(ifb)
    assert ifb not in tc.list_ifbs()
    with pytest.raises(TcError):
        tc.replace_tbf(missing, t)
    # The tc guard: written, read back, next to the QoS redirect, removed.
    assert dev in tc.list_links() and missing not in tc.list_links()
    assert tc.get_guards([dev, missing]) == {dev: frozenset()}
    tc.set_guards({dev: WORKLOAD_GUARD})
    tc.set_guards({dev: WORKLOAD_GUARD})  # a replace, not a second filter
    assert tc.get_guards([dev]) == {dev: WORKLOAD_GUARD}
    tc.add_ifb(ifb, mtu)
    tc.set_redirect(dev, ifb)
    assert tc.get_guards([dev]) == {dev: WORKLOAD_GUARD} and tc.get_redirect(dev) == ifb
    tc.set_guards({dev: HOST_GUARD})
    assert tc.get_guards([dev]) == {dev: HOST_GUARD} and tc.get_redirect(dev) == ifb
    tc.del_guard(dev)
    tc.del_guard(dev)
    assert tc.get_guards([dev]) == {dev: frozenset()} and tc.get_redirect(dev) == ifb
    tc.set_guards({dev: WORKLOAD_GUARD})
    tc.del_ingress(dev)  # the QoS redirect only
    assert tc.get_redirect(dev) is None and tc.get_guards([dev]) == {dev: WORKLOAD_GUARD}
    tc.set_redirect(dev, ifb)
    tc.del_guard(dev, qdisc=True)  # uninstall: the guard and the redirect
    assert tc.get_guards([dev]) == {dev: frozenset()} and tc.get_redirect(dev) is None
    tc.del_link(ifb)
    with pytest.raises(TcError):
        tc.set_guards({missing: HOST_GUARD})


def test_fake_tc_passes_the_contract() -> None:
    tc_contract(FakeTc(links={"calia": 1500}), "calia")


# --- tc driver ---------------------------------------------------------------------------
def test_tbf_values_follow_calico() -> None:
    t = tbf_values(10**7, 10**6, 0, 0, 1500)
    assert t == Tbf(rate=1_250_000, burst=125_000, limit=31_250 + 125_000)
    capped = tbf_values(10**7, DEFAULT_BURST, 0, 0, 1500)  # u32 ticks of 64 ns
    assert capped.burst == int(1_250_000 * (2**32 - 1) * 64e-9)
    peaked = tbf_values(10**7, 10**6, 2 * 10**7, 1000, 1500)
    assert (peaked.peakrate, peaked.minburst) == (2_500_000, 1514)
    assert ifb_name("cali1234567890a").startswith("bwcali") and len(ifb_name("x")) == 15


def test_driver_adds_changes_and_removes_both_directions() -> None:
    tc = FakeTc(links={"calia": 1500, "calib": 1500})
    dp = QosDataplane(tc)
    ifb = ifb_name("calia")
    dp.set("calia", QoSControls(ingressBandwidth=10**7, ingressBurst=10**6,
                                egressBandwidth=2 * 10**7, egressBurst=10**6))  # fmt: skip
    assert dp.apply() == []
    assert tc.tbfs["calia"].rate == 1_250_000 and tc.tbfs[ifb].rate == 2_500_000
    assert tc.redirects == {"calia": ifb} and tc.ifbs == {ifb}
    writes = dp.writes
    assert dp.apply(full=True) == [] and dp.writes == writes  # idempotent
    dp.set("calia", QoSControls(egressBandwidth=10**7, egressBurst=10**6))
    assert dp.apply() == []
    assert "calia" not in tc.tbfs and tc.tbfs[ifb].rate == 1_250_000
    dp.set("calia", None)
    assert dp.apply() == []
    assert tc.tbfs == {} and tc.redirects == {} and tc.ifbs == set()


def test_driver_repairs_drift_and_sweeps_stale_ifbs_on_full_apply() -> None:
    tc = FakeTc(links={"calia": 1500})
    dp = QosDataplane(tc)
    dp.set("calia", QoSControls(egressBandwidth=10**7, egressBurst=10**6))
    dp.apply()
    tc.tbfs.clear()
    tc.redirects["calia"] = ""
    tc.links["bwcalistale0000"] = 1500
    tc.ifbs.add("bwcalistale0000")
    tc.links["otherifb"] = 1500
    tc.ifbs.add("otherifb")
    assert dp.apply(full=True) == []
    assert tc.redirects["calia"] == ifb_name("calia") and ifb_name("calia") in tc.tbfs
    assert tc.ifbs == {ifb_name("calia"), "otherifb"}  # only ours are swept


def test_missing_interface_waits_and_failure_is_reported_and_retried() -> None:
    tc = FakeTc(links={})
    dp = QosDataplane(tc)
    dp.set("calia", QoSControls(ingressBandwidth=10**7, ingressBurst=10**6))
    assert dp.apply() == [] and not dp.dirty and tc.tbfs == {}
    tc.links["calia"] = 1500
    tc.fail.add("replace_tbf")
    errors = dp.apply(full=True)
    assert errors and "calia" in errors[0] and dp.dirty
    tc.fail.clear()
    assert dp.apply() == [] and tc.tbfs["calia"].rate == 1_250_000


def test_loop_waits_for_in_sync_then_retries_and_refreshes() -> None:
    clock = FakeClock()
    tc = FakeTc(links={"calia": 1500})
    loop = QosLoop(tc, clock=clock)
    ep = convert(_wep(ingressBandwidth=10**7)).obj
    loop.on_messages([EndpointUpdate(ep, (), (), ())])  # type: ignore[arg-type]
    loop.step()
    assert tc.tbfs == {} and loop.deadline() is None  # not in sync: nothing
    tc.fail.add("replace_tbf")
    loop.on_messages([InSync()])
    loop.step()
    assert loop.last_errors and loop.deadline() == clock.monotonic() + RETRY_S
    tc.fail.clear()
    loop.step()
    assert tc.tbfs == {}  # back-off: not yet
    clock.advance(RETRY_S)
    loop.step()
    assert "calia" in tc.tbfs and loop.deadline() == clock.monotonic() + REFRESH_S
    loop.on_messages([EndpointRemove(ep)])  # type: ignore[arg-type]
    loop.step()
    assert tc.tbfs == {}


def test_loop_survives_a_missing_tc_binary() -> None:
    class NoTc(FakeTc):
        def list_ifbs(self) -> list[str]:
            raise FileNotFoundError("tc")

    clock = FakeClock()
    loop = QosLoop(NoTc(), clock=clock)
    loop.on_messages([InSync()])
    loop.step()
    assert loop.last_errors == ["tc"] and loop.deadline() == clock.monotonic() + RETRY_S


def test_felix_programs_qos_through_its_owner_loop() -> None:
    ds = MemoryDatastore()
    tc = FakeTc(links={"calia": 1500})
    felix = Felix("node1", ds, FakeNftRunner(), syncer_poll_interval=0.05, tc=tc).start()
    try:
        assert felix.wait_in_sync(5)
        ds.create(_wep(egressBandwidth=10**7, egressBurst=10**6))
        assert wait_for(lambda: ifb_name("calia") in tc.tbfs, 5)
        wep = ds.get("WorkloadEndpoint", _wep()["metadata"]["name"], "default")
        del wep["spec"]["qosControls"]
        ds.update(wep)
        assert wait_for(lambda: tc.tbfs == {} and tc.ifbs == set(), 5)
        assert felix.stats()["qos"]["applies"] >= 2
    finally:
        felix.stop()


def test_a_deleted_ifb_reported_by_the_link_watcher_is_repaired_at_once() -> None:
    """An ``ip monitor`` line about a ``bwcali*`` IFB (or a workload link) makes Felix re-read
    and repair its tc state now, not at the 30 s full pass."""
    from pycalico.felix.dataplane.watch import QOS_TOPIC, ROUTES_TOPIC, route_topic

    assert route_topic(f"Deleted 9: {ifb_name('calia')}: <BROADCAST,NOARP> mtu 1500") == (QOS_TOPIC)
    assert route_topic("Deleted 3: calia@if2: <BROADCAST> mtu 1500") == ROUTES_TOPIC
    ds = MemoryDatastore()
    tc = FakeTc(links={"calia": 1500})
    felix = Felix("node1", ds, FakeNftRunner(), syncer_poll_interval=0.05, tc=tc).start()
    try:
        assert felix.wait_in_sync(5)
        ds.create(_wep(egressBandwidth=10**7, egressBurst=10**6))
        assert wait_for(lambda: ifb_name("calia") in tc.tbfs, 5)
        tc.ifbs.discard(ifb_name("calia"))  # deleted by hand
        tc.links.pop(ifb_name("calia"), None)
        tc.tbfs.pop(ifb_name("calia"), None)
        felix.kernel_event(QOS_TOPIC)
        assert wait_for(lambda: ifb_name("calia") in tc.tbfs, 5)  # well before 30 s
    finally:
        felix.stop()
