"""The few ``bpf(2)`` calls the guards need, through ctypes (no libbpf, no compiler, no bpffs).

Owns: the instruction encoding (:func:`insn`), the syscall itself (:func:`bpf`),
:func:`prog_load` (a verified program's fd, with the verifier's log in the error),
:func:`link_create` (a BPF link's fd) and :func:`in_netns`
(run a call in another network namespace: a netlink socket and a netfilter BPF link both
belong to the namespace of the thread that made them).

Invariants: every fd returned is close-on-exec (the kernel makes bpf fds ``O_CLOEXEC``), so a
child process never keeps a program or link alive; failures raise :class:`BpfError` naming
the object and the kernel's reason, :class:`BpfUnsupported` when retrying cannot help (no
eBPF, no CAP_BPF, an architecture without a known syscall number, a program or attach type
this kernel does not know).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from pycalico.errors import CalicoError

T = TypeVar("T")


class BpfError(CalicoError):
    """Loading or attaching a guard program failed."""


class BpfUnsupported(BpfError):
    """This kernel or machine cannot load or attach the program (no eBPF, no CAP_BPF, an
    unknown architecture, program or attach type): retrying will not help."""


PROG_LOAD = 5
LINK_CREATE = 28
_NR_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351}
#: errnos after which a retry cannot succeed (EINVAL: unknown type or a rejected program).
_FOR_GOOD = {errno.EPERM, errno.EACCES, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}
_ATTR_SIZE = 128  # larger than every attr we send; the kernel wants the tail zeroed
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction (``struct bpf_insn``, little-endian)."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def bpf(cmd: int, attr: bytes) -> int:
    """``bpf(cmd, attr)``: the kernel's return value, or ``-errno``."""
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise BpfUnsupported(f"bpf: unsupported machine {platform.machine()}")
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    rc = int(_libc.syscall(nr, cmd, buf, _ATTR_SIZE))
    return rc if rc >= 0 else -ctypes.get_errno()


def prog_load(
    prog_type: int, code: bytes, name: str, *, attach_type: int = 0, what: str = ""
) -> int:
    """Load ``code`` (whole 8-byte instructions) as a program of ``prog_type`` named ``name``
    (the kernel keeps 15 characters; ``what``: the name errors give, default ``name``)."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    pname = name.replace("-", "_").encode()[:15]
    attr = struct.pack(
        "<IIQQIIQII16sII",
        prog_type, len(code) // 8, ctypes.addressof(insns), ctypes.addressof(lic),
        1, len(log), ctypes.addressof(log), 0, 0, pname, 0, attach_type,
    )  # fmt: skip
    fd = bpf(PROG_LOAD, attr)
    if fd < 0:
        why = f"{os.strerror(-fd)}: {log.value.decode(errors='replace').strip()[-600:]}"
        raise BpfUnsupported(f"bpf: loading {what or name}: {why}")
    return fd


def link_create(prog_fd: int, attach_type: int, what: str, extra: bytes = b"") -> int:
    """``BPF_LINK_CREATE`` of ``prog_fd`` (``extra``: the attach type's own fields); the
    link's fd (the link lives as long as that fd, or until detached)."""
    fd = bpf(LINK_CREATE, struct.pack("<IIII", prog_fd, 0, attach_type, 0) + extra)
    if fd < 0:
        cls = BpfUnsupported if -fd in _FOR_GOOD else BpfError
        raise cls(f"bpf: attaching {what}: {os.strerror(-fd)}")
    return fd


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` in the network namespace ``netns`` (a name under /run/netns; None: ours). A
    helper thread enters the namespace, calls ``fn`` and ends (setns of a thread never
    affects the others); ``fn``'s exception is re-raised here."""
    if netns is None:
        return fn()
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            with open(f"/run/netns/{netns}") as f:
                if _libc.setns(f.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
                    raise BpfError(f"setns {netns}: {os.strerror(ctypes.get_errno())}")
            out.append(fn())
        except BaseException as e:  # handed to the caller's thread
            err.append(e)

    t = threading.Thread(target=run, name=f"netns-{netns}")
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
