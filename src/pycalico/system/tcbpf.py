"""The tc guard's three tiny eBPF classifiers, loaded with ``bpf(2)`` and attached with one
rtnetlink message per filter (no compiler, no bpffs, no pyroute2).

Owns: the bytecode of the guard programs (:data:`PROGRAMS`), :func:`load` (a program's fd,
cached per process) and :func:`attach` (a batch of ``RTM_NEWTFILTER`` replace requests, in
the current namespace or a named one, sent on ONE netlink socket).

The programs (``direct-action`` ``cls_bpf``, so they return the tc verdict themselves; the
kernel's tc actions ``skbedit``/``gact``/``fw`` are not needed, and many kernels - this
project's CI kernel among them - are built without them):

- ``wl-in`` (workload interface, ingress: FROM the workload): ``mark |= FROM_WL``, then
  ``TC_ACT_UNSPEC`` (the next filter runs: the QoS redirect to an IFB, if any);
- ``wl-out`` (workload interface, egress: TO the workload): drop a packet that arrived on
  some interface (``ingress_ifindex != 0``: forwarded) without the ``SEEN`` mark; packets
  the host itself sends (``ingress_ifindex == 0``) always pass;
- ``host-out`` (the node's other interfaces, egress): drop a packet with ``FROM_WL`` and
  without ``SEEN`` (from a workload, never evaluated by the ``calico`` table); anything
  else passes;
- ``wl-out-v4``/``host-out-v4``: the same for IPv4 packets only, every other protocol passes
  (Felix without ``ipv6Support`` programs no ``ip6 calico`` table to mark IPv6 packets).

``SEEN`` is :data:`~pycalico.felix.rules.policy.MARK_EVALUATED` (set by the first rule of
the ``calico`` table's filter base chains, so packets the table drops never get here);
``FROM_WL`` is a mark bit of Calico's ``0xffff0000`` range that nft never clears.

Invariants: programs are loaded once per process and per program (the kernel filter keeps
its own reference); :func:`attach` is all-or-error (it raises :class:`BpfError` naming the
device and the kernel's errno of the first failing filter); nothing here reads state.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from pycalico.system.bpfsys import BpfError, in_netns, insn, prog_load

#: The packet mark bit set on everything that entered the node from a workload interface.
MARK_FROM_WL = 0x200000
#: Set by the ``calico`` table's filter base chains (== rules.policy.MARK_EVALUATED).
MARK_SEEN = 0x40000
NAME_PREFIX = "calico-guard-"
#: The guard filters' preference (runs before the QoS redirect, preference 2) and handle.
PREF = 1
HANDLE = 1

_TC_ACT_UNSPEC = -1
_TC_ACT_OK = 0
_TC_ACT_SHOT = 2
_SKB_MARK = 8  # offsetof(struct __sk_buff, mark)
_SKB_PROTOCOL = 16
_SKB_INGRESS_IFINDEX = 36


_LDXW, _STXW, _OR32K, _AND64K = 0x61, 0x63, 0x44, 0x57
_MOV64K, _JEQK, _JNEK, _JSETK, _EXIT = 0xB7, 0x15, 0x55, 0x45, 0x95


def _ret(verdict: int) -> bytes:
    return insn(_MOV64K, 0, imm=verdict) + insn(_EXIT)


def _ipv4_only(body: bytes) -> bytes:
    """``body`` (ending in the 2-instruction pass verdict) for IPv4 packets; any other
    protocol jumps straight to that pass verdict."""
    n = len(body) // 8
    proto = socket.htons(0x0800)  # skb->protocol is big-endian, read as a native u32
    return insn(_LDXW, 4, 1, _SKB_PROTOCOL) + insn(_JNEK, 4, off=n - 2, imm=proto) + body


_WL_OUT = (
    insn(_LDXW, 2, 1, _SKB_MARK)
    + insn(_JSETK, 2, off=4, imm=MARK_SEEN)  # seen: pass
    + insn(_LDXW, 3, 1, _SKB_INGRESS_IFINDEX)
    + insn(_JEQK, 3, off=2, imm=0)  # sent by the host itself: pass
    + _ret(_TC_ACT_SHOT)
    + _ret(_TC_ACT_UNSPEC)
)
_HOST_OUT = (
    insn(_LDXW, 2, 1, _SKB_MARK)
    + insn(_AND64K, 2, imm=MARK_FROM_WL | MARK_SEEN)
    + insn(_JNEK, 2, off=2, imm=MARK_FROM_WL)
    + _ret(_TC_ACT_SHOT)
    + _ret(_TC_ACT_UNSPEC)
)
#: name -> bytecode (r1 = struct __sk_buff *). The ``-v4`` variants check IPv4 packets only
#: (Felix without ``ipv6Support`` has no ``ip6 calico`` table to mark IPv6 ones).
PROGRAMS: dict[str, bytes] = {
    "wl-in": (
        insn(_LDXW, 2, 1, _SKB_MARK)
        + insn(_OR32K, 2, imm=MARK_FROM_WL)
        + insn(_STXW, 1, 2, _SKB_MARK)
        + _ret(_TC_ACT_UNSPEC)
    ),
    "wl-out": _WL_OUT,
    "host-out": _HOST_OUT,
    "wl-out-v4": _ipv4_only(_WL_OUT),
    "host-out-v4": _ipv4_only(_HOST_OUT),
}


_PROG_TYPE_SCHED_CLS = 3
_fds: dict[str, int] = {}
_lock = threading.Lock()


def load(name: str) -> int:
    """The fd of guard program ``name`` (loaded at the first call; kept for the process)."""
    with _lock:
        if name not in _fds:
            _fds[name] = prog_load(_PROG_TYPE_SCHED_CLS, PROGRAMS[name], f"cg_{name}",
                                   what=NAME_PREFIX + name)  # fmt: skip
        return _fds[name]


@dataclass(frozen=True)
class Attach:
    """One guard filter: program ``prog`` on ``dev``'s clsact hook ``hook`` (ingress|egress)."""

    dev: str
    hook: str
    prog: str


