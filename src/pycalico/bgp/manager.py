"""BirdManager: owns one BIRD 2 daemon — its config file, its process, its reloads.

Owns:
- Writing ``bird.cfg`` atomically: the text goes to a temp file in the same directory, is
  checked with ``bird -p -c <tmp>`` and only then renamed over the live file. A rejected
  config raises BirdConfigInvalid and leaves the live file untouched.
- Running ``bird -f -R -c CFG -s SOCK -P PID`` as a supervised child (optionally behind a
  command prefix such as ``ip netns exec NS``); a supervisor thread restarts it (after
  ``restart_delay``) whenever it dies unless :meth:`stop` was called.
- Graceful restart recovery (``-R``, as Calico's runit service starts BIRD; ``recovery``):
  a BIRD started after a previous one died, was killed or left with ``graceful restart``
  finds its predecessor's routes (protocol bird) still in the kernel — the kernel protocol
  has ``persist`` — and, because the kernel protocol also has ``graceful restart``, keeps
  them untouched until every BGP session has re-established and sent End-of-RIB (or the
  config's ``graceful restart wait`` ran out). Without ``-R`` its first kernel scan deletes
  them and established flows to other nodes' blocks stall until BGP reconverges.
- Reloading with ``configure`` over the control socket (BIRD soft-reconfigures: protocols
  whose configuration did not change keep their sessions).

Every child (the parse check and the daemon) is run through the injected
:class:`~pycalico.system.process.ProcessLauncher` (default: the real one).

Invariants: at most one supervisor and one BIRD child at a time (:meth:`start` while the
supervisor is respawning leaves the respawn to it); only the PID this manager started is
ever signalled; writes are skipped when the
text is unchanged (no needless reconfigure); all public methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Sequence

from pycalico.bgp.control import BirdControl, ProtocolRow
from pycalico.bgp.errors import BgpError, BirdConfigInvalid, BirdControlError
from pycalico.bgp.model import BirdConfig
from pycalico.bgp.render import render_bird_config
from pycalico.system.process import (
    DEVNULL,
    STDOUT,
    Process,
    ProcessLauncher,
    SubprocessRunner,
    WaitTimeout,
)


class BirdManager:
    """Config file + supervised process + control socket of one BIRD instance."""

    def __init__(
        self,
        config_path: str,
        socket_path: str,
        pid_path: str | None = None,
        *,
        bird_binary: str = "bird",
        command_prefix: Sequence[str] = (),
        log_path: str | None = None,
        restart_delay: float = 1.0,
        recovery: bool = True,
        runner: ProcessLauncher | None = None,
    ) -> None:
        self.config_path = os.path.abspath(config_path)
        self.socket_path = socket_path
        self.pid_path = pid_path or os.path.splitext(self.config_path)[0] + ".pid"
        self.bird_binary = bird_binary
        self.command_prefix = list(command_prefix)
        self.log_path = log_path
        self.restart_delay = restart_delay
        self.recovery = recovery
        self.runner: ProcessLauncher = runner or SubprocessRunner()
        self.control = BirdControl(socket_path)
        self.restarts = 0
        self._lock = threading.RLock()
        self._proc: Process | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- config ----------------------------------------------------------------------------
    def check(self, path: str) -> None:
        """``bird -p -c path``; raises BirdConfigInvalid with BIRD's message."""
        p = self.runner.run([self.bird_binary, "-p", "-c", path], timeout=30)
        if p.returncode != 0:
            raise BirdConfigInvalid(path, p.stderr or p.stdout)

    def write_config(self, text: str) -> bool:
        """Atomically replace the config with ``text`` after a parse check.

        Returns False (and touches nothing) when the file already holds ``text``.
        """
        with self._lock:
            try:
                with open(self.config_path) as f:
                    if f.read() == text:
                        return False
            except FileNotFoundError:
                pass
            d = os.path.dirname(self.config_path)
            os.makedirs(d, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".bird.cfg.", dir=d)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                self.check(tmp)
                os.replace(tmp, self.config_path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return True

    def apply(self, cfg: BirdConfig | str) -> bool:
        """Render (if needed), write and — when BIRD runs — reload. True if anything changed."""
        text = cfg if isinstance(cfg, str) else render_bird_config(cfg)
        with self._lock:
            changed = self.write_config(text)
            if changed and self.running:
                self.reload()
            return changed

    def reload(self) -> None:
        """``configure``: soft reconfiguration of the running daemon."""
        self.control.configure()

    # -- process ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _spawn(self) -> Process:
        argv = [*self.command_prefix, self.bird_binary, "-f"]
        if self.recovery:
            argv.append("-R")
        argv += ["-c", self.config_path]
        argv += ["-s", self.socket_path, "-P", self.pid_path]
        out = open(self.log_path, "ab") if self.log_path else DEVNULL  # noqa: SIM115
        try:
            return self.runner.spawn(argv, stdout=out, stderr=STDOUT)
        finally:
            if self.log_path and not isinstance(out, int):
                out.close()

    def start(self, wait: float = 10.0) -> None:
        """Start BIRD (config must exist) and its supervisor; wait until the socket answers."""
        with self._lock:
            if not os.path.exists(self.config_path):
                raise BgpError(f"no BIRD config at {self.config_path}; write_config first")
            if self.running:
                return
            sup = self._supervisor
            if sup is None or not sup.is_alive() or self._stopping.is_set():
                if sup is not None:
                    sup.join(5)  # a stopped supervisor exits at once (it never respawns)
                self._stopping.clear()
                self._proc = self._spawn()
                self._supervisor = threading.Thread(
                    target=self._supervise, name=f"bird-supervisor:{self.socket_path}", daemon=True
                )
                self._supervisor.start()
            # else: BIRD died and the supervisor respawns it after its back-off; a second
            # BIRD started here would only race it ("I found another BIRD running").
        self.wait_ready(wait)

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.control.command("show status")
                return
            except BirdControlError as e:
                if time.monotonic() > deadline:
                    raise BirdControlError(f"BIRD did not become ready: {e}") from None
                time.sleep(0.02)

    def _supervise(self) -> None:
        """Restart BIRD whenever it dies: ``restart_delay`` doubling up to 30 s while it keeps
        dying within 10 s of a start; back to ``restart_delay`` after a longer life."""
        delay = self.restart_delay
        while not self._stopping.is_set():
            p = self._proc
            if p is None:
                return
            started = time.monotonic()
            p.wait()
            if time.monotonic() - started > 10:
                delay = self.restart_delay
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, 30.0)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                self._proc = self._spawn()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the supervisor, then TERM (and if needed KILL) the BIRD we started."""
        self._stopping.set()
        with self._lock:
            p = self._proc
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except WaitTimeout:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(timeout=timeout)
        if self._supervisor is not None:
            self._supervisor.join(timeout=timeout)
        self._supervisor = None

    # -- status ----------------------------------------------------------------------------
    def protocols(self) -> list[ProtocolRow]:
        return self.control.show_protocols()
