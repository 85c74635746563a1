"""ProcessRunner: the one seam through which pycalico runs external programs.

Owns every use of the :mod:`subprocess` module in pycalico (a test enforces that no module
outside ``pycalico.system`` imports it). Three ways to run a program:

- :meth:`ProcessRunner.run`: run to completion, stdin from ``input``, output captured as text.
- :meth:`ProcessLauncher.run_attached`: run to completion with the caller's terminal (stdout
  and stderr not captured; stdin inherited unless ``input`` is given) - for pass-through
  commands such as ``calico-lab exec``.
- :meth:`ProcessLauncher.spawn`: start a long-running child and return a :class:`Process`
  handle (pid, poll, wait, signals), the Popen-compatible subset pycalico uses.

Invariants: argv is a list (never a shell string); a non-zero exit is returned, never raised,
unless the caller asks via :func:`check`, which raises :class:`CommandFailed` naming the
command, exit code and stderr. ``run``/``run_attached`` report a program that cannot be
started as exit 127 and a timeout as exit 124 (the child is killed); ``spawn`` raises
:class:`OSError` like :class:`subprocess.Popen`. :meth:`Process.wait` raises
:class:`WaitTimeout` (never :class:`subprocess.TimeoutExpired`).

Dying with the agent: ``SubprocessRunner(die_with_parent=True)`` gives every child it starts
(``run``, ``run_attached`` and ``spawn``) the parent-death signal SIGKILL
(``prctl(PR_SET_PDEATHSIG)``, set between fork and exec, and kept across the ``exec`` of
``ip netns exec``): when the agent is SIGKILLed, its ``nft -f`` (which could otherwise
still commit a transaction after a new agent has started), ``nft monitor`` and
``ip monitor`` children die with it instead of living on as orphans. A child whose parent
died before the signal was set kills itself before ``exec``. Linux sends the signal when the
*thread* that started the child ends, so ``spawn`` it only from a thread that outlives the
child (``run`` always does: the thread waits). Children that must outlive the agent - BIRD,
which the next agent adopts (graceful restart), and the lab's node daemons - are started by
a runner without it (the default).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from pycalico.errors import CalicoError

DEVNULL = subprocess.DEVNULL
"""Redirect a child's stream to ``/dev/null``."""
STDOUT = subprocess.STDOUT
"""As ``stderr``: send the child's stderr where its stdout goes."""

Redirect = int | IO[Any] | None
"""Where a spawned child's stream goes: None (inherit), :data:`DEVNULL`, :data:`STDOUT`
(stderr only), a file descriptor or an open binary file."""


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""


