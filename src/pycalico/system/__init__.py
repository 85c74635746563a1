"""pycalico.system: narrow seams to the operating system, and their in-memory fakes.

- :mod:`pycalico.system.process`: :class:`ProcessRunner` (run argv with stdin, capture
  output) and :class:`ProcessLauncher` (+ ``run_attached`` on the caller's terminal, ``spawn``
  of long-running children returning a :class:`Process` handle) - :class:`SubprocessRunner`
  / :class:`FakeProcessRunner` (with controllable :class:`FakeProcess`). The only module of
  pycalico that uses :mod:`subprocess` (tests/unit/test_layering.py enforces it).
- :mod:`pycalico.system.iproute`: :class:`IpRoute`, ``ip``/``ip -batch`` in the current or a
  given network namespace (by name or by path) on top of a ProcessRunner.
- :mod:`pycalico.system.sysctl`: :class:`Sysctl` (``/proc/sys`` of the current netns) -
  :class:`ProcSysctl` / :class:`FakeSysctl`.
- :mod:`pycalico.system.netns`: namespace path helpers.
- :mod:`pycalico.system.kernel`: the typed kernel seam (links, addresses, routes, neighbours,
  FDB as frozen values; batched writes; :class:`KernelError` naming failed ops) -
  :class:`IpRouteKernel` (``ip``/``bridge -batch``) / :class:`FakeKernel`
  (:mod:`pycalico.system.fakekernel`, stateful, failure injection).
- :mod:`pycalico.system.clock`: :class:`Clock` - :class:`RealClock` / :class:`FakeClock`.

This package imports nothing heavy at import time (the CNI plugin's start-up depends on it);
submodules are imported explicitly by their users.
"""
