"""BFD guard: parsing ``show bfd sessions`` and telling a dead peer (BFD went down while the
session was established: restart it) from a restarting one (the session had closed first:
leave graceful restart alone), over a scripted control socket."""

from __future__ import annotations

import pytest

from pycalico.bgp.bfdguard import BfdGuard, BfdSession, failed_by_bfd, parse_bfd_sessions
from pycalico.bgp.control import ProtocolRow, Reply, parse_reply_lines, parse_show_protocols
from pycalico.bgp.errors import BirdNotRunning

T0 = "2026-12-02T22:40:01.100"


def bfd_reply(*rows: tuple[str, str, str]) -> Reply:
    raw = [
        "1020-bfd1:",
        " IP address                Interface  State      Since         Interval  Timeout",
    ]
    raw += [f" {ip:<25} eth0       {st:<10} {since}     0.100    0.500" for ip, st, since in rows]
    return parse_reply_lines([*raw, "0000 "])


def protocols_reply(*rows: tuple[str, str, str]) -> Reply:
    raw = ["2002-Name       Proto      Table      State  Since         Info"]
    raw += [f"1002-{n:<10} BGP        ---        {st:<6} {since}  Idle" for n, st, since in rows]
    return parse_reply_lines([*raw, "0000 "])


class ScriptedBird:
    """The narrow BirdControl interface the guard uses, answering from a mutable script."""

    def __init__(self) -> None:
        self.bfd: list[tuple[str, str, str]] = []
        self.protos: list[tuple[str, str, str]] = []
        self.commands: list[str] = []
        self.down = False

    def command(self, cmd: str) -> Reply:
        if self.down:
            raise BirdNotRunning("BIRD is not running")
        self.commands.append(cmd)
        if cmd == "show bfd sessions":
            return bfd_reply(*self.bfd)
        return parse_reply_lines(["0006 Mesh_198_18_0_1: restarted"])

    def show_protocols(self) -> list[ProtocolRow]:
        self.commands.append("show protocols")
        return parse_show_protocols(protocols_reply(*self.protos))


def test_parse_bfd_sessions_rows_only() -> None:
    rows = parse_bfd_sessions(bfd_reply(("198.18.0.1", "Up", T0), ("198.18.0.3", "Down", T0)))
    assert rows == [
        BfdSession("198.18.0.1", "eth0", "Up", T0),
        BfdSession("198.18.0.3", "eth0", "Down", T0),
    ]
    assert rows[0].since_time is not None and rows[0].since_time.microsecond == 100000


@pytest.mark.parametrize(
    ("bfd_state", "proto_state", "proto_since", "expected"),
    [
        ("Down", "start", "2026-12-02T22:40:01.103", True),  # BFD first: GR in the same event
        ("Down", "start", "2026-12-02T22:40:01.000", True),  # within the 200 ms window
        ("Down", "start", "2026-12-02T22:40:00.650", False),  # session closed 450 ms earlier
        ("Down", "up", "2026-12-02T22:40:01.103", False),  # BIRD has not acted yet
        ("Down", "stop", "2026-12-02T22:40:01.103", False),  # routes already flushed
        ("Up", "start", "2026-12-02T22:40:01.103", False),
        ("Down", "start", "22:40:01.103", False),  # not BIRD's %FT%T.%3f: keep the routes
    ],
)
def test_failed_by_bfd(bfd_state: str, proto_state: str, proto_since: str, expected: bool) -> None:
    row = ProtocolRow("Mesh_198_18_0_1", "BGP", "---", proto_state, proto_since, "")
    assert failed_by_bfd(BfdSession("198.18.0.1", "eth0", bfd_state, T0), row) is expected


def _guard(bird: ScriptedBird) -> BfdGuard:
    g = BfdGuard(bird)  # type: ignore[arg-type]
    g.set_peers({"198.18.0.1": ["Mesh_198_18_0_1"], "198.18.0.3": ["Mesh_198_18_0_3"]})
    return g


