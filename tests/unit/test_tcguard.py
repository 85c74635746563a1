"""The tc guard's driver and schedule against the FakeTc (the kernel side:
tests/netns/test_tc_guard.py): which device gets which guard, idempotent applies, repair of
a removed filter, not before the ``calico`` table is programmed, and Felix's wiring (the
``tc monitor`` classifier, ``guard=False``)."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from pycalico.datastore.memory import MemoryDatastore
from pycalico.felix.agent import Felix
from pycalico.felix.calc.messages import InSync
from pycalico.felix.dataplane import FakeNftRunner
from pycalico.felix.dataplane.tcguard import GuardDataplane, wanted
from pycalico.felix.dataplane.watch import QOS_TOPIC, tc_topic
from pycalico.felix.qosloop import QosLoop
from pycalico.felix.rules.policy import ALL_MARKS, MARK_EVALUATED
from pycalico.system import tcbpf
from pycalico.system.clock import FakeClock
from pycalico.system.tc import (
    HOST_GUARD,
    HOST_GUARD_V4,
    WORKLOAD_GUARD,
    WORKLOAD_GUARD_V4,
    FakeTc,
    TcGuardUnsupported,
)
from tests.kit import wait_for

LINKS = {"lo": 65536, "eth0": 1500, "calia": 1500, "calib": 1500, "vxlan.calico": 1450,
         "bwcali0123456789": 1500}  # fmt: skip


def test_workload_interfaces_get_the_workload_guard_others_the_host_guard() -> None:
    got = wanted(list(LINKS), "cali")
    assert got == {"eth0": HOST_GUARD, "vxlan.calico": HOST_GUARD,
                   "calia": WORKLOAD_GUARD, "calib": WORKLOAD_GUARD}  # fmt: skip
    assert wanted(["tap1", "eth0"], "tap") == {"tap1": WORKLOAD_GUARD, "eth0": HOST_GUARD}
    v4 = wanted(["calia", "eth0"], "cali", ipv6=False)  # no ip6 calico table: IPv4 only
    assert v4 == {"calia": WORKLOAD_GUARD_V4, "eth0": HOST_GUARD_V4}


def test_the_guard_marks_do_not_collide_with_the_nft_marks() -> None:
    assert tcbpf.MARK_SEEN == MARK_EVALUATED
    assert tcbpf.MARK_FROM_WL & (ALL_MARKS | MARK_EVALUATED) == 0
    assert tcbpf.MARK_FROM_WL & 0xFFFF0000  # Calico's range
    for code in tcbpf.PROGRAMS.values():  # whole instructions, each ending in exit
        assert len(code) % 8 == 0 and struct.unpack_from("<B", code, len(code) - 8)[0] == 0x95


def test_apply_is_idempotent_and_repairs_a_removed_filter() -> None:
    tc = FakeTc(links=dict(LINKS))
    dp = GuardDataplane(tc, "cali")
    assert dp.apply() == [] and dp.writes == 1
    assert tc.guards == wanted(list(LINKS), "cali")
    assert dp.apply() == [] and dp.writes == 1  # equal: nothing written
    tc.guards["calib"] = frozenset({"ingress:wl-in"})  # egress filter deleted by hand
    del tc.guards["eth0"]
    assert dp.apply() == [] and tc.guards == wanted(list(LINKS), "cali")
    assert tc.calls[-2:] == [("set_guards", "calib"), ("set_guards", "eth0")]  # one batch
    tc.links["calic"] = 1500
    tc.fail.add("set_guards")
    errors = dp.apply()
    assert errors and "calic" in errors[0]
    tc.fail.clear()
    assert dp.apply() == [] and tc.guards["calic"] == WORKLOAD_GUARD


def test_the_local_delivery_guard_is_attached_with_the_tc_guard_and_retried() -> None:
    tc = FakeTc(links=dict(LINKS))
    tc.fail.add("set_local_guard")
    dp = GuardDataplane(tc, "cali")
    errors = dp.apply()  # the tc filters went in; the local guard failed: retried
    assert errors and "set_local_guard" in errors[0] and tc.guards == wanted(list(LINKS), "cali")
    tc.fail.clear()
    assert dp.apply() == [] and tc.local_guard == {4, 6} and dp.local_writes == 1
    assert dp.apply() == [] and dp.local_writes == 1 and dp.writes == 1  # nothing to do
    dp.close()
    assert tc.local_guard == frozenset()
    v4 = FakeTc(links=dict(LINKS))
    assert GuardDataplane(v4, "cali", ipv6=False).apply() == [] and v4.local_guard == {4}


def test_a_kernel_without_netfilter_bpf_keeps_the_tc_guard() -> None:
    class Old(FakeTc):
        def set_local_guard(self, versions: frozenset[int]) -> bool:
            self.calls.append(("set_local_guard", ""))
            raise TcGuardUnsupported("bpf: attaching cg_local_in: Invalid argument")

    tc = Old(links=dict(LINKS))
    dp = GuardDataplane(tc, "cali")
    assert dp.apply() == [] and dp.local_unsupported and "cg_local_in" in dp.local_unsupported
    assert dp.unsupported is None and tc.guards == wanted(list(LINKS), "cali")
    del tc.guards["eth0"]
    assert dp.apply() == [] and tc.guards["eth0"] == HOST_GUARD  # the tc guard still repairs
    assert [c for c in tc.calls if c[0] == "set_local_guard"] == [("set_local_guard", "")]


def test_a_kernel_without_ebpf_disables_the_guard_once() -> None:
    class NoBpf(FakeTc):
        def set_guards(self, want: Mapping[str, frozenset[str]]) -> None:
            self.calls.append(("set_guards", ",".join(want)))
            raise TcGuardUnsupported("bpf: loading calico-guard-wl-in: Operation not permitted: ")

    tc = NoBpf(links=dict(LINKS))
    dp = GuardDataplane(tc, "cali")
    assert dp.apply() == [] and dp.unsupported and "Operation not permitted" in dp.unsupported
    assert dp.apply() == [] and len(tc.calls) == 1  # not retried


def test_loop_applies_the_guard_only_once_the_table_is_programmed() -> None:
    clock = FakeClock()
    tc = FakeTc(links=dict(LINKS))
    loop = QosLoop(tc, clock=clock, guard_prefix="cali")
    loop.on_messages([InSync()])
    loop.step()
    assert tc.guards == {}  # the calico table (which sets SEEN) is not there yet
    loop.set_guard_ready()
    loop.step()
    assert tc.guards == wanted(list(LINKS), "cali") and loop.stats()["guard_writes"] == 1
    del tc.guards["calia"]
    loop.request_full()
    loop.step()
    assert tc.guards["calia"] == WORKLOAD_GUARD
    plain = FakeTc(links=dict(LINKS))
    nog = QosLoop(plain, clock=clock)
    nog.on_messages([InSync()])
    nog.set_guard_ready()
    nog.step()
    assert plain.guards == {} and nog.guard is None


def test_tc_monitor_lines_that_remove_something_wake_the_qos_topic() -> None:
    deleted = "deleted filter dev calia egress protocol all pref 1 bpf chain 0 handle 0x1"
    assert tc_topic(deleted) == QOS_TOPIC
    assert tc_topic("deleted qdisc clsact ffff: dev calia parent ffff:fff1 refcnt 0") == QOS_TOPIC
    assert tc_topic("added filter dev calia ingress protocol all pref 1 bpf chain 0") is None
    assert tc_topic("qdisc clsact ffff: dev calia parent ffff:fff1") is None


def test_felix_installs_and_repairs_the_guard_and_can_go_without() -> None:
    tc = FakeTc(links=dict(LINKS))
    felix = Felix("node1", MemoryDatastore(), FakeNftRunner(), syncer_poll_interval=0.05,
                  tc=tc).start()  # fmt: skip
    try:
        assert felix.wait_in_sync(5)
        assert wait_for(lambda: tc.guards == wanted(list(LINKS), "cali"), 5)
        del tc.guards["eth0"]
        felix.kernel_event(QOS_TOPIC)  # what the tc monitor watcher reports
        assert wait_for(lambda: tc.guards.get("eth0") == HOST_GUARD, 5)  # not at the 30 s pass
        assert tc.local_guard == {4, 6}
    finally:
        felix.stop()
    assert tc.local_guard == frozenset()  # it lives as long as the agent: detached at stop
    v4 = FakeTc(links=dict(LINKS))
    felix = Felix("node1", MemoryDatastore(), FakeNftRunner(), syncer_poll_interval=0.05,
                  tc=v4, overrides={"ipv6Support": False}).start()  # fmt: skip
    try:
        assert felix.wait_in_sync(5)
        assert wait_for(lambda: v4.guards.get("eth0") == HOST_GUARD_V4, 5)
        assert v4.local_guard == {4}  # no ip6 calico table marks IPv6 packets
    finally:
        felix.stop()
    off = FakeTc(links=dict(LINKS))
    felix = Felix("node1", MemoryDatastore(), FakeNftRunner(), syncer_poll_interval=0.05,
                  tc=off, guard=False).start()  # fmt: skip
    try:
        assert felix.wait_in_sync(5) and felix.barrier()
        assert off.guards == {} and off.local_guard == frozenset()
    finally:
        felix.stop()
