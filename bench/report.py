"""BENCHMARKS.md and the plots from one merged results document (``bench/run.py`` writes it).

Owns: the issue-18 target rows (which figure each reads, the comparison and threshold), how
a target is judged (the median of the per-round ratios, or of the samples for an absolute
figure; flagged when the quartiles lie on both sides of the threshold; ``not measured`` when
the run did not produce the figure), and the layout of
BENCHMARKS.md. Pure functions of the results document except :func:`plot` (matplotlib,
files) so the generator is unit tested without running a bench.

Results document: ``{"machine": {...}, "load": {...}, "quick": bool, "command": str,
"parts": {bench: part}, "legacy": {bench: json}}`` where a part is what
:func:`harness.write_part` wrote (``figures`` = ratio figures with ``ratio`` and absolute
figures with ``stats``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPLANATIONS = Path(__file__).resolve().parent / "explanations.md"


@dataclass(frozen=True)
class Target:
    name: str
    figure: str
    op: str  # ">=" or "<=" or "<"
    threshold: float


TARGETS = [
    Target("pod->pod same node >= 0.97 of a raw veth (TCP, 1 stream)",
           "dataplane.same_node.tcp1.vs_raw_veth", ">=", 0.97),
    Target("pod->pod same node >= 0.97 of a raw veth (TCP, 4 streams)",
           "dataplane.same_node.tcp4.vs_raw_veth", ">=", 0.97),
    Target("cross-node, no encapsulation >= 0.95 of the raw underlay (TCP, 1 stream)",
           "dataplane.none_cross.tcp1.vs_underlay", ">=", 0.95),
    Target("cross-node, no encapsulation >= 0.95 of the raw underlay (TCP, 4 streams)",
           "dataplane.none_cross.tcp4.vs_underlay", ">=", 0.95),
    Target("VXLAN >= 0.90 of a plain VXLAN pair (TCP, 1 stream)",
           "dataplane.vxlan_cross.tcp1.vs_plain_VXLAN_pair", ">=", 0.90),
    Target("VXLAN >= 0.85 of the underlay (TCP, 1 stream)",
           "dataplane.vxlan_cross.tcp1.vs_underlay", ">=", 0.85),
    Target("10k rules + 10k-member set >= 0.97 of none (throughput)",
           "policy.datapath.throughput.vs_none", ">=", 0.97),
    Target("10k rules + 10k-member set >= 0.8 of none (new connections/s)",
           "policy.datapath.conn_rate.vs_none", ">=", 0.8),
    Target("policy update p50 < 50 ms at 1,000 endpoints x 500 policies",
           "policy.update_ms", "<", 50.0),
    Target("CNI ADD p50 <= 1.0x the bridge plugin (fast path)", "cni.add.fast_path", "<=", 1.0),
    Target("CNI ADD p50 <= 3x the bridge plugin (fallback, no server)",
           "cni.add.fallback", "<=", 3.0),
    Target("idle calico-node < 60 MB RSS", "footprint.idle_rss", "<", 60.0),
    Target("flow logs on >= 0.98 of off (iperf3 throughput, same rounds)",
           "flows.throughput.on_vs_off", ">=", 0.98),
    Target("flow logs on >= 0.8 of off (new connections/s, same rounds)",
           "flows.conn_rate.on_vs_off", ">=", 0.8),
    Target("flow-log collector RSS < 64 MB at >= 10k new flows/min",
           "flows.collector_rss_mb", "<", 64.0),
]  # fmt: skip


def figures_by_id(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for part in results.get("parts", {}).values():
        for fig in part.get("figures", []):
            out[fig["id"]] = fig
    return out


def center(fig: dict[str, Any]) -> dict[str, float]:
    """The statistics a target reads: the ratio's for a ratio figure, else the samples'."""
    st: dict[str, float] = fig["ratio"] if "ratio" in fig else fig["stats"]
    return st


def judge(value: float, op: str, threshold: float) -> bool:
    if op == ">=":
        return value >= threshold
    if op == "<=":
        return value <= threshold
    if op == "<":
        return value < threshold
    if op == ">":
        return value > threshold
    raise ValueError(f"op: unknown comparison {op!r}")


def num(x: float) -> str:
    """Three significant figures, no exponent for the ranges here."""
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def spread_text(st: dict[str, float]) -> str:
    return f"IQR {num(st['q1'])}-{num(st['q3'])}, min-max {num(st['min'])}-{num(st['max'])}"


def target_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per target: met / not met / not measured, the median and its spread."""
    figs = figures_by_id(results)
    rows = []
    for t in TARGETS:
        fig = figs.get(t.figure)
        if fig is None:
            rows.append({"target": t.name, "status": "not measured", "measured": "-",
                         "spread": "-", "figure": t.figure})  # fmt: skip
            continue
        st = center(fig)
        ok = judge(st["median"], t.op, t.threshold)
        # The median decides; when the quartiles fall on both sides of the threshold the
        # verdict is within this run's noise, and the row says so.
        spans = judge(st["q1"], t.op, t.threshold) != judge(st["q3"], t.op, t.threshold)
        unit = "x" if "ratio" in fig else f" {fig['unit']}"
        rows.append({
            "target": t.name,
            "status": ("met" if ok else "not met") + (" (IQR spans the target)" if spans else ""),
            "measured": f"{num(st['median'])}{unit} (n={int(st['n'])})",
            "spread": spread_text(st),
            "figure": t.figure,
            "title": fig["title"],
        })  # fmt: skip
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def machine_lines(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    load = results.get("load", {})
    lines = [
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; kernel {m.get('kernel', '?')};"
        f" Python {m.get('python', '?')}; host `{m.get('host', '?')}`",
        f"- run: {results.get('started', '?')} to {results.get('finished', '?')}"
        f" (`{results.get('command', '')}`)",
        f"- load average (1/5/15 min) before: {load.get('before', '?')}, after: "
        f"{load.get('after', '?')}; sampled per bench below. The machine is shared: absolute "
        "numbers are noisy, ratios are interleaved (ABAB) so they stay usable.",
    ]
    for name, part in sorted(results.get("parts", {}).items()):
        mm = part.get("machine_at_end", {})
        q = "QUICK" if part.get("quick") else "full"
        args = part.get("args") or {}
        extra = f", {args}" if args else ""
        lines.append(f"  - `{name}` ({q}{extra}) finished {mm.get('time', '?')}: load "
                     f"{mm.get('loadavg', '?')}")  # fmt: skip
    return lines


def render(results: dict[str, Any], plots: list[str] | None = None) -> str:
    """BENCHMARKS.md text."""
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/run.py -> bench/report.py); do not edit by hand:"
        " the explanations come from `bench/explanations.md`. Every ratio interleaves the"
        " system and its baseline in the same run (order alternating each round, >= 5 rounds)"
        " and is the median of the per-round ratios; the spread is over rounds.",
        "",
        "## Machine",
        "",
        *machine_lines(results),
        "",
        "## Targets (issue 18)",
        "",
    ]
    rows = target_rows(results)
    out += _table(["target", "status", "measured (median)", "spread", "figure"],
                  [[r["target"], f"**{r['status']}**", r["measured"], r["spread"],
                    f"`{r['figure']}`" + (f": {r['title']}" if r.get("title") else "")]
                   for r in rows])  # fmt: skip
    for p in plots or []:
        out += ["", f"![{Path(p).stem}]({p})"]
    figs = figures_by_id(results)
    ratio = [f for f in figs.values() if "ratio" in f]
    absolute = [f for f in figs.values() if "stats" in f]
    out += ["", "## Ratios", ""]
    out += _table(
        ["figure", "system (median)", "baseline (median)", "ratio", "spread of ratio", "command"],
        [[f"{f['title']}<br>`{f['id']}`",
          f"{f['system']}: {num(f['system_stats']['median'])} {f['unit']}",
          f"{f['baseline']}: {num(f['baseline_stats']['median'])} {f['unit']}",
          f"**{num(f['ratio']['median'])}x** (n={f['ratio']['n']}, {f['better']} is better)",
          spread_text(f["ratio"]), f"`{f['command']}`"]
         for f in sorted(ratio, key=lambda f: f["id"])],
    )  # fmt: skip
    notes = [f for f in ratio if f.get("note")]
    for f in notes:
        out.append(f"\n`{f['id']}`: {f['note']}")
    if absolute:
        out += ["", "## Absolute figures", ""]
        out += _table(
            ["figure", "median", "spread", "command"],
            [[f"{f['title']}<br>`{f['id']}`", f"{num(f['stats']['median'])} {f['unit']}",
              spread_text(f["stats"]), f"`{f['command']}`"]
             for f in sorted(absolute, key=lambda f: f["id"])],
        )  # fmt: skip
    fp = results.get("parts", {}).get("footprint", {})
    if fp.get("sizes_tried"):
        out += ["", f"Largest lab that came up: **{fp.get('largest_lab_up', 0)} nodes** (sizes "
                f"tried: {fp['sizes_tried']}" + ("" if fp.get("quick") else ", full run") + "). "
                + (f"The next size failed: {fp['limit'].splitlines()[0].rstrip(': ')} "
                   "(log tail in bench/results/lab.json)." if fp.get("limit")
                   else "Every size tried came up.")]  # fmt: skip
    errors = [(n, p["raw"]["datapath_error"]) for n, p in results.get("parts", {}).items()
              if isinstance(p.get("raw"), dict) and p["raw"].get("datapath_error")]  # fmt: skip
    for name, err in errors:
        out += ["", f"**`{name}` datapath not measured in this run:** {err}"]
    out += device_lines(results)
    out += import_lines(results)
    out += legacy_lines(results)
    if EXPLANATIONS.exists():
        out += ["", EXPLANATIONS.read_text().rstrip()]
    return "\n".join(out) + "\n"