_RTM_NEWTFILTER = 44
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_REPLACE, _NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
_NLMSG_ERROR = 2
_TCA_KIND, _TCA_OPTIONS = 1, 2
_TCA_BPF_FD, _TCA_BPF_NAME, _TCA_BPF_FLAGS = 6, 7, 8
_NLA_F_NESTED = 0x8000
_PARENT = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
_ETH_P_ALL_BE = 0x0300  # htons(ETH_P_ALL)
_ACK_TIMEOUT_S = 5.0


def _nla(typ: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, typ) + payload + b"\0" * ((4 - n % 4) % 4)


def _request(seq: int, ifindex: int, a: Attach) -> bytes:
    opts = _nla(_TCA_BPF_FD, struct.pack("=I", load(a.prog)))
    opts += _nla(_TCA_BPF_NAME, (NAME_PREFIX + a.prog).encode() + b"\0")
    opts += _nla(_TCA_BPF_FLAGS, struct.pack("=I", 1))  # TCA_BPF_FLAG_ACT_DIRECT
    tcm = struct.pack("=BxHiIII", 0, 0, ifindex, HANDLE, _PARENT[a.hook],
                      (PREF << 16) | _ETH_P_ALL_BE)  # fmt: skip
    body = tcm + _nla(_TCA_KIND, b"bpf\0") + _nla(_TCA_OPTIONS | _NLA_F_NESTED, opts)
    flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_REPLACE
    return struct.pack("=IHHII", 16 + len(body), _RTM_NEWTFILTER, flags, seq, 0) + body


def _socket(netns: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket of ``netns`` (a name under /run/netns; None: ours): a socket
    stays in the namespace it was created in."""

    def make() -> socket.socket:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)

    try:
        return in_netns(netns, make)
    except OSError as e:
        raise BpfError(f"netlink socket in {netns}: {e}") from None


def attach(items: Sequence[Attach], ifindex: dict[str, int], netns: str | None = None) -> None:
    """Create or replace every filter of ``items`` (``ifindex``: device name -> index, in
    ``netns``) on ONE socket: all requests are sent, then every ack is read."""
    if not items:
        return
    sock = _socket(netns)
    try:
        sock.settimeout(_ACK_TIMEOUT_S)  # never block the owner loop on a lost ack
        sock.bind((0, 0))
        by_seq = {}
        for seq, a in enumerate(items, start=1):
            by_seq[seq] = a
            sock.sendall(_request(seq, ifindex[a.dev], a))
        pending, failed = set(by_seq), []
        while pending:
            data = sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                n, typ, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if typ == _NLMSG_ERROR and seq in pending:
                    pending.discard(seq)
                    (code,) = struct.unpack_from("=i", data, off + 16)
                    if code != 0:
                        a = by_seq[seq]
                        failed.append(f"{a.dev} {a.hook} {NAME_PREFIX}{a.prog}: "
                                      f"{os.strerror(-code)}")  # fmt: skip
                off += (n + 3) & ~3
                if n == 0:
                    break
        if failed:
            raise BpfError(f"tc guard attach: {'; '.join(failed)}")
    except OSError as e:
        if e.errno == errno.EINTR:
            raise
        raise BpfError(f"tc guard attach: {e}") from None
    finally:
        sock.close()
