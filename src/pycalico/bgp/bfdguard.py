"""BFD guard: tells a dead peer from a restarting one, which BIRD itself cannot.

Why this exists. BFD-tracked BGP sessions are rendered with BIRD's ``bfd graceful``: a BFD
down never flushes a session's routes in BIRD, it starts (or continues) a graceful-restart
helper phase. That is right when the peer's *BIRD* restarts (killed, crashed, or stopped by
its agent with ``graceful restart``): the kernel of the peer closes its TCP sessions at once,
we enter graceful restart, and BFD — which lives in the dead BIRD process — times out a few
hundred ms later; the stale routes must stay until the new BIRD has re-sent them. It is wrong
when the peer's *node or link* dies: nothing closes the session, BFD times out first, and the
routes would stay (stale) for the whole restart time (120 s). BIRD (2.0.12, and every later
release up to 3.x: ``bgp_bfd_notify``) offers only the two fixed behaviours: ``bfd on`` stops
the session on any BFD down — also during the peer's graceful restart, which withdraws the
routes of a merely restarting node — and ``bfd graceful`` never stops it.

This guard supplies the missing rule (FRR's behaviour as a graceful-restart helper): *a BFD
down while the session was established stops the session; a BFD down during a graceful
restart that began before it is ignored.* It polls ``show bfd sessions`` over BIRD's control
socket and, for each session it saw ``Up`` that is now ``Down``, compares the BFD change time
with the time the BGP protocol left ``up`` (both printed by BIRD with millisecond precision,
``timeformat protocol "%FT%T.%3f"``): when the protocol left ``up`` no earlier than
``window`` before BFD went down, BFD brought it down (``bfd graceful`` starts graceful
restart in the same event), so the guard sends ``restart <protocol>``, which flushes the
routes at once. A peer BIRD restart closes the session at least (multiplier − 1) BFD
intervals (0.4 s with the defaults) before BFD notices, outside the window. One more case
is a death: BFD had come back ``Up`` after the session closed (the peer's new BIRD was
answering while its session re-established) and now went down again.

Owns: :class:`BfdSession`, :func:`parse_bfd_sessions`, :func:`failed_by_bfd` (pure decision)
and :class:`BfdGuard` (one poll step, :meth:`BfdGuard.check_once`, and its loop).

Invariants: :meth:`BfdGuard.check_once` runs in one thread (the poll loop); only
:meth:`BfdGuard.set_peers` may be called from others. Only sessions seen ``Up`` by an
earlier poll are judged, each Up→Down once (a session recreated by our own ``restart``
starts ``Down`` and is never judged); a protocol
still ``up`` (BIRD has not processed the BFD event yet) is judged again on the next poll;
no error escapes the loop (logged once per distinct error; the next poll retries).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pycalico.bgp.control import BirdControl, ProtocolRow, Reply
from pycalico.bgp.errors import BgpError

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often BIRD's BFD sessions are read while any peer is BFD-tracked
WINDOW_S = 0.2  # protocol left "up" this close to the BFD down (or later): BFD did it
BFD_STATES = ("AdminDown", "Down", "Init", "Up")
RESTARTED_KEPT = 64  # restarted protocol names kept for status (a bounded history)


@dataclass(frozen=True)
class BfdSession:
    """One row of ``show bfd sessions``."""

    ip: str
    iface: str
    state: str
    since: str  # BIRD's "Since" column as printed

    @property
    def since_time(self) -> dt.datetime | None:
        return parse_since(self.since)


def parse_since(text: str) -> dt.datetime | None:
    """BIRD's ``%FT%T.%3f`` protocol time → datetime (None for any other format)."""
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_bfd_sessions(reply: Reply) -> list[BfdSession]:
    """``show bfd sessions`` (code 1020 lines: protocol name, heading, one row per session)."""
    out = []
    for code, text in reply.lines:
        parts = text.split()
        if code != 1020 or len(parts) < 4 or parts[2] not in BFD_STATES:
            continue
        out.append(BfdSession(parts[0], parts[1], parts[2], parts[3]))
    return out


