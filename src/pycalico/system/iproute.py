"""IpRoute: iproute2 (``ip``) driven through a ProcessRunner, in any network namespace.

Chosen over pyroute2 for the CNI hot path: ``import pyroute2`` costs ~200 ms while one
``ip -batch -`` process applies a whole interface set-up in ~2-3 ms (see bench/cni.py).

Invariants: a batch is all-or-error from the caller's view (``ip -batch`` stops at the
first failing line and :class:`IpError` carries its stderr); queries use ``-j`` JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pycalico.errors import CalicoError
from pycalico.system.netns import ip_prefix
from pycalico.system.process import Completed, ProcessRunner


class IpError(CalicoError):
    """An ``ip`` command failed."""

    def __init__(self, what: str, result: Completed) -> None:
        super().__init__(f"{what}: {(result.stderr or result.stdout).strip()}")
        self.result = result


def decode_json_stream(text: str) -> list[Any]:
    """The JSON documents of ``text``, one after another (``ip -j``/``tc -j -batch`` print
    one document per command)."""
    dec = json.JSONDecoder()
    out: list[Any] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out


class IpRoute:
    def __init__(self, runner: ProcessRunner, timeout: float = 30.0) -> None:
        self.runner = runner
        self.timeout = timeout

    def batch(self, lines: Sequence[str], netns: str | None = None) -> None:
        """Apply ``lines`` (``ip`` commands without the leading ``ip``) in one process."""
        if not lines:
            return
        argv = [*ip_prefix(netns), "-batch", "-"]
        r = self.runner.run(argv, input="\n".join(lines) + "\n", timeout=self.timeout)
        if r.returncode != 0:
            raise IpError(f"ip -batch in {netns or 'current netns'}", r)

    def run(self, *args: str, netns: str | None = None) -> str:
        r = self.runner.run([*ip_prefix(netns), *args], timeout=self.timeout)
        if r.returncode != 0:
            raise IpError(f"ip {' '.join(args)}", r)
        return r.stdout

    def query(self, lines: Sequence[str], netns: str | None = None) -> list[Any]:
        """Run ``show``-style commands with ``-j`` in one process; one JSON doc per line."""
        argv = [*ip_prefix(netns), "-j", "-batch", "-"]
        r = self.runner.run(argv, input="\n".join(lines) + "\n", timeout=self.timeout)
        if r.returncode != 0:
            raise IpError(f"ip -j -batch in {netns or 'current netns'}", r)
        return decode_json_stream(r.stdout)
