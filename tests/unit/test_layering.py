"""Guard of the architecture: the import graph of ``src/pycalico`` keeps its layering.

The layering is described in ``docs/architecture.md`` (and ``DESIGN.md`` section 2); this
test is its executable form. It parses every module under ``src/pycalico`` with :mod:`ast`
(nothing is imported) and collects every arrow ``importer -> imported`` with its line:
module-level and function-level imports, relative imports resolved, ``if TYPE_CHECKING:``
imports (they count, and are listed separately in failures) and, in a module that calls
``importlib.import_module``, every string literal naming a pycalico module. Arrows point at
the most specific module named (``from pycalico.felix.rules import names`` ->
``pycalico.felix.rules.names``; ``from pycalico.felix.rules import RenderConfig`` -> the
package ``pycalico.felix.rules``).

Checks:

- ``RULES``: forbidden arrows, table-driven ``(from-prefix, to-prefix, reason)``; a prefix
  matches the module itself and everything below it, ``*`` matches any module. An arrow
  inside the target prefix itself is never a violation (a package may import itself).
- ``LEAVES``: packages that may import nothing of pycalico but the listed prefixes.
- Programs (``PROGRAMS``: calico-node, calicoctl, calico-lab, the console, the demo) sit on
  top: no module imports a program package other than its own. Programs use each other as
  programs (calico-lab runs ``calico-node``/``calicoctl`` executables), never by import;
  code two programs share moves below them (e.g. :mod:`pycalico.bgp.peers`).
- No import cycle between modules, and none between packages (units: ``pycalico.<x>``, and
  inside ``pycalico.felix`` each ``pycalico.felix.<x>``): every cycle is reported with the
  arrows that form it.
- ``KNOWN_VIOLATIONS`` lists violations that exist today and are scheduled to go. It may
  only shrink: the test fails when an allowlisted violation no longer exists, so remove its
  entry in the change that removes the violation.
- No module under ``src/`` exceeds ``MAX_LINES`` lines; only ``pycalico.system`` touches
  :mod:`subprocess` (every other module runs programs through
  :mod:`pycalico.system.process`).
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "pycalico"
MAX_LINES = 600

CALC_IS_PURE = "calc and rules are pure: no kernel seams, no dataplane (DESIGN.md principle 1)"
RULES: list[tuple[str, str, str]] = [
    ("pycalico.felix.calc", "pycalico.felix.dataplane", CALC_IS_PURE),
    ("pycalico.felix.calc", "pycalico.system", CALC_IS_PURE),
    ("pycalico.felix.rules", "pycalico.felix.dataplane", CALC_IS_PURE),
    ("pycalico.felix.rules", "pycalico.system", CALC_IS_PURE),
    ("pycalico.api", "pycalico.datastore", "resource kinds do not know where they are stored"),
    ("pycalico.selector", "pycalico.api", "the selector language sits below the resource kinds"),
    ("pycalico.datastore", "pycalico.felix", "the datastore knows nothing of its consumers"),
    ("pycalico.felix.dataplane", "pycalico.datastore", "the dataplane sees messages, not storage"),
    ("pycalico.ipam", "pycalico.cni", "IPAM is a library the CNI plugin uses, not the reverse"),
    ("pycalico.ctl", "pycalico.felix.dataplane", "calicoctl reads models, never the kernel"),
]
LEAVES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "pycalico.model",
        ("pycalico.selector", "pycalico.errors"),
        "the backend model is a leaf above selector/errors: every consumer imports it, it "
        "imports none of them (api, datastore, felix, bgp, ipam, ...)",
    ),
    ("pycalico.system", ("pycalico.errors",), "OS seams know nothing of Calico"),
]
PROGRAMS = ("pycalico.node", "pycalico.ctl", "pycalico.lab", "pycalico.ui", "pycalico.demo")
UNIT_CONTAINERS = ("pycalico", "pycalico.felix")

# Violations that exist today, each with why it is tolerated. Only ever remove entries.
KNOWN_VIOLATIONS: dict[str, str] = {}

# Ways around the process seam besides `import subprocess`.
PROCESS_BYPASSES = re.compile(r"^os\.(system|popen|spawn\w*|exec\w*|posix_spawn\w*|fork\w*)$")


@dataclass(frozen=True, order=True)
class Arrow:
    importer: str
    imported: str
    line: int
    kind: str  # "module" | "function" | "type-checking" | "dynamic"

    @property
    def note(self) -> str:
        return "" if self.kind == "module" else f" ({self.kind})"

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported}  [line {self.line}]{self.note}"


def discover(src: Path, root: str = ROOT) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is_package) for every ``.py`` under ``src/<root>``."""
    mods: dict[str, tuple[Path, bool]] = {}
    for path in sorted((src / root).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.AST, str]]:
    """Every node below ``node`` with the kind of import it would be."""
    for child in ast.iter_child_nodes(node):
        k = kind
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            k = "function" if kind == "module" else kind
        yield child, k
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.body:
                yield sub, "type-checking"
                yield from _walk(sub, "type-checking")
            for sub in child.orelse:
                yield sub, k
                yield from _walk(sub, k)
        else:
            yield from _walk(child, k)


