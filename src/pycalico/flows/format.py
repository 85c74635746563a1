"""Text forms of flow records for calicoctl and calico-lab (pure).

Owns :func:`format_table` (``-o table``: time, node, reporter, from, to, proto/port, action,
the deciding tier/policy/rule, connections, packets and bytes; ``-o wide`` adds the whole
enforced trace and the pending verdict) and :func:`to_json` (``-o json``: ``{"flows":
[records]}`` with full traces, the documented record format).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from pycalico.flows.record import FlowRecord, proto_name

_HEAD = ("END", "NODE", "REPORTER", "FROM", "TO", "PORT", "ACTION", "DECIDED BY", "CONNS",
         "PKTS IN/OUT", "BYTES IN/OUT")  # fmt: skip


def _row(r: FlowRecord, wide: bool) -> list[str]:
    k = r.key
    pol = r.policy
    row = [
        time.strftime("%H:%M:%S", time.localtime(r.end)),
        r.node,
        k.reporter,
        k.src.label(),
        k.dst.label(),
        f"{k.dport}/{proto_name(k.proto)}" if k.dport else proto_name(k.proto),
        k.action,
        pol.label() if pol is not None else "-",
        str(r.connections),
        f"{r.packets_in}/{r.packets_out}",
        f"{r.bytes_in}/{r.bytes_out}",
    ]
    if wide:
        row.append(" > ".join(f"{t.label()}:{t.action}" for t in k.trace) or "-")
        row.append(str((r.pending or {}).get("action", "-")))
    return row


def format_table(records: Sequence[FlowRecord], wide: bool = False) -> str:
    head = list(_HEAD) + (["TRACE", "PENDING"] if wide else [])
    rows = [head] + [_row(r, wide) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def to_json(records: Sequence[FlowRecord]) -> str:
    return json.dumps({"flows": [r.to_json() for r in records]}, indent=2)
