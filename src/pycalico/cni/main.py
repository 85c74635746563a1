"""Entry points of the exec'd CNI plugins ``calico`` and ``calico-ipam``.

Reads stdin, then (unless ``PYCALICO_CNI_IN_PROCESS=1``) offers the invocation to the node's
CNI server at ``$CALICO_CNI_SOCKET`` (default ``/var/run/calico/cni.sock``) through
:mod:`pycalico.cni.client`; with no server there, or one serving another network namespace,
it runs :func:`pycalico.cni.runner.run` in-process. Either way the same code produces the
result, so only speed depends on the server. This module imports nothing heavy at import
time: with a server, an invocation never imports the datastore, IPAM or pydantic.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~5 ms per call
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pycalico.cni.context import Deps

PLUGIN_CALICO = "calico"
PLUGIN_IPAM = "calico-ipam"
DEFAULT_SOCKET = "/var/run/calico/cni.sock"


def run(
    plugin: str,
    environ: Mapping[str, str],
    stdin: bytes,
    deps: Callable[[], Deps] | None = None,
    *,
    close_datastore: bool = False,
) -> tuple[int, str]:
    """In-process invocation (see :func:`pycalico.cni.runner.run`)."""
    from pycalico.cni.runner import run as _run

    return _run(plugin, environ, stdin, deps, close_datastore=close_datastore)


def _exit(rc: int, out: bytes) -> None:
    if out:
        sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (module GC, sqlite close/checkpoint): everything the
    # plugin wrote is committed and its output flushed.
    os._exit(rc)


def _main(plugin: str) -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help", "-v", "--version"):
        from pycalico.cni.types import SUPPORTED_VERSIONS

        print(f"{plugin} (pycalico) CNI plugin; CNI versions {', '.join(SUPPORTED_VERSIONS)}")
        sys.exit(0)
    try:
        stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    except (OSError, ValueError) as e:
        err = e.__class__.__name__
        _exit(1, f'{{"cniVersion":"1.1.0","code":5,"msg":"failed to read stdin: {err}"}}'.encode())
        return
    sock = os.environ.get("CALICO_CNI_SOCKET", DEFAULT_SOCKET)
    if sock and os.environ.get("PYCALICO_CNI_IN_PROCESS") != "1" and os.path.exists(sock):
        from pycalico.cni.client import forward

        got = forward(plugin, sock, stdin, os.environ)
        if got is not None:
            _exit(got[0], got[1])
            return
    rc, out = run(plugin, os.environ, stdin)
    _exit(rc, out.encode())


def calico_main() -> None:
    _main(PLUGIN_CALICO)


def ipam_main() -> None:
    _main(PLUGIN_IPAM)
