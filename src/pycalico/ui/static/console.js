// pycalico console: the little behaviour the server-rendered pages need.
(function () {
  "use strict";

  // Cluster: the BGP session graph.
  var graphEl = document.getElementById("bgp-graph");
  if (graphEl && window.cytoscape) {
    var data = JSON.parse(document.getElementById("graph-data").textContent);
    window.bgpGraph = cytoscape({
      container: graphEl,
      elements: data.nodes.concat(data.edges),
      layout: { name: "circle", padding: 30 },
      style: [
        { selector: "node", style: { "label": "data(label)", "text-wrap": "wrap", "text-valign": "center",
          "font-size": 10, "width": 70, "height": 70, "background-color": "#8fb3e0", "border-width": 2, "border-color": "#24364b" } },
        { selector: "node.ready", style: { "background-color": "#9fd8a8" } },
        { selector: "node.not-ready", style: { "background-color": "#f2a19b" } },
        { selector: "node.unknown", style: { "background-color": "#ddd" } },
        { selector: "node.rr", style: { "shape": "diamond", "border-color": "#f3a712", "border-width": 4 } },
        { selector: "node.external", style: { "shape": "round-rectangle", "background-color": "#c9bdf0", "border-color": "#6b4fbb" } },
        { selector: "edge", style: { "width": 3, "curve-style": "bezier", "line-color": "#1b7f3b" } },
        { selector: "edge.down", style: { "line-color": "#b3261e", "line-style": "dashed" } },
        { selector: "edge.established", style: { "line-color": "#1b7f3b" } }
      ]
    });
  }

  // Reachability: cells carry only their verdict class; the pair comes from the headers.
  var pairOf = function (td) {
    var table = td.closest("table.matrix");
    return { from: td.parentElement.cells[0].textContent,
      to: table.rows[0].cells[td.cellIndex].textContent,
      port: table.dataset.port, protocol: table.dataset.protocol };
  };
  document.addEventListener("mouseover", function (ev) {
    var td = ev.target.closest && ev.target.closest("table.matrix td");
    if (!td || td.title || td.classList.contains("self")) { return; }
    var p = pairOf(td);
    td.title = p.from + " → " + p.to + " " + p.port + "/" + p.protocol + ": " +
      (td.classList.contains("allow") ? "allow" : "deny") +
      (td.dataset.live ? " (live: " + td.dataset.live + ")" : "");
  });
  // A click on a cell explains that pair.
  document.addEventListener("click", function (ev) {
    var td = ev.target.closest && ev.target.closest("table.matrix td");
    if (!td || td.classList.contains("self")) { return; }
    document.querySelectorAll("td.sel").forEach(function (c) { c.classList.remove("sel"); });
    td.classList.add("sel");
    htmx.ajax("GET", "/reachability/explain?" + new URLSearchParams(pairOf(td)).toString(),
      { target: "#explain" });
  });

  // Flows: live table over server-sent events, sparkline of allowed/denied per minute.
  var flowTable = document.getElementById("flows");
  if (flowTable) {
    var body = flowTable.querySelector("tbody");
    var form = document.getElementById("flow-filter");
    var source = null, chart = null, lastSpark = 0;
    var params = function () { return new URLSearchParams(new FormData(form)).toString(); };
    var cell = function (tr, text) { var td = document.createElement("td"); td.textContent = text; tr.appendChild(td); };
    var addRow = function (r) {
      var tr = document.createElement("tr");
      tr.className = "flow " + r.action;
      cell(tr, r.end ? new Date(r.end * 1000).toLocaleTimeString() : "");
      cell(tr, r.node); cell(tr, r.src); cell(tr, r.dst); cell(tr, r.proto + "/" + r.dport);
      cell(tr, r.action); cell(tr, r.policy); cell(tr, r.packets);
      tr.querySelectorAll("td")[5].className = r.action + "-t";
      var detail = document.createElement("tr");
      detail.className = "detail"; detail.hidden = true;
      var td = document.createElement("td"); td.colSpan = 8;
      td.textContent = "enforced: " + (r.trace.join(" → ") || "-") + "\npending: " + (r.pending.join(" → ") || "-");
      td.style.whiteSpace = "pre";
      detail.appendChild(td);
      tr.addEventListener("click", function () { detail.hidden = !detail.hidden; });
      body.insertBefore(detail, body.firstChild);
      body.insertBefore(tr, detail);
      while (body.rows.length > 1000) { body.deleteRow(body.rows.length - 1); }
    };
    var spark = function () {
      lastSpark = Date.now();
      fetch("/api/flows/rate?" + params()).then(function (r) { return r.json(); }).then(function (d) {
        var labels = d.allowed.map(function (_v, i) { return i - d.allowed.length + 1; });
        if (!chart) {
          chart = new Chart(document.getElementById("sparkline"), { type: "line",
            data: { labels: labels, datasets: [
              { label: "allowed", data: d.allowed, borderColor: "#1b7f3b", pointRadius: 0 },
              { label: "denied", data: d.denied, borderColor: "#b3261e", pointRadius: 0 }] },
            options: { animation: false, responsive: true, maintainAspectRatio: false,
              plugins: { legend: { position: "right" } }, scales: { x: { display: false } } } });
        } else {
          chart.data.datasets[0].data = d.allowed; chart.data.datasets[1].data = d.denied; chart.update();
        }
      });
    };
    var connect = function () {
      if (source) { source.close(); }
      body.innerHTML = "";
      source = new EventSource("/flows/stream?" + params());
      source.addEventListener("flows", function (ev) {
        JSON.parse(ev.data).forEach(addRow);
        if (Date.now() - lastSpark > 2000) { spark(); }  // new rows: redraw, at most every 2 s
      });
      spark();
    };
    form.addEventListener("submit", function (ev) { ev.preventDefault(); connect(); });
    connect();
    setInterval(spark, 10000);
  }
})();