def failed_by_bfd(
    bfd: BfdSession, proto: ProtocolRow, window: float = WINDOW_S, up_since: str = ""
) -> bool:
    """Whether the peer is dead rather than restarting (so ``proto``'s routes must go).

    True when the protocol is in ``start`` and either left ``up`` no earlier than ``window``
    seconds before BFD went down (BFD took it down), or left ``up`` before BFD last came
    ``Up`` (``up_since``: the peer's new BIRD had been answering during the graceful restart
    and now stopped). False when still ``up`` (BIRD has not handled the event yet),
    ``stop``/``down`` (the routes are gone already), or the peer closed the session first
    and BFD never came back (its BIRD restarting). Unparseable times are False (keep the
    routes: graceful restart decides).
    """
    if bfd.state != "Down" or proto.state != "start":
        return False
    b, p = bfd.since_time, parse_since(proto.since)
    if b is None or p is None:
        return False
    came_back = parse_since(up_since)
    return p >= b - dt.timedelta(seconds=window) or (came_back is not None and p < came_back)


class BfdGuard:
    """Polls one BIRD's BFD sessions and restarts the BGP protocols BFD brought down."""

    def __init__(
        self, control: BirdControl, *, interval: float = POLL_S, window: float = WINDOW_S
    ) -> None:
        self.control = control
        self.interval = interval
        self.window = window
        #: The last :data:`RESTARTED_KEPT` protocols restarted, in order (status and tests).
        self.restarted: collections.deque[str] = collections.deque(maxlen=RESTARTED_KEPT)
        self._peers: dict[str, tuple[str, ...]] = {}
        self._up: dict[str, str] = {}  # IP → "Since" of the Up state last seen
        self._lock = threading.Lock()
        self._last_error = ""

    def set_peers(self, peers: Mapping[str, Sequence[str]]) -> None:
        """Neighbour IP → names of the BFD-tracked BGP protocols towards it."""
        with self._lock:
            self._peers = {ip: tuple(names) for ip, names in peers.items() if names}
        # self._up belongs to the polling thread; the next poll drops peers no longer tracked

    @property
    def peers(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            return dict(self._peers)

    @property
    def active(self) -> bool:
        with self._lock:
            return bool(self._peers)

    def check_once(self) -> list[str]:
        """One poll: returns the protocols restarted now."""
        with self._lock:
            peers = dict(self._peers)
        if not peers:
            return []
        try:
            reply = self.control.command("show bfd sessions")
        except BgpError:
            self._up.clear()  # BIRD down or restarting: its new sessions start from Down
            raise
        sessions = [s for s in parse_bfd_sessions(reply) if s.ip in peers]
        fell = [s for s in sessions if s.state == "Down" and s.ip in self._up]
        up_since = {s.ip: self._up[s.ip] for s in fell}
        self._up = {s.ip: s.since for s in sessions if s.state == "Up"} | up_since
        if not fell:
            return []
        rows = {r.name: r for r in self.control.show_protocols()}
        done = []
        for s in fell:
            pending = False
            for name in peers[s.ip]:
                row = rows.get(name)
                if row is None:
                    continue
                if row.state == "up":
                    pending = True  # BIRD has not acted on the BFD event yet: next poll
                elif failed_by_bfd(s, row, self.window, up_since[s.ip]):
                    log.warning(
                        "BFD to %s went down at %s while %s was established: restarting it "
                        "(its routes are withdrawn now, not after the graceful-restart time)",
                        s.ip,
                        s.since,
                        name,
                    )
                    self.control.command(f"restart {name}")
                    done.append(name)
                else:
                    log.info(
                        "BFD to %s went down at %s during %s's graceful restart (since %s): "
                        "the peer's BIRD is restarting; routes kept",
                        s.ip,
                        s.since,
                        name,
                        row.since,
                    )
            if not pending:
                self._up.pop(s.ip, None)
        self.restarted.extend(done)
        return done

    def run(self, stop: threading.Event) -> None:
        """Poll every ``interval`` while any peer is BFD-tracked, until ``stop`` is set."""
        while not stop.wait(self.interval if self.active else 1.0):
            try:
                self.check_once()
                self._last_error = ""
            except BgpError as e:  # BIRD restarting or not up yet: the next poll retries
                if str(e) != self._last_error:
                    log.info("BFD guard: %s", e)
                self._last_error = str(e)
            except Exception as e:  # a reply we cannot read: keep guarding, say it once
                if repr(e) != self._last_error:
                    log.exception("BFD guard: unexpected error")
                self._last_error = repr(e)
