"""BIRD control-socket client (AF_UNIX, BIRD's numbered reply protocol) and parsers.

Owns: one request/reply exchange with a running BIRD (:class:`BirdControl`), and the pure
parser :func:`parse_show_protocols` turning ``show protocols`` replies into
:class:`ProtocolRow` values.

Protocol (BIRD 2): on connect BIRD greets ``0001 BIRD x.y.z ready.``; each reply line is
``NNNN-text`` (more lines follow), `` text`` (continuation of the previous code) or
``NNNN text`` (last line). Codes ``0xxx`` are OK/status, ``1xxx`` table rows, ``2xxx``
table headings, ``8xxx`` run-time errors, ``9xxx`` parse errors.

Invariants: every call opens a fresh connection and closes it; a timeout (default 2 s, as
calicoctl) bounds every read; errors surface as BirdControlError / BirdNotRunning.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from pycalico.bgp.errors import BirdControlError, BirdNotRunning


@dataclass(frozen=True)
class Reply:
    """A complete BIRD reply: final code and every line as (code, text)."""

    code: int
    lines: tuple[tuple[int, str], ...]

    @property
    def text(self) -> str:
        return "\n".join(t for _, t in self.lines)

    @property
    def ok(self) -> bool:
        return self.code < 8000


@dataclass(frozen=True)
class ProtocolRow:
    """One row of ``show protocols`` (``info`` holds everything after ``since``)."""

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str


def parse_reply_lines(raw: list[str]) -> Reply:
    """Raw socket lines (newline stripped) → :class:`Reply` (continuations keep last code)."""
    lines: list[tuple[int, str]] = []
    code = 0
    for line in raw:
        if len(line) >= 5 and line[:4].isdigit() and line[4] in " -":
            code = int(line[:4])
            lines.append((code, line[5:]))
        elif line.startswith(" "):
            lines.append((code, line[1:]))
        else:
            raise BirdControlError(f"unexpected BIRD reply line {line!r}")
    return Reply(code, tuple(lines))


def parse_show_protocols(reply: Reply) -> list[ProtocolRow]:
    """``show protocols`` rows (code 1002 and continuations); the 2002 heading is checked."""
    heading = [t for c, t in reply.lines if c == 2002]
    if heading and heading[0].split()[:5] != ["Name", "Proto", "Table", "State", "Since"]:
        raise BirdControlError(f"unexpected show protocols heading {heading[0]!r}")
    rows = []
    for code, text in reply.lines:
        if code != 1002:
            continue
        parts = text.split(None, 5)
        if len(parts) < 5:
            raise BirdControlError(f"malformed show protocols row {text!r}")
        info = parts[5].strip() if len(parts) > 5 else ""
        rows.append(ProtocolRow(parts[0], parts[1], parts[2], parts[3], parts[4], info))
    return rows


class BirdControl:
    """Talks to one BIRD control socket."""

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        self.path = path
        self.timeout = timeout

    def command(self, cmd: str) -> Reply:
        """Send one CLI command; returns the reply (raises on 8xxx/9xxx error codes)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise BirdNotRunning(f"BIRD is not running (socket {self.path}: {e})") from None
            f = sock.makefile("rwb")
            hello = f.readline().decode(errors="replace")
            if not hello.startswith("0001 "):
                raise BirdControlError(f"unexpected BIRD greeting {hello!r}")
            f.write(cmd.encode() + b"\n")
            f.flush()
            raw: list[str] = []
            while True:
                line = f.readline().decode(errors="replace")
                if not line:
                    raise BirdControlError(f"BIRD closed the socket during {cmd!r}")
                line = line.rstrip("\n")
                raw.append(line)
                if len(line) >= 5 and line[:4].isdigit() and line[4] == " ":
                    break
        except TimeoutError:
            raise BirdControlError(f"timeout talking to BIRD at {self.path}") from None
        except OSError as e:
            raise BirdControlError(f"BIRD socket {self.path}: {e}") from None
        finally:
            sock.close()
        reply = parse_reply_lines(raw)
        if not reply.ok:
            raise BirdControlError(f"BIRD {cmd!r} failed: {reply.text}", reply.code)
        return reply

    def show_protocols(self) -> list[ProtocolRow]:
        return parse_show_protocols(self.command("show protocols"))

    def configure(self, path: str | None = None) -> Reply:
        """``configure ["path"]``: soft reconfiguration; sessions whose config is unchanged
        stay up. Raises BirdControlError when BIRD rejects the configuration."""
        reply = self.command(f'configure "{path}"' if path else "configure")
        if reply.code not in (3, 4, 18, 19, 20):
            raise BirdControlError(f"BIRD configure failed: {reply.text}", reply.code)
        return reply

    def version(self) -> str:
        """The greeting's version (e.g. ``2.0.12``) via ``show status``."""
        for code, text in self.command("show status").lines:
            if code == 1000:
                return text.split()[-1]
        raise BirdControlError("no version in show status")
