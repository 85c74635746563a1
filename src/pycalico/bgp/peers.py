"""BGP peer rows: BIRD ``show protocols`` rows -> the peer table of ``calicoctl node status``.

Owns the mapping of pycalico's BIRD protocol names (``Mesh_<ip>``, ``Node_<ip>``,
``Global_<ip>``, with ``_port_<n>`` when the peer's port is not 179; ``.``/``:`` of the address
written as ``_``) back to (peer address, peer type, state, since, info), as calicoctl prints
them. Shared by ``calicoctl node status`` and calico-node's ``status.json``.

Invariants: pure; one IP family per call (read from the address form in the name); rows of
other protocols and of names that are not peers are skipped.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable

from pycalico.bgp.control import ProtocolRow
from pycalico.bgp.model import DEFAULT_PORT, PeerType

_PEER_NAME = re.compile(r"^(Global|Node|Mesh)_(.+?)(?:_port_(\d+))?$")


def peer_rows(rows: Iterable[ProtocolRow], version: int) -> list[list[str]]:
    """Table rows (address, type, state, since, info) for BGP peers of one family."""
    out = []
    for r in rows:
        if r.proto != "BGP":
            continue
        m = _PEER_NAME.match(r.name)
        if not m:
            continue
        raw = m.group(2)
        is_v4 = re.fullmatch(r"\d+_\d+_\d+_\d+", raw) is not None
        if (version == 4) != is_v4:
            continue
        addr = raw.replace("_", "." if is_v4 else ":")
        port = m.group(3)
        if port and int(port) != DEFAULT_PORT:
            addr = f"{addr}:{port}" if is_v4 else f"[{addr}]:{port}"
        out.append(
            [
                addr,
                PeerType(m.group(1)).description,
                r.state,
                format_since(r.since),
                " ".join(r.info.split()),
            ]
        )
    return out


def format_since(since: str, today: _dt.date | None = None) -> str:
    """BIRD's ``2026-11-25T23:30:04.123`` → ``23:30:04`` today, else the date."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})", since)
    if not m:
        return since
    day = today or _dt.date.today()
    return m.group(2) if m.group(1) == day.isoformat() else m.group(1)
