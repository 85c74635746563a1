"""The web console in a real browser against a live 3-node lab (one lab for the module:
node1 a route reflector, plus the FRR ToR as an external eBGP peer).

``calico-lab ui`` serves the console on a free loopback port; Debian's chromium (headless,
driven by selenium through chromium-driver) loads every page and must log no console error;
the BGP graph must show every node and session with the state ``calico-lab status`` reports;
the reachability page must equal ``calicoctl policy matrix -o json`` cell by cell (and the
lab's live matrix must agree with it); the what-if delta must be exactly the change the same
YAML makes to ``calicoctl policy matrix`` once really applied; a probe denied in the lab
must appear on the Flows page within 3 s with what denied it. Screenshots of each page are
saved under pytest's tmp dir (``console-*.png``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CALICO_LAB, Lab, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CALICOCTL = str(Path(sys.executable).parent / "calicoctl")
PODS = [("node1", "shop/web", "app=web"), ("node2", "shop/db", "app=db"),
        ("node3", "shop/cli", "app=cli")]  # fmt: skip

DB_ONLY_WEB = textwrap.dedent(
    """\
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: db-only-web, namespace: shop}
    spec:
      selector: app == 'db'
      ingress:
      - action: Allow
        source: {selector: app == 'web'}
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Iterator[Lab]:
    lab = lab_factory()
    lab.up("--nodes", "3", "--route-reflectors", "1", "--tor")
    for node, key, labels in PODS:
        lab.run("pod", "add", node, key, "--ports", "80/TCP", "--labels", labels)
    yield lab


