"""bench/harness.py (ABAB interleaving, ratio statistics) and bench/report.py (targets,
BENCHMARKS.md): pure bookkeeping, checked on made-up samples; nothing is timed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import harness
import report


def test_abab_alternates_which_side_goes_first_and_runs_at_least_five_rounds() -> None:
    calls: list[str] = []
    it_a = iter(range(100, 200))
    it_b = iter(range(50, 150))

    def a() -> float:
        calls.append("A")
        return float(next(it_a))

    def b() -> float:
        calls.append("B")
        return float(next(it_b))

    res = harness.abab(a, b, rounds=2)  # raised to the minimum of 5
    assert "".join(calls) == "ABBAABBAAB"
    assert res.system == [100, 101, 102, 103, 104] and res.baseline == [50, 51, 52, 53, 54]


def test_interleave_rotates_order_and_pairs_rounds() -> None:
    order: list[str] = []

    def side(name: str, value: float) -> Any:
        def f() -> float:
            order.append(name)
            return value

        return f

    s = harness.interleave({"s": side("s", 9.0), "x": side("x", 10.0), "y": side("y", 3.0)}, 5)
    assert order[:9] == ["s", "x", "y", "x", "y", "s", "y", "s", "x"]
    assert harness.pair(s, "s", "x").ratio()["median"] == pytest.approx(0.9)
    assert harness.pair(s, "s", "y").ratio()["median"] == pytest.approx(3.0)


def test_ratio_stats_median_quartiles_and_range_over_rounds() -> None:
    st = harness.ratio_stats([1, 2, 3, 4, 10], [1, 1, 1, 1, 1])
    assert (st["median"], st["q1"], st["q3"], st["min"], st["max"], st["n"]) == (3, 2, 4, 1, 10, 5)
    with pytest.raises(ValueError, match="rounds differ"):
        harness.ratio_stats([1, 2], [1])
    with pytest.raises(ValueError, match="baseline sample of 0"):
        harness.ratio_stats([1], [0])


def test_quantile_interpolates() -> None:
    assert harness.quantile([1, 2, 3, 4], 0.5) == 2.5
    assert harness.quantile([5], 0.25) == 5


def _results(**figs: Any) -> dict[str, Any]:
    return {"machine": {"cpu": "TestCPU", "cores": 2, "kernel": "6.x"}, "quick": True,
            "load": {"before": [1, 1, 1], "after": [2, 2, 2]},
            "parts": {"p": {"figures": list(figs.values()), "machine_at_end": {}}}}  # fmt: skip


def test_targets_met_not_met_and_not_measured() -> None:
    same = harness.figure("dataplane.same_node.tcp1.vs_raw_veth", "same node", "Gbit/s",
                          harness.Abab([9.0] * 5, [10.0] * 5), system="pod", baseline="veth",
                          command="python bench/dataplane.py --only none")  # fmt: skip
    cni = harness.figure("cni.add.fallback", "fallback", "ms", harness.Abab([20.0] * 5, [10.0] * 5),
                         system="exec", baseline="bridge", command="c", better="lower")  # fmt: skip
    rss = harness.value("footprint.idle_rss", "rss", "MiB", [50, 55, 59], command="l")
    noisy = harness.figure("dataplane.none_cross.tcp1.vs_underlay", "cross", "Gbit/s",
                           harness.Abab([8, 9, 10, 11, 12], [10] * 5), system="pod",
                           baseline="underlay", command="c")  # fmt: skip
    figs = _results(a=same, b=cni, c=rss, d=noisy)
    rows = {r["figure"]: r for r in report.target_rows(figs)}
    assert rows["dataplane.none_cross.tcp1.vs_underlay"]["status"] == (
        "met (IQR spans the target)"  # median 1.0 >= 0.95 but q1 0.9 < 0.95
    )
    assert rows["dataplane.same_node.tcp1.vs_raw_veth"]["status"] == "not met"  # 0.9 < 0.97
    assert rows["dataplane.same_node.tcp1.vs_raw_veth"]["measured"].startswith("0.900x")
    assert rows["cni.add.fallback"]["status"] == "met"  # 2.0 <= 3
    assert rows["footprint.idle_rss"]["status"] == "met"  # 55 < 60
    assert rows["policy.update_ms"]["status"] == "not measured"


def test_markdown_names_machine_ratio_spread_and_command() -> None:
    cmd = "python bench/dataplane.py --only none"
    same = harness.figure("dataplane.same_node.tcp1.vs_raw_veth", "same node", "Gbit/s",
                          harness.Abab([9, 10, 8, 9, 9], [10] * 5), system="pod",
                          baseline="veth", command=cmd)  # fmt: skip
    md = report.render(_results(a=same), ["bench/results/plots/x-dataplane.png"])
    assert "TestCPU, 2 cores; kernel 6.x" in md
    assert "**0.900x** (n=5, higher is better)" in md
    assert "IQR 0.900-0.900, min-max 0.800-1.00" in md
    assert "`python bench/dataplane.py --only none`" in md
    assert "![x-dataplane](bench/results/plots/x-dataplane.png)" in md
    assert "| pod->pod same node >= 0.97 of a raw veth (TCP, 1 stream) | **not met** |" in md


def test_figure_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="better"):
        harness.figure("x", "x", "u", harness.Abab([1] * 5, [1] * 5), system="a", baseline="b",
                       command="c", better="sideways")  # fmt: skip
