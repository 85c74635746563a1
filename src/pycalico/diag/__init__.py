"""Diagnostics for bug reports: the ``calicoctl node diags`` bundle (:mod:`.bundle`) and
secret redaction (:mod:`.redact`). Host compatibility checks live in
:mod:`pycalico.system.hostcheck` (they read only the OS)."""