@pytest.fixture(scope="module")
def console(lab: Lab) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [CALICO_LAB, "ui", "--name", lab.name, "--listen", f"127.0.0.1:{port}"],
        env=lab.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/cluster", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return proc.poll() is not None  # exited: stop waiting, fail below

    try:
        wait_for(up, 30, 0.2, "console answering")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):  # fmt: skip
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go (a test artifact under pytest's tmp dir)."""
    return tmp_path_factory.mktemp("console-screenshots")


def console_errors(drv: Any) -> list[str]:
    return [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def model_cells(drv: Any) -> dict[tuple[str, str, int, str], str]:
    """What the heat map shows: each cell's verdict class, its pair read from the headers."""
    rows = drv.execute_script(
        """var out = [];
           document.querySelectorAll('table.matrix').forEach(t => {
             for (var i = 1; i < t.rows.length; i++) {
               for (var j = 1; j < t.rows[i].cells.length; j++) {
                 var td = t.rows[i].cells[j];
                 if (td.classList.contains('self')) continue;
                 out.push([t.rows[i].cells[0].textContent, t.rows[0].cells[j].textContent,
                           t.dataset.port, t.dataset.protocol,
                           td.classList.contains('allow') ? 'allow' : 'deny']);
               }
             }
           });
           return out;"""
    )
    return {(r[0], r[1], int(r[2]), r[3]): r[4] for r in rows}


def test_pages_load_without_console_errors(console: str, browser: Any, shots: Path) -> None:
    for page, marker in [("cluster", "bgp-graph"), ("reachability", "grids"),
                         ("policy", "whatif-panel"), ("flows", "flow-filter")]:  # fmt: skip
        browser.get(f"{console}/{page}")
        assert browser.find_element(By.ID, marker)
        browser.save_screenshot(str(shots / f"console-{page}.png"))
        assert console_errors(browser) == [], page
    assert (shots / "console-cluster.png").stat().st_size > 10_000


def test_cluster_graph_shows_every_node_and_session(lab: Lab, console: str, browser: Any) -> None:
    status = lab.status()
    browser.get(f"{console}/cluster")
    wait_for(lambda: browser.execute_script("return !!window.bgpGraph"), 10, 0.1, "graph")
    graph = browser.execute_script(
        """return {nodes: bgpGraph.nodes().map(n => [n.id(), n.classes().join(' ')]),
                   edges: bgpGraph.edges().map(e => [e.source().id(), e.target().id(),
                                                     e.classes().join(' ')])};"""
    )
    ready = {f"node:{n['name']}": n["ready"] for n in status["nodes"]}
    tor = f"peer:{status['tor']['ip']}"
    classes = dict(graph["nodes"])
    assert set(classes) == {*ready, tor}
    for n, ok in ready.items():
        assert ("ready" if ok else "not-ready") in classes[n].split()
    assert "rr" in classes["node:node1"].split()  # --route-reflectors 1: node1
    assert "external" in classes[tor].split()
    by_ip = {n["ip"]: f"node:{n['name']}" for n in status["nodes"]}
    want = {}
    for n in status["nodes"]:
        for b in n["bgp"]:
            other = by_ip.get(b["peer"], f"peer:{b['peer']}")
            pair = tuple(sorted((f"node:{n['name']}", other)))
            ok = b["info"].startswith("Established")
            want[pair] = want.get(pair, True) and ok
    # node1 reflects for node2 and node3 (no session between them); each node peers the ToR.
    assert set(want) == {("node:node1", "node:node2"), ("node:node1", "node:node3"),
                         *((n, tor) for n in ready)}  # fmt: skip
    got = {tuple(sorted((s, t))): "established" in c.split() for s, t, c in graph["edges"]}
    assert got == want


def test_matrix_page_equals_calicoctl_and_live(
    lab: Lab, console: str, browser: Any, shots: Path
) -> None:
    lab.run("apply", "-f", "-", input=DB_ONLY_WEB)
    expected = lab.policy_matrix("80/TCP")
    assert "deny" in expected.values()
    browser.get(f"{console}/reachability?ports=80/TCP")
    assert model_cells(browser) == expected
    names = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.matrix th.col")]
    row = names.index("shop/cli") + 2  # 1-based, after the header row
    col = names.index("shop/db") + 2  # after the row-name cell
    browser.find_element(
        By.CSS_SELECTOR, f"table.matrix tr:nth-child({row}) > :nth-child({col})"
    ).click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#explain .explain"), 10, 0.1)
    text = browser.find_element(By.ID, "explain").text
    assert "DENY" in text and "shop/cli" in text
    # The live matrix agrees with the model once Felix programmed the policy.
    lab.matrix_settled(lambda m: m == expected)
    browser.find_element(By.ID, "live-btn").click()
    wait_for(lambda: browser.find_elements(By.ID, "live-summary"), 60, 0.2, "live matrix")
    assert "0 disagree" in browser.find_element(By.ID, "live-summary").text
    browser.save_screenshot(str(shots / "console-reachability-live.png"))
    assert browser.find_elements(By.CSS_SELECTOR, "td.disagree") == []
    assert console_errors(browser) == []


def test_whatif_shows_the_delta_apply_makes(
    lab: Lab, console: str, browser: Any, shots: Path
) -> None:
    change = (
        DB_ONLY_WEB.replace("db-only-web", "deny-web-first")
        .replace("action: Allow", "action: Deny")
        .replace("spec:\n", "spec:\n  order: 10\n")
    )
    before = lab.policy_matrix("80/TCP")
    browser.get(f"{console}/policy")
    browser.find_element(By.ID, "whatif-yaml").send_keys(change)
    browser.find_element(By.ID, "whatif-btn").click()
    wait_for(lambda: browser.find_elements(By.ID, "whatif-summary"), 20, 0.1, "what-if")
    browser.save_screenshot(str(shots / "console-whatif.png"))
    shown = {
        (r.get_attribute("data-from"), r.get_attribute("data-to"),
         int(r.get_attribute("data-port") or 0), r.get_attribute("data-protocol")):
        r.get_attribute("data-after")
        for r in browser.find_elements(By.CSS_SELECTOR, "#whatif-changes tr[data-from]")
    }  # fmt: skip
    assert lab.policy_matrix("80/TCP") == before  # the what-if wrote nothing
    # The same delta as `calicoctl policy diff` (its matrix delta, for this port).
    proposed = shots / "whatif-proposed.yaml"
    proposed.write_text(change)
    out = lab.exec("node1", CALICOCTL, "policy", "diff", "-f", str(proposed), "-o", "json").stdout
    diff = {(m["from"], m["to"], int(m["port"]), m["protocol"].upper()): m["verdict"]
            for m in json.loads(out)["matrix_delta"]
            if int(m["port"]) == 80 and m["protocol"].upper() == "TCP"}  # fmt: skip
    assert diff == shown
    lab.run("apply", "-f", "-", input=change)
    after = lab.policy_matrix("80/TCP")
    assert shown == {k: v for k, v in after.items() if before[k] != v}
    assert shown  # the change does change something
    browser.find_element(By.ID, "whatif-yaml").clear()
    browser.find_element(By.ID, "whatif-yaml").send_keys("kind: [unclosed")
    browser.find_element(By.ID, "whatif-btn").click()
    wait_for(lambda: browser.find_elements(By.ID, "whatif-errors"), 20, 0.1, "errors")
    assert "Invalid resources" in browser.find_element(By.ID, "whatif-errors").text
    assert console_errors(browser) == []


def test_console_json_matches_calicoctl(lab: Lab, console: str) -> None:
    with urllib.request.urlopen(f"{console}/api/matrix?ports=80/TCP", timeout=30) as r:
        data = json.loads(r.read())
    out = lab.calicoctl("policy", "matrix", "--ports", "80/TCP", "-o", "json").stdout
    assert data == json.loads(out)


def test_flows_page_shows_a_denied_probe_with_its_policy(
    lab: Lab, console: str, browser: Any, shots: Path
) -> None:
    """A probe denied in the lab appears on the live Flows page within 3 s, naming what
    denied it (the console reads every node's flow API through ``calico-lab flows``)."""
    import time

    lab.run("apply", "-f", "-", input=DB_ONLY_WEB)
    browser.get(f"{console}/flows")
    wait_for(lambda: browser.find_elements(By.ID, "flows"), 20, 0.1, "flows page")

    def denied_rows() -> list[Any]:
        return [r for r in browser.find_elements(By.CSS_SELECTOR, "#flows tr.flow")
                if "shop/cli" in r.text and "shop/db" in r.text and "deny" in r.text]  # fmt: skip

    for _ in range(10):  # until the policy is programmed: the first denied probe counts
        p = lab.run("probe", "shop/cli", "shop/db", "80/TCP", "--timeout", "2", check=False)
        if p.returncode != 0:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("shop/cli still reaches shop/db")
    t0 = time.monotonic()
    rows = wait_for(denied_rows, 15, 0.1, "denied row")
    shown_after = time.monotonic() - t0
    row = rows[0]  # the newest (rows are added at the top)
    assert "default end-of-tier" in row.text  # db-only-web selects db; cli matches no rule
    row.click()
    detail = row.find_element(By.XPATH, "following-sibling::tr[1]")
    assert "enforced: default end-of-tier deny" in detail.text
    assert browser.execute_script("return Chart.getChart('sparkline') !== undefined")
    browser.save_screenshot(str(shots / "console-flows-live.png"))
    assert shown_after < 3.0, f"the denied flow took {shown_after:.1f}s to appear"
    assert console_errors(browser) == []
