"""The BTF reader (system/btf.py) on hand-built blobs - a member found through anonymous
unions and structs, typedef/const modifiers, bitfield offsets (kind_flag), clear errors for
a bad blob or a missing struct/member - and, where the kernel publishes its BTF, on the real
``struct sk_buff`` (the local-delivery guard's bytecode depends on it); plus that guard's
bytecode shape (system/nfbpf.py)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from pycalico.system import btf, nfbpf, tcbpf


class Blob:
    """Builds a BTF blob: ``add`` returns the new type's id."""

    def __init__(self) -> None:
        self.types: list[bytes] = []
        self.strs = b"\0"

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strs)
        self.strs += name.encode() + b"\0"
        return off

    def add(self, kind: int, name: str, ref: int, extra: bytes = b"", vlen: int = 0,
            kflag: bool = False) -> int:  # fmt: skip
        info = (kind << 24) | vlen | (1 << 31 if kflag else 0)
        self.types.append(struct.pack("<III", self.s(name), info, ref) + extra)
        return len(self.types)

    def struct(self, kind: int, name: str, size: int, members: list[tuple[str, int, int]],
               kflag: bool = False) -> int:  # fmt: skip
        extra = b"".join(struct.pack("<III", self.s(m), t, off) for m, t, off in members)
        return self.add(kind, name, size, extra, len(members), kflag)

    def bytes(self) -> bytes:
        types = b"".join(self.types)
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strs))
        return hdr + types + self.strs


def _sample() -> Blob:
    b = Blob()
    u32 = b.add(1, "u32", 4, struct.pack("<I", 32))  # INT
    b.add(3, "", 0, struct.pack("<III", u32, u32, 4))  # an ARRAY record (12 extra bytes)
    b.add(6, "e", 4, struct.pack("<ii", 0, 1), vlen=1)  # an ENUM record (8 per entry)
    td = b.add(8, "__u32", u32)  # typedef
    cu = b.add(10, "", td)  # const __u32
    inner = b.struct(4, "", 8, [("queue", u32, 0), ("priority", cu, 32)])  # anonymous struct
    union = b.struct(5, "", 4, [("mark", td, 0), ("reserved_tailroom", u32, 0)])
    cunion = b.add(10, "", union)  # const of the anonymous union
    bits = b.struct(4, "flags", 4, [("a", u32, (3 << 24) | 0), ("b", u32, (5 << 24) | 3)],
                    kflag=True)  # fmt: skip
    b.add(7, "sk_buff", 0)  # a forward declaration of the same name comes first
    b.struct(4, "sk_buff", 64, [("next", u32, 0), ("", inner, 64), ("", cunion, 160),
                                ("f", bits, 192), ("len", u32, 224)])  # fmt: skip
    return b


def test_members_are_found_through_anonymous_members_and_modifiers(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(_sample().bytes())
    p = str(path)
    assert btf.member_offset("sk_buff", "next", p) == 0
    assert btf.member_offset("sk_buff", "queue", p) == 8
    assert btf.member_offset("sk_buff", "priority", p) == 12
    assert btf.member_offset("sk_buff", "mark", p) == 20
    assert btf.member_offset("sk_buff", "reserved_tailroom", p) == 20
    assert btf.member_offset("sk_buff", "len", p) == 28
    assert btf.member_offset("flags", "a", p) == 0  # bitfield offsets: low 24 bits
    assert btf.member_offset("flags", "b", p) == 0


@pytest.mark.parametrize(
    ("blob", "struct_name", "member", "error"),
    [
        (b"\0" * 8, "sk_buff", "mark", "too short"),
        (b"\x00\x00" + b"\0" * 30, "sk_buff", "mark", "bad magic"),
        (None, "sk_buf", "mark", "no struct sk_buf"),
        (None, "sk_buff", "marks", "has no member marks"),
        (None, "sk_buff", "f", None),
    ],
)
def test_a_bad_blob_or_a_missing_name_is_a_clear_error(
    tmp_path: Path, blob: bytes | None, struct_name: str, member: str, error: str | None
) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(blob if blob is not None else _sample().bytes())
    if error is None:
        assert btf.member_offset(struct_name, member, str(path)) == 24
        return
    with pytest.raises(btf.BtfError, match=error):
        btf.member_offset(struct_name, member, str(path))


def test_a_truncated_blob_and_a_missing_file_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(_sample().bytes()[:-10])
    with pytest.raises(btf.BtfError, match="beyond the end"):
        btf.member_offset("sk_buff", "mark", str(path))
    with pytest.raises(btf.BtfError, match="No such file"):
        btf.member_offset("sk_buff", "mark", str(tmp_path / "none"))


@pytest.mark.skipif(not os.path.exists(btf.VMLINUX), reason="the kernel publishes no BTF")
def test_the_running_kernels_sk_buff_mark() -> None:
    off = btf.member_offset("sk_buff", "mark")
    assert off % 4 == 0 and 100 < off < 400  # a u32 in the middle of sk_buff
    assert btf.member_offset("sk_buff", "reserved_tailroom") == off  # its union twin


def test_the_local_delivery_program_drops_only_unseen_workload_packets() -> None:
    code = nfbpf.program(164, 24)
    assert len(code) % 8 == 0 and code[-8] == 0x95
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    assert insns[2] == (0x79, 0x23, 24, 0)  # r3 = *(u64 *)(r2 + 24): skb->sk
    assert insns[4] == (0x61, 0x23, 164, 0)  # r3 = *(u32 *)(r2 + 164): skb->mark
    assert insns[5][3] == tcbpf.MARK_FROM_WL | tcbpf.MARK_SEEN
    assert insns[6][3] == tcbpf.MARK_FROM_WL
    # The verdicts: accept by default (r0 = 1), drop only on the masked value FROM_WL alone;
    # every jump lands on the exit.
    assert (insns[1][0], insns[1][3]) == (0xB7, 1) and (insns[7][0], insns[7][3]) == (0xB7, 0)
    assert 3 + 1 + insns[3][2] == len(insns) - 1 and 6 + 1 + insns[6][2] == len(insns) - 1
    assert nfbpf.PRIORITY > 10  # after the calico (0) and calico-guard (10) tables
