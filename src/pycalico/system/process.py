"""ProcessRunner: the one seam through which pycalico runs external programs.

Invariants: argv is a list (never a shell string); output is captured as text; a non-zero
exit is returned, never raised, unless the caller asks via :func:`check`, which raises
:class:`CommandFailed` naming the command, exit code and stderr.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pycalico.errors import CalicoError


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


class ProcessRunner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed: ...


def check(result: Completed) -> Completed:
    """Return ``result`` or raise :class:`CommandFailed` if it failed."""
    if result.returncode != 0:
        raise CommandFailed(result)
    return result


class SubprocessRunner:
    """Runs commands with :func:`subprocess.run` (no shell)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        try:
            p = subprocess.run(
                list(argv),
                input=input,
                capture_output=True,
                text=True,
                env=None if env is None else dict(env),
                timeout=timeout,
            )
        except FileNotFoundError as e:
            return Completed(tuple(argv), 127, "", f"{argv[0]}: {e.strerror}")
        except subprocess.TimeoutExpired:
            return Completed(tuple(argv), 124, "", f"timed out after {timeout}s")
        return Completed(tuple(argv), p.returncode, p.stdout, p.stderr)


Handler = Callable[[tuple[str, ...], str | None], Completed | None]


@dataclass
class FakeProcessRunner:
    """Records every call; answers from ``handlers`` (first non-None wins), else rc 0.

    ``fail_when`` maps an argv substring to (returncode, stderr) for failure injection.
    """

    handlers: list[Handler] = field(default_factory=list)
    fail_when: dict[str, tuple[int, str]] = field(default_factory=dict)
    calls: list[tuple[tuple[str, ...], str | None, dict[str, str] | None]] = field(
        default_factory=list
    )

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