def device_lines(results: dict[str, Any]) -> list[str]:
    dev = results.get("parts", {}).get("dataplane", {}).get("devices", {})
    if not dev:
        return []
    keys = ["generic-receive-offload", "generic-segmentation-offload",
            "tcp-segmentation-offload", "tx-checksumming", "rx-checksumming",
            "rx-udp-gro-forwarding"]  # fmt: skip
    rows = []
    for name, d in sorted(dev.items()):
        extra = ""
        if "vxlan" in d:
            v = d["vxlan"]
            extra = f"udpcsum {v.get('udp_csum')}, learning {v.get('learning')}"
        rows.append([name, d.get("kind", ""), str(d.get("mtu", ""))]
                    + [d.get("offloads", {}).get(k, "-") for k in keys] + [extra])  # fmt: skip
    head = ["device", "kind", "MTU", "GRO", "GSO", "TSO", "tx-csum", "rx-csum", "udp-gro-fwd", ""]
    return ["", "## Devices (MTU and offloads, measured during the run)", "", *_table(head, rows)]


def import_lines(results: dict[str, Any]) -> list[str]:
    imp = results.get("parts", {}).get("cni", {}).get("importtime", {})
    if not imp:
        return []
    out = ["", "## CNI fallback import path (`python -X importtime`, median of 5 interleaved ADDs)",
           ""]  # fmt: skip
    rows = []
    for k, v in imp.items():
        top = ", ".join(f"{t['module']} {num(t['cumulative_ms'])}" for t in v["top"][:6])
        rows.append([k, str(v["modules"]), f"{num(v['total_ms'])} ms", top])
    out += _table(["plugin", "modules", "import time", "largest (cumulative ms)"], rows)
    return out