def _target(name: str, mods: dict[str, tuple[Path, bool]], root: str) -> str | None:
    """The longest existing module prefix of ``name`` (None outside ``root``)."""
    if name != root and not name.startswith(root + "."):
        return None
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in mods else None


def arrows_of(
    module: str, path: Path, is_pkg: bool, mods: dict[str, tuple[Path, bool]], root: str = ROOT
) -> list[Arrow]:
    tree = ast.parse(path.read_text(), str(path))
    imports_by_name = any(
        isinstance(n, ast.Call)
        and (getattr(n.func, "attr", None) or getattr(n.func, "id", None))
        in ("import_module", "__import__")
        for n in ast.walk(tree)
    )
    out: set[Arrow] = set()
    for node, kind in _walk(tree, "module"):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                pkg = ".".join(base + ([node.module] if node.module else []))
            else:
                pkg = node.module or ""
            names = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in mods else pkg for a in node.names]
        elif (
            imports_by_name
            and isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in mods
        ):
            names, kind = [node.value], "dynamic"
        for name in names:
            target = _target(name, mods, root)
            if target is not None and target != module:
                out.add(Arrow(module, target, getattr(node, "lineno", 0), kind))
    return sorted(out)


@functools.cache
def import_graph(src: Path = SRC, root: str = ROOT) -> tuple[list[str], list[Arrow]]:
    mods = discover(src, root)
    arrows = [a for m, (p, pkg) in mods.items() for a in arrows_of(m, p, pkg, mods, root)]
    return sorted(mods), arrows


def under(module: str, prefix: str) -> bool:
    return prefix == "*" or module == prefix or module.startswith(prefix + ".")


def forbidden(arrows: Iterable[Arrow]) -> dict[str, list[tuple[Arrow, str]]]:
    """Violation key ``importer -> imported`` -> [(arrow, reason)] of every broken rule."""
    out: dict[str, list[tuple[Arrow, str]]] = defaultdict(list)
    rules = list(RULES)
    for prog in PROGRAMS:
        rules.append(("*", prog, "programs are the top layer: nothing imports them"))
    for a in arrows:
        for src, dst, reason in rules:
            if under(a.importer, src) and under(a.imported, dst) and not under(a.importer, dst):
                out[f"{a.importer} -> {a.imported}"].append((a, reason))
        for leaf, allowed, reason in LEAVES:
            ok = (leaf, *allowed)
            if under(a.importer, leaf) and not any(under(a.imported, p) for p in ok):
                out[f"{a.importer} -> {a.imported}"].append((a, reason))
    return out


