"""Delegation: run another CNI plugin (an IPAM plugin) exactly as a runtime would.

The plugin is looked up by ``type`` in ``CNI_PATH``; it gets the same environment with
``CNI_COMMAND`` replaced and the complete network config on stdin. A non-zero exit is turned
back into a :class:`CniError` with the delegate's own code and message. The delegate runs
through a :class:`~pycalico.system.process.ProcessRunner` (default: the real one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pycalico.cni.errors import INTERNAL, INVALID_NETCONF, CniError
from pycalico.system.process import ProcessRunner, SubprocessRunner


def find_plugin(plugin: str, cni_path: str) -> str:
    if "/" in plugin:
        raise CniError(INVALID_NETCONF, "invalid plugin type", f"{plugin!r} contains '/'")
    for d in cni_path.split(":"):
        if d:
            p = os.path.join(d, plugin)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
    raise CniError(
        INVALID_NETCONF, f"failed to find plugin {plugin!r}", f"not in CNI_PATH {cni_path!r}"
    )


def exec_plugin(
    plugin: str,
    command: str,
    stdin: bytes,
    environ: Mapping[str, str],
    runner: ProcessRunner | None = None,
) -> dict[str, Any] | None:
    path = find_plugin(plugin, environ.get("CNI_PATH", ""))
    env = dict(environ)
    env["CNI_COMMAND"] = command
    runner = runner or SubprocessRunner()
    p = runner.run([path], input=stdin.decode(), env=env, timeout=120)
    out = p.stdout.strip()
    doc: Any = None
    if out:
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
    if p.returncode != 0:
        if isinstance(doc, dict) and isinstance(doc.get("code"), int):
            raise CniError(doc["code"], f"{plugin}: {doc.get('msg', '')}", doc.get("details", ""))
        raise CniError(
            INTERNAL, f"{plugin} {command} failed (exit {p.returncode})", p.stderr[-500:]
        )
    return doc if isinstance(doc, dict) else None
