"""pycalico.system: narrow seams to the operating system, and their in-memory fakes.

- :mod:`pycalico.system.process`: :class:`ProcessRunner` (run argv with stdin, capture
  output) - :class:`SubprocessRunner` / :class:`FakeProcessRunner`.
- :mod:`pycalico.system.iproute`: :class:`IpRoute`, ``ip``/``ip -batch`` in the current or a
  given network namespace (by name or by path) on top of a ProcessRunner.
- :mod:`pycalico.system.sysctl`: :class:`Sysctl` (``/proc/sys`` of the current netns) -
  :class:`ProcSysctl` / :class:`FakeSysctl`.
- :mod:`pycalico.system.netns`: namespace path helpers.

This package imports nothing heavy at import time (the CNI plugin's start-up depends on it);
submodules are imported explicitly by their users.
"""
