"""calico-node component: the CNI server that runs forwarded plugin calls in-process.

The ``calico``/``calico-ipam`` plugins (the C shim installed by ``install-cni``, or the Python
entry points) first offer each call to ``$CALICO_CNI_SOCKET``; served here, an ADD costs only
its real work instead of a Python start-up plus imports. When this component is not running,
the plugins do the same work themselves (slower), so it never gates readiness. The plugins
send the pod's network namespace as an fd, so pods whose ``CNI_NETNS`` is mounted in the
runtime's private mount namespace are served too (see :mod:`pycalico.cni.server`).
Env: ``CALICO_CNI_SERVER_ENABLED`` (default true), ``CALICO_CNI_SOCKET`` (default
``<CALICO_NODE_STATE_DIR>/cni.sock``, i.e. ``/var/run/calico/cni.sock``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from pycalico.cni.main import DEFAULT_SOCKET
from pycalico.cni.server import CniServer
from pycalico.model.booleans import env_flag


class CniServerComponent:
    name = "cni-server"

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._server: CniServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = CniServer(self.socket_path)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cni-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def in_sync(self) -> bool:
        return True


def from_env(env: Mapping[str, str], state_dir: str | None = None) -> CniServerComponent | None:
    if not env_flag(env, "CALICO_CNI_SERVER_ENABLED", True):
        return None
    default = os.path.join(state_dir, "cni.sock") if state_dir else DEFAULT_SOCKET
    return CniServerComponent(env.get("CALICO_CNI_SOCKET") or default)
