"""Supervisor: restart with back-off, never give up, stop in reverse order."""

from __future__ import annotations

from pycalico.node.supervisor import Supervisor


class FakeComponent:
    def __init__(self, name: str, log: list[str], fail_starts: int = 0) -> None:
        self.name = name
        self.log = log
        self.fail_starts = fail_starts
        self.running = False
        self.synced = False

    def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("datastore unavailable")
        self.running = True

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        self.running = False

    def alive(self) -> bool:
        return self.running

    def in_sync(self) -> bool:
        return self.synced


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_restart_with_backoff_after_death() -> None:
    log: list[str] = []
    clock = Clock()
    a = FakeComponent("a", log)
    sup = Supervisor([a], initial=1.0, maximum=4.0, clock=clock)
    sup.step()
    assert a.running and log == ["start a"]
    a.running = False  # dies
    sup.step()
    assert log[-1] == "stop a"
    clock.t = 0.5
    sup.step()
    assert not a.running  # back-off not elapsed
    clock.t = 1.0
    sup.step()
    assert a.running
    rep = sup.report()["a"]
    assert rep["restarts"] == 1 and rep["alive"]


def test_failing_start_backs_off_exponentially_up_to_max() -> None:
    log: list[str] = []
    clock = Clock()
    a = FakeComponent("a", log, fail_starts=4)
    sup = Supervisor([a], initial=1.0, maximum=3.0, clock=clock)
    attempts = []
    for i in range(200):
        clock.t = i * 0.1
        before = len([x for x in log if x.startswith("start")])
        sup.step()
        if len([x for x in log if x.startswith("start")]) > before:
            attempts.append(round(clock.t, 1))
    # starts at 0, then +1, +2, +3 (capped), +3 → running
    assert attempts == [0.0, 1.0, 3.0, 6.0, 9.0]
    assert a.running
    assert "datastore unavailable" in sup.report()["a"]["last_error"]


def test_stop_all_and_report() -> None:
    log: list[str] = []
    a, b = FakeComponent("a", log), FakeComponent("b", log)
    sup = Supervisor([a, b])
    sup.step()
    b.synced = True
    rep = sup.report()
    assert rep["b"]["in_sync"] and not rep["a"]["in_sync"]
    sup.stop_all()
    assert log[:2] == ["start a", "start b"] and sorted(log[2:]) == ["stop a", "stop b"]
    assert sup.component("b") is b and sup.component("x") is None
