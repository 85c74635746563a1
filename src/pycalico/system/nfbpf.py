"""The local-delivery guard: a netfilter BPF program on the ``input`` hook, outside nftables.

The tc guard (:mod:`pycalico.system.tcbpf`) fails closed for FORWARDED workload traffic when
``nft flush ruleset`` removes every table, but a packet a workload sends to the node itself
is delivered locally and never reaches a tc egress hook. This program closes that window:
attached with a BPF link (``BPF_PROG_TYPE_NETFILTER``, kernel 6.4+) to ``NF_INET_LOCAL_IN``
at priority :data:`PRIORITY` - after the ``calico`` table's filter chains (0) and the
``calico-guard`` table (10) - it drops a packet that carries
:data:`~pycalico.system.tcbpf.MARK_FROM_WL` (set by the tc guard on the workload
interface's ingress) but not :data:`~pycalico.system.tcbpf.MARK_SEEN` (set by the first rule
of the ``calico`` table's filter base chains): a workload's packet to the host that no
Calico rule evaluated. Everything else is accepted (the host's own traffic, traffic from
other interfaces, and everything while the tc guard is not installed). A packet of an
established local socket - one that early demux matched to a connected TCP or UDP socket
of the host, ``skb->sk`` set - is accepted too: the host's own connections to workloads
(health checks, API calls) and the workloads' connections to the host that policy allowed
when they started keep going while the tables are gone; anything else from a workload to
the host (a new connection, a datagram to an unconnected socket, ICMP) drops until Felix
has put the tables back.

The program reads ``skb->sk`` and ``skb->mark`` through the context's ``struct sk_buff``
pointer, so its bytecode carries those fields' offsets in the running kernel, read from the
kernel's BTF (:mod:`pycalico.system.btf`).

Owns: the bytecode (:func:`program`) and :class:`LocalInGuard`, the links of one network
namespace (IPv4, and IPv6 when wanted).

Invariants: a link lives as long as its fd, which only this process holds (bpf fds are
close-on-exec): the guard is gone when the agent exits, and the next agent attaches its
own (two agents overlapping attach two identical, harmless hooks); ``nft`` cannot remove
it. A kernel without netfilter BPF links or BTF raises
:class:`~pycalico.system.bpfsys.BpfUnsupported`.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
import weakref

from pycalico.system.bpfsys import BpfUnsupported, in_netns, insn, link_create, prog_load
from pycalico.system.btf import BtfError, member_offsets
from pycalico.system.tcbpf import MARK_FROM_WL, MARK_SEEN

#: After the ``calico`` table's filter chains (0) and the ``calico-guard`` table (10).
PRIORITY = 20
PROG_NAME = "cg_local_in"
_PROG_TYPE_NETFILTER = 32
_ATTACH_NETFILTER = 45
_NFPROTO = {4: 2, 6: 10}
_NF_INET_LOCAL_IN = 1
_NF_DROP, _NF_ACCEPT = 0, 1
_CTX_SKB = 8  # offsetof(struct bpf_nf_ctx, skb)


def program(mark_offset: int, sk_offset: int) -> bytes:
    """The guard's bytecode for a kernel whose ``sk_buff.mark`` is at ``mark_offset`` and
    ``sk_buff.sk`` at ``sk_offset``: ``NF_ACCEPT`` for a packet of an established local
    socket (early demux found it), else ``NF_DROP`` when ``mark & (FROM_WL|SEEN) ==
    FROM_WL``, else ``NF_ACCEPT``."""
    return (
        insn(0x79, 2, 1, _CTX_SKB)  # r2 = ctx->skb
        + insn(0xB7, 0, imm=_NF_ACCEPT)
        + insn(0x79, 3, 2, sk_offset)  # r3 = skb->sk
        + insn(0x55, 3, off=4, imm=0)  # a local socket's established flow: accept
        + insn(0x61, 3, 2, mark_offset)  # r3 = skb->mark
        + insn(0x57, 3, imm=MARK_FROM_WL | MARK_SEEN)  # r3 &= FROM_WL | SEEN
        + insn(0x55, 3, off=1, imm=MARK_FROM_WL)  # not (from a workload, unseen): accept
        + insn(0xB7, 0, imm=_NF_DROP)
        + insn(0x95)
    )


_prog_fd: int | None = None
_prog_lock = threading.Lock()


def _load() -> int:
    """The program's fd (loaded at the first call; kept for the process)."""
    global _prog_fd
    with _prog_lock:
        if _prog_fd is None:
            try:
                mark, sk = member_offsets("sk_buff", ("mark", "sk"))
                code = program(mark, sk)
            except BtfError as e:
                raise BpfUnsupported(f"local-in guard: {e}") from None
            _prog_fd = prog_load(_PROG_TYPE_NETFILTER, code, PROG_NAME,
                                 attach_type=_ATTACH_NETFILTER)  # fmt: skip
        return _prog_fd


def _close_all(links: dict[int, int]) -> None:
    while links:
        os.close(links.popitem()[1])


class LocalInGuard:
    """The guard's links in one network namespace (``netns``: a name under /run/netns;
    None: this process's). Not thread-safe: one owner (Felix's owner loop) calls it."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.links: dict[int, int] = {}  # IP version -> link fd
        # Detached when this object goes away too (a test's seam, an agent's shutdown).
        weakref.finalize(self, _close_all, self.links)

    def ensure(self, versions: frozenset[int]) -> bool:
        """Attach the guard for every IP version of ``versions`` not attached yet and detach
        it from the others; True when anything changed."""
        changed = False
        for v in sorted(set(self.links) - versions):
            os.close(self.links.pop(v))
            changed = True
        for v in sorted(versions - set(self.links)):
            prog = _load()
            extra = struct.pack("<IIiI", _NFPROTO[v], _NF_INET_LOCAL_IN, PRIORITY, 0)
            what = f"{PROG_NAME} (IPv{v} input, priority {PRIORITY})"
            self.links[v] = in_netns(
                self.netns, functools.partial(link_create, prog, _ATTACH_NETFILTER, what, extra)
            )
            changed = True
        return changed

    def close(self) -> None:
        """Detach every link of this guard."""
        self.ensure(frozenset())
