"""The tc seam on a real kernel: TcKernel passes the FakeTc's contract (TBF replace/read
back with the kernel's tick rounding, IFB devices, the ingress redirect), and the QoS driver
programs, repairs and removes a workload veth's bandwidth controls in a namespace."""

from __future__ import annotations

import os

import pytest

from pycalico.felix.dataplane.qos import QosDataplane, ifb_name
from pycalico.model.types import QoSControls
from pycalico.system.process import SubprocessRunner
from pycalico.system.tc import TcKernel
from tests.fixtures.netns import NetnsFactory
from tests.unit.test_qos import tc_contract

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def _tc(f: NetnsFactory) -> TcKernel:
    a, b = f.netns("tc1"), f.netns("tc2")
    f.veth(a, "calia", b, "eth0", a_addr="198.18.0.1/24", b_addr="198.18.0.2/24")
    return TcKernel(SubprocessRunner(), netns=a.name)


def test_tc_kernel_passes_the_fake_tc_contract(netns_factory: NetnsFactory) -> None:
    tc_contract(_tc(netns_factory), "calia")


def test_driver_programs_repairs_and_removes(netns_factory: NetnsFactory) -> None:
    tc = _tc(netns_factory)
    dp = QosDataplane(tc)
    dp.set("calia", QoSControls(ingressBandwidth=10**7, ingressBurst=10**6,
                                egressBandwidth=10**7, egressBurst=10**6))  # fmt: skip
    assert dp.apply() == []
    ifb = ifb_name("calia")
    assert tc.get_redirect("calia") == ifb and tc.get_tbf(ifb) is not None
    writes = dp.writes
    assert dp.apply(full=True) == [] and dp.writes == writes  # read back equal: no writes
    tc.del_tbf("calia")
    tc.del_link(ifb)
    assert tc.get_redirect("calia") == "*"
    assert dp.apply(full=True) == []
    assert tc.get_tbf("calia") is not None and tc.get_tbf(ifb) is not None
    assert tc.get_redirect("calia") == ifb  # the kernel showed the old redirect as "*"
    dp.set("calia", None)
    assert dp.apply() == []
    assert tc.get_tbf("calia") is None and tc.get_redirect("calia") is None
    assert tc.list_ifbs() == []