def unit_of(module: str) -> str:
    """The package a module belongs to for the package-cycle check."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        if ".".join(parts[:i]) not in UNIT_CONTAINERS:
            return ".".join(parts[:i])
    return module


def cycles(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def module_cycles(modules: list[str], arrows: list[Arrow]) -> dict[str, list[Arrow]]:
    out = {}
    for comp in cycles(modules, ((a.importer, a.imported) for a in arrows)):
        members = set(comp)
        key = "module cycle: " + ", ".join(comp)
        out[key] = [a for a in arrows if a.importer in members and a.imported in members]
    return out


def package_cycles(modules: list[str], arrows: list[Arrow]) -> dict[str, list[Arrow]]:
    cross = [a for a in arrows if unit_of(a.importer) != unit_of(a.imported)]
    units = {unit_of(m) for m in modules}
    out = {}
    for comp in cycles(units, ((unit_of(a.importer), unit_of(a.imported)) for a in cross)):
        members = set(comp)
        key = "package cycle: " + ", ".join(comp)
        out[key] = [
            a for a in cross if unit_of(a.importer) in members and unit_of(a.imported) in members
        ]
    return out


@functools.cache
def all_violations() -> dict[str, list[str]]:
    """Every violation key -> the lines explaining it (arrows, reasons)."""
    modules, arrows = import_graph()
    out: dict[str, list[str]] = {}
    for key, hits in forbidden(arrows).items():
        out[key] = [f"[line {a.line}]{a.note}: {reason}" for a, reason in hits]
    for key, arr in {**module_cycles(modules, arrows), **package_cycles(modules, arrows)}.items():
        out[key] = [str(a) for a in arr]
    return out


def _report(title: str, found: dict[str, list[str]]) -> str:
    lines = [title, "(layering: docs/architecture.md; rules: tests/unit/test_layering.py)"]
    runtime = {k: v for k, v in found.items() if not all("(type-checking)" in x for x in v)}
    typing_only = {k: v for k, v in found.items() if k not in runtime}
    for heading, group in (("", runtime), ("TYPE_CHECKING-only imports:", typing_only)):
        if group and heading:
            lines.append(heading)
        for key in sorted(group):
            lines.append(f"  {key}")
            lines += [f"      {x}" for x in group[key]]
    return "\n".join(lines)


# -- the guard ---------------------------------------------------------------------------------


def test_the_scan_sees_the_whole_tree() -> None:
    modules, arrows = import_graph()
    assert len(modules) > 100 and len(arrows) > 300
    assert "pycalico.felix.calc.graph" in modules
    kinds = {a.kind for a in arrows}
    assert {"module", "function", "type-checking", "dynamic"} <= kinds


def test_no_forbidden_imports_and_no_cycles() -> None:
    found = {k: v for k, v in all_violations().items() if k not in KNOWN_VIOLATIONS}
    if found:
        pytest.fail(_report("imports that break the layering or form cycles:", found))


def test_known_violations_still_exist() -> None:
    """The allowlist only shrinks: an entry whose violation is gone must be deleted."""
    found = all_violations()
    stale = sorted(k for k in KNOWN_VIOLATIONS if k not in found)
    if stale:
        pytest.fail("no longer violated; delete from KNOWN_VIOLATIONS:\n  " + "\n  ".join(stale))


def test_rule_prefixes_name_real_packages() -> None:
    """A typo in a rule would silently allow everything; packages still to come are named."""
    modules, _ = import_graph()
    to_come = {"pycalico.model", "pycalico.ui"}
    prefixes = {p for rule in RULES for p in rule[:2]} | {leaf for leaf, _, _ in LEAVES}
    prefixes |= set(PROGRAMS) | {p for _, allowed, _ in LEAVES for p in allowed}
    missing = sorted(p for p in prefixes - to_come if not any(under(m, p) for m in modules))
    assert not missing, f"rule prefixes matching no module: {missing}"


def test_modules_stay_small() -> None:
    big = {
        str(p.relative_to(SRC)): n
        for p in sorted(SRC.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    if big:
        pytest.fail(f"modules over {MAX_LINES} lines (split them):\n  " + "\n  ".join(
            f"{path}: {n}" for path, n in big.items()))  # fmt: skip


def test_only_pycalico_system_runs_processes() -> None:
    offenders = []
    for module, (path, _pkg) in discover(SRC).items():
        if under(module, "pycalico.system"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] == "subprocess"]
            elif isinstance(node, ast.ImportFrom):
                bad = (
                    [node.module or ""] if (node.module or "").split(".")[0] == "subprocess" else []
                )
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                dotted = f"{node.value.id}.{node.attr}"
                bad = [dotted] if PROCESS_BYPASSES.match(dotted) else []
            else:
                bad = []
            offenders += [f"{module}:{node.lineno}: {b}" for b in bad]  # type: ignore[attr-defined]
    if offenders:
        pytest.fail("use pycalico.system.process instead:\n  " + "\n  ".join(offenders))


# -- the guard's own machinery, on a synthetic tree --------------------------------------------


def _tree(tmp: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp


def test_scanner_resolves_relative_function_and_type_checking_imports(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "from .x import f\n",
            "pkg/a/x.py": (
                "from typing import TYPE_CHECKING\n"
                "from ..b import y\n"
                "if TYPE_CHECKING:\n    from pkg.c import Z\n"
                "def g():\n    import pkg.b.y\n    from . import x2\n"
            ),
            "pkg/a/x2.py": (
                "import importlib\nMODS = ('pkg.c', 'not.ours')\n"
                "def load(m):\n    return importlib.import_module(m)\n"
            ),
            "pkg/b/z.py": "from importlib import resources\nT = resources.files('pkg.c')\n",
            "pkg/b/__init__.py": "",
            "pkg/b/y.py": "from pkg.a import x\n",
            "pkg/c.py": "import os\n",
        },
    )
    modules, arrows = import_graph(src, "pkg")
    got = {(a.importer, a.imported, a.kind) for a in arrows}
    assert got == {
        ("pkg.a", "pkg.a.x", "module"),
        ("pkg.a.x", "pkg.b.y", "module"),
        ("pkg.a.x", "pkg.c", "type-checking"),
        ("pkg.a.x", "pkg.b.y", "function"),
        ("pkg.a.x", "pkg.a.x2", "function"),
        ("pkg.a.x2", "pkg.c", "dynamic"),
        ("pkg.b.y", "pkg.a.x", "module"),
    }
    (cycle,) = module_cycles(modules, arrows)
    assert cycle == "module cycle: pkg.a.x, pkg.b.y"


def test_cycles_and_units() -> None:
    assert cycles("abcd", [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]
    assert cycles("ab", [("a", "b")]) == []
    assert unit_of("pycalico.felix.rules.endpoints") == "pycalico.felix.rules"
    assert unit_of("pycalico.felix.routeloop") == "pycalico.felix.routeloop"
    assert unit_of("pycalico.bgp.manager") == "pycalico.bgp"
    assert unit_of("pycalico") == "pycalico"


@pytest.mark.parametrize(
    ("importer", "imported", "broken"),
    [
        ("pycalico.felix.calc.graph", "pycalico.system.process", True),
        ("pycalico.felix.rules.renderer", "pycalico.felix.dataplane.table", True),
        ("pycalico.api.codec", "pycalico.datastore", True),
        ("pycalico.selector.parser", "pycalico.api", True),
        ("pycalico.datastore.syncer", "pycalico.felix.calc.graph", True),
        ("pycalico.felix.dataplane.runner", "pycalico.datastore.syncer", True),
        ("pycalico.ipam.allocator", "pycalico.cni.plugin", True),
        ("pycalico.ctl.resources", "pycalico.felix.dataplane.table", True),
        ("pycalico.model.network", "pycalico.api.kinds_bgp", True),
        ("pycalico.model.network", "pycalico.felix.calc", True),
        ("pycalico.system.kernel", "pycalico.felix.calc.routes", True),
        ("pycalico.node.status", "pycalico.ctl.node", True),
        ("pycalico.lab.main", "pycalico.node.agent", True),
        ("pycalico.felix.agent", "pycalico.demo", True),
        ("pycalico.model.network", "pycalico.selector", False),
        ("pycalico.felix.calc.graph", "pycalico.model.network", False),
        ("pycalico.felix.dataplane.runner", "pycalico.felix.calc.messages", False),
        ("pycalico.node.agent", "pycalico.felix.dataplane", False),
        ("pycalico.ctl.policy", "pycalico.felix.calc", False),
        ("pycalico.ctl.main", "pycalico.ctl.node", False),
        ("pycalico.lab.main", "pycalico.system.process", False),
    ],
)
def test_rules_table(importer: str, imported: str, broken: bool) -> None:
    assert bool(forbidden([Arrow(importer, imported, 1, "module")])) is broken
