"""Per-host IPAM allocation lock: an exclusive ``fcntl.flock`` on a lock file, as Calico's CNI
plugin holds ``/var/run/calico/ipam.lock`` around each allocation.

Invariant: the lock is re-entrant within one :class:`HostLock` object (nested ``with`` blocks
in the same thread do not deadlock) and released when the outermost block exits or the
process dies (the kernel drops flocks of dead processes, so a SIGKILL never wedges the host).
"""

from __future__ import annotations

import fcntl
import os
import threading
from types import TracebackType

DEFAULT_LOCK_PATH = "/var/run/calico/ipam.lock"


class HostLock:
    """``with HostLock(path): ...``; ``path=None`` disables locking."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._depth = 0
        self._mutex = threading.RLock()

    def __enter__(self) -> HostLock:
        if self.path is None:
            return self
        self._mutex.acquire()
        if self._depth == 0:
            d = os.path.dirname(self.path)
            if d:
                os.makedirs(d, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                self._mutex.release()
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.path is None:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
        self._mutex.release()