def legacy_lines(results: dict[str, Any]) -> list[str]:
    """Scalar figures of the benches that report only their own JSON (absolute numbers)."""
    leg = results.get("legacy", {})
    if not leg:
        return []
    out = ["", "## Other benches (absolute figures from their own JSON)", "",
           "Each from the last run of that bench (the full `make bench` reruns them all; a QUICK "
           "or `--report-only` run shows the files as they are).", ""]  # fmt: skip
    for name, doc in sorted(leg.items()):
        scalars = {k: v for k, v in flatten(doc).items() if isinstance(v, (int, float, bool))}
        shown = ", ".join(f"{k}={num(float(v)) if not isinstance(v, bool) else v}"
                          for k, v in list(scalars.items())[:14])  # fmt: skip
        out.append(f"- `{name}` (`python bench/{name}.py`): {shown or 'see its JSON'}")
    return out


def flatten(doc: Any, prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Top-level scalars (and those of nested dicts, to ``depth``); lists are skipped."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and depth > 0:
                out.update(flatten(v, key + ".", depth - 1))
            elif not isinstance(v, (list, dict)):
                out[key] = v
    return out


def plot(results: dict[str, Any], outdir: Path, stem: str) -> list[Path]:
    """PNG plots: every ratio with its IQR and min-max and the targets; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = sorted((f for f in figures_by_id(results).values() if "ratio" in f),
                  key=lambda f: f["id"])  # fmt: skip
    outdir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for group in sorted({f["id"].split(".")[0] for f in figs}):
        sel = [f for f in figs if f["id"].split(".")[0] == group]
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(sel) + 1.4))
        ys = list(range(len(sel)))
        for y, f in zip(ys, sel, strict=True):
            r = f["ratio"]
            ax.plot([r["min"], r["max"]], [y, y], color="0.6", lw=1)
            ax.plot([r["q1"], r["q3"]], [y, y], color="tab:blue", lw=5)
            ax.plot([r["median"]], [y], "o", color="black")
        for t in TARGETS:
            for y, f in zip(ys, sel, strict=True):
                if f["id"] == t.figure:
                    ax.plot([t.threshold], [y], "|", color="tab:red", ms=14, mew=2)
        ax.axvline(1.0, color="0.8", ls="--", lw=1)
        ax.set_xscale("log")  # ratios: 0.5x and 2x equally far from 1
        ax.set_yticks(ys, [f["id"].split(".", 1)[1] for f in sel], fontsize=8)
        ax.set_xlabel("system / baseline (median dot, IQR bar, min-max line, target |)")
        part = results.get("parts", {}).get(group, {})
        ax.set_title(f"{group}: ratios ({'QUICK' if part.get('quick') else 'full'} run)")
        fig.tight_layout()
        path = outdir / f"{stem}-{group}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        files.append(path)
    return files