class CommandFailed(CalicoError):
    """An external command exited non-zero (or could not be started)."""

    def __init__(self, result: Completed) -> None:
        super().__init__(
            f"{' '.join(result.argv)}: exit {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
        self.result = result


class WaitTimeout(CalicoError, TimeoutError):
    """:meth:`Process.wait` timed out; the process is still running."""

    def __init__(self, argv: Sequence[str], timeout: float | None) -> None:
        super().__init__(f"{' '.join(argv)}: still running after {timeout}s")
        self.argv = tuple(argv)
        self.timeout = timeout


class Process(Protocol):
    """A started child process (the subset of :class:`subprocess.Popen` pycalico uses)."""

    @property
    def pid(self) -> int: ...

    @property
    def argv(self) -> tuple[str, ...]: ...

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code (negative signal number if killed) after."""
        ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int:
        """Reap the child; raises :class:`WaitTimeout` if it runs past ``timeout``."""
        ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ProcessRunner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed: ...


class ProcessLauncher(ProcessRunner, Protocol):
    """A :class:`ProcessRunner` that can also start long-running children and run programs
    attached to the caller's terminal."""

    def run_attached(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run with stdout/stderr going to ours (``Completed.stdout`` is empty; ``stderr``
        only carries the reason of a 127/124 this runner produced itself)."""
        ...

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: Redirect = None,
        stdout: Redirect = None,
        stderr: Redirect = None,
        cwd: str | None = None,
        new_session: bool = False,
    ) -> Process: ...


_PR_SET_PDEATHSIG = 1
_LIBC: list[ctypes.CDLL] = []


def _libc() -> ctypes.CDLL:
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` (runs in the child between fork and exec): SIGKILL when the parent
    ends; if ``parent`` is already gone, die now (no allocation beyond the call itself)."""
    prctl = _libc().prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def check(result: Completed) -> Completed:
    """Return ``result`` or raise :class:`CommandFailed` if it failed."""
    if result.returncode != 0:
        raise CommandFailed(result)
    return result


class PopenProcess:
    """:class:`Process` over a real :class:`subprocess.Popen`."""

    def __init__(self, popen: subprocess.Popen[bytes], argv: Sequence[str]) -> None:
        self._p = popen
        self._argv = tuple(argv)

    @property
    def pid(self) -> int:
        return self._p.pid

    @property
    def argv(self) -> tuple[str, ...]:
        return self._argv

    @property
    def returncode(self) -> int | None:
        return self._p.returncode

    def poll(self) -> int | None:
        return self._p.poll()

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self._p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(self._argv, timeout) from None

    def send_signal(self, sig: int) -> None:
        self._p.send_signal(sig)

    def terminate(self) -> None:
        self._p.terminate()

    def kill(self) -> None:
        self._p.kill()


class SubprocessRunner:
    """Runs commands with :mod:`subprocess` (no shell). ``die_with_parent``: see the module
    docstring."""

    def __init__(self, *, die_with_parent: bool = False) -> None:
        self.die_with_parent = die_with_parent

    def _preexec(self) -> Callable[[], None] | None:
        return _die_with(os.getpid()) if self.die_with_parent else None

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        return self._run(argv, input, env, timeout, capture=True, preexec=self._preexec())

    def run_attached(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        return self._run(argv, input, env, timeout, capture=False, preexec=self._preexec())

    @staticmethod
    def _run(
        argv: Sequence[str],
        input: str | None,
        env: Mapping[str, str] | None,
        timeout: float | None,
        *,
        capture: bool,
        preexec: Callable[[], None] | None,
    ) -> Completed:
        """Run ``argv``; a missing program is exit 127, a timeout exit 124 (never raised)."""
        try:
            p = subprocess.run(
                list(argv),
                input=input,
                capture_output=capture,
                text=True,
                env=None if env is None else dict(env),
                timeout=timeout,
                preexec_fn=preexec,
            )
        except FileNotFoundError as e:
            return Completed(tuple(argv), 127, "", f"{argv[0]}: {e.strerror}")
        except subprocess.TimeoutExpired:
            return Completed(tuple(argv), 124, "", f"timed out after {timeout}s")
        return Completed(tuple(argv), p.returncode, p.stdout or "", p.stderr or "")

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: Redirect = None,
        stdout: Redirect = None,
        stderr: Redirect = None,
        cwd: str | None = None,
        new_session: bool = False,
    ) -> Process:
        p = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            start_new_session=new_session,
            preexec_fn=self._preexec(),
        )
        return PopenProcess(p, argv)


Handler = Callable[[tuple[str, ...], str | None], Completed | None]

_fake_pids = itertools.count(4_000_000)


class FakeProcess:
    """A controllable :class:`Process`: it runs until :meth:`exit` is called or it gets a
    signal in ``exit_on`` (TERM and KILL by default, exiting with ``-signal`` as Popen
    reports it). ``signals`` records every signal sent."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdin: Redirect = None,
        stdout: Redirect = None,
        stderr: Redirect = None,
        cwd: str | None = None,
        new_session: bool = False,
        exit_on: frozenset[int] = frozenset({signal.SIGTERM, signal.SIGKILL}),
    ) -> None:
        self._argv = tuple(argv)
        self.env = env
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.cwd = cwd
        self.new_session = new_session
        self.exit_on = exit_on
        self.signals: list[int] = []
        self._pid = next(_fake_pids)
        self._rc: int | None = None
        self._done = threading.Condition()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def argv(self) -> tuple[str, ...]:
        return self._argv

    @property
    def returncode(self) -> int | None:
        return self._rc

    def exit(self, code: int = 0) -> None:
        """Make the process end with ``code`` (a no-op if it already ended)."""
        with self._done:
            if self._rc is None:
                self._rc = code
                self._done.notify_all()

    def poll(self) -> int | None:
        return self._rc

    def wait(self, timeout: float | None = None) -> int:
        with self._done:
            if not self._done.wait_for(lambda: self._rc is not None, timeout):
                raise WaitTimeout(self._argv, timeout)
            assert self._rc is not None
            return self._rc

    def send_signal(self, sig: int) -> None:
        if self._rc is not None:
            return
        self.signals.append(sig)
        if sig in self.exit_on:
            self.exit(-sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class FakeProcessRunner:
    """Records every call; answers from ``handlers`` (first non-None wins), else rc 0.

    ``fail_when`` maps an argv substring to (returncode, stderr) for failure injection
    (``run`` and ``run_attached``); ``spawn_fail_when`` maps an argv substring to the
    :class:`OSError` message ``spawn`` raises. ``spawned`` holds every :class:`FakeProcess`.
    """

    handlers: list[Handler] = field(default_factory=list)
    fail_when: dict[str, tuple[int, str]] = field(default_factory=dict)
    spawn_fail_when: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[tuple[str, ...], str | None, dict[str, str] | None]] = field(
        default_factory=list
    )
    attached: list[tuple[str, ...]] = field(default_factory=list)
    spawned: list[FakeProcess] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        a = tuple(argv)
        self.calls.append((a, input, None if env is None else dict(env)))
        joined = " ".join(a) + "\n" + (input or "")
        for needle, (rc, err) in self.fail_when.items():
            if needle in joined:
                return Completed(a, rc, "", err)
        for h in self.handlers:
            r = h(a, input)
            if r is not None:
                return r
        return Completed(a, 0, "", "")

    def run_attached(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """As :meth:`run` (also recorded in ``calls``), but the output is dropped as a
        terminal would show it; ``attached`` lists the argv of these calls."""
        self.attached.append(tuple(argv))
        r = self.run(argv, input=input, env=env, timeout=timeout)
        return Completed(r.argv, r.returncode, "", r.stderr if r.returncode else "")

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: Redirect = None,
        stdout: Redirect = None,
        stderr: Redirect = None,
        cwd: str | None = None,
        new_session: bool = False,
    ) -> FakeProcess:
        joined = " ".join(argv)
        for needle, msg in self.spawn_fail_when.items():
            if needle in joined:
                raise OSError(msg)
        p = FakeProcess(
            argv,
            env=None if env is None else dict(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            new_session=new_session,
        )
        self.spawned.append(p)
        return p