def test_dead_peer_is_restarted_once() -> None:
    bird = ScriptedBird()
    g = _guard(bird)
    bird.bfd = [("198.18.0.1", "Up", "2026-12-02T22:39:00.000"), ("198.18.0.3", "Up", T0)]
    bird.protos = [("Mesh_198_18_0_1", "up", "2026-12-02T22:39:00.500")]
    assert g.check_once() == []
    # link cut: BFD down, BIRD's bfd graceful moved the protocol to start 2 ms later
    bird.bfd[0] = ("198.18.0.1", "Down", T0)
    bird.protos = [("Mesh_198_18_0_1", "start", "2026-12-02T22:40:01.102")]
    assert g.check_once() == ["Mesh_198_18_0_1"]
    assert bird.commands[-1] == "restart Mesh_198_18_0_1"
    # still down (the restarted protocol is in start, after the BFD change): judged once only
    bird.protos = [("Mesh_198_18_0_1", "start", "2026-12-02T22:40:01.200")]
    assert g.check_once() == [] and list(g.restarted) == ["Mesh_198_18_0_1"]


def test_restarting_peer_keeps_graceful_restart() -> None:
    bird = ScriptedBird()
    g = _guard(bird)
    bird.bfd = [("198.18.0.1", "Up", "2026-12-02T22:39:00.000")]
    g.check_once()
    # the peer's BIRD was killed: its kernel closed the session at .650, BFD timed out at .100
    bird.bfd = [("198.18.0.1", "Down", T0)]
    bird.protos = [("Mesh_198_18_0_1", "start", "2026-12-02T22:40:00.650")]
    assert g.check_once() == []
    assert not any(c.startswith("restart") for c in bird.commands)


def test_peer_dying_during_its_own_graceful_restart_is_restarted() -> None:
    bird = ScriptedBird()
    g = _guard(bird)
    # the session closed at 22:39:59 (BIRD restart), the new BIRD's BFD came Up at 22:40:00.5
    bird.bfd = [("198.18.0.1", "Up", "2026-12-02T22:40:00.500")]
    bird.protos = [("Mesh_198_18_0_1", "start", "2026-12-02T22:39:59.000")]
    assert g.check_once() == []
    # ... and before the session re-established, the node died
    bird.bfd = [("198.18.0.1", "Down", "2026-12-02T22:40:03.000")]
    assert g.check_once() == ["Mesh_198_18_0_1"]


def test_event_not_yet_handled_by_bird_is_judged_on_the_next_poll() -> None:
    bird = ScriptedBird()
    g = _guard(bird)
    bird.bfd = [("198.18.0.1", "Up", "2026-12-02T22:39:00.000")]
    g.check_once()
    bird.bfd = [("198.18.0.1", "Down", T0)]
    bird.protos = [("Mesh_198_18_0_1", "up", "2026-12-02T22:39:00.500")]
    assert g.check_once() == []
    bird.protos = [("Mesh_198_18_0_1", "start", "2026-12-02T22:40:01.104")]
    assert g.check_once() == ["Mesh_198_18_0_1"]


def test_never_up_unknown_or_untracked_sessions_are_ignored() -> None:
    bird = ScriptedBird()
    g = _guard(bird)
    bird.bfd = [("198.18.0.1", "Down", T0), ("198.18.0.9", "Up", T0)]
    bird.protos = [("Mesh_198_18_0_1", "start", "2026-12-02T22:40:01.102")]
    assert g.check_once() == []  # never seen Up (e.g. recreated by our own restart)
    bird.bfd = [("198.18.0.9", "Down", T0)]
    assert g.check_once() == []  # not a BFD-tracked peer of ours
    g.set_peers({})
    bird.commands.clear()
    assert g.check_once() == [] and bird.commands == []  # nothing tracked: BIRD not asked


def test_bird_restart_forgets_what_was_up() -> None:
    bird = ScriptedBird()
    g = _guard(bird)
    bird.bfd = [("198.18.0.1", "Up", "2026-12-02T22:39:00.000")]
    g.check_once()
    bird.down = True
    with pytest.raises(BirdNotRunning):
        g.check_once()
    # the new BIRD's session to the peer starts Down: nothing to judge
    bird.down = False
    bird.bfd = [("198.18.0.1", "Down", T0)]
    bird.protos = [("Mesh_198_18_0_1", "start", "2026-12-02T22:40:01.102")]
    assert g.check_once() == []
