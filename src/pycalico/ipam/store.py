"""IPAM's datastore access: resource shapes and compare-and-swap loops for blocks, handles,
affinities and the IPAM configuration.

Owns the mapping between IPAM values and the v3-shaped resources ``IPAMBlock`` (name = CIDR
with ``.``/``:``/``/`` replaced by ``-``), ``BlockAffinity`` (name ``<node>-<cidr-name>``),
``IPAMHandle`` (name = handle id) and ``IPAMConfiguration`` (``default``).

Invariants: every write is a CAS on ``metadata.resourceVersion`` retried at most
:data:`RETRIES` times (then :class:`TooManyRetries`); a handle's ``block`` map counts, per block
CIDR, the addresses the handle holds there (a handle whose counts reach zero is deleted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycalico.datastore.base import AlreadyExists, Conflict, Datastore, NotFound, prefix_for
from pycalico.ipam.block import Block, IPNetwork, cidr_name
from pycalico.ipam.errors import TooManyRetries
from pycalico.ipam.pools import IPAMConfig, Pool, reservations_from

API_VERSION = "projectcalico.org/v3"
KIND_BLOCK = "IPAMBlock"
KIND_AFFINITY = "BlockAffinity"
KIND_HANDLE = "IPAMHandle"
KIND_CONFIG = "IPAMConfiguration"
KIND_POOL = "IPPool"
KIND_RESERVATION = "IPReservation"
KIND_NODE = "Node"
CONFIG_NAME = "default"
RETRIES = 100

STATE_PENDING = "pending"
STATE_CONFIRMED = "confirmed"
STATE_PENDING_DELETION = "pendingDeletion"


def is_true(value: Any) -> bool:
    """Calico stores some flags as bools and some as ``"true"``/``"false"`` strings."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def affinity_name(node: str, cidr: IPNetwork | str) -> str:
    return f"{node}-{cidr_name(cidr)}"


def _res(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


@dataclass
class StoredBlock:
    """A block plus the revision it was read at (for CAS)."""

    block: Block
    revision: str
    resource: dict[str, Any]


@dataclass(frozen=True)
class Affinity:
    node: str
    cidr: str
    state: str
    revision: str


class IPAMStore:
    """Typed reads and CAS writes of IPAM resources over any :class:`Datastore`."""

    def __init__(self, ds: Datastore, retries: int = RETRIES) -> None:
        self.ds = ds
        self.retries = retries

    # ----- generic CAS loop -----

    def retry(
        self, what: str, fn: Callable[[], Any], also: tuple[type[Exception], ...] = ()
    ) -> Any:
        """Run ``fn`` until it does not raise :class:`Conflict`/:class:`AlreadyExists`."""
        for _ in range(self.retries):
            try:
                return fn()
            except (Conflict, AlreadyExists):
                continue
            except also:
                continue
        raise TooManyRetries(f"{what}: gave up after {self.retries} conflicting writes")

    # ----- read-only inputs -----

    def pools(self) -> list[Pool]:
        return [Pool.from_resource(r) for r in self.ds.list(KIND_POOL).items]

    def reservations(self) -> list[IPNetwork]:
        return reservations_from(self.ds.list(KIND_RESERVATION).items)

    def node_labels(self, node: str) -> dict[str, str] | None:
        """Labels of the Node resource, or None when the node does not exist."""
        try:
            res = self.ds.get(KIND_NODE, node)
        except NotFound:
            return None
        return dict(res.get("metadata", {}).get("labels") or {})

    def node_names(self) -> set[str]:
        return {r["metadata"]["name"] for r in self.ds.list(KIND_NODE).items}

    def config(self) -> IPAMConfig:
        try:
            return IPAMConfig.from_spec(self.ds.get(KIND_CONFIG, CONFIG_NAME).get("spec") or {})
        except NotFound:
            return IPAMConfig()

    def set_config(self, cfg: IPAMConfig) -> None:
        cfg.validate(setting=True)

        def attempt() -> None:
            try:
                cur = self.ds.get(KIND_CONFIG, CONFIG_NAME)
            except NotFound:
                self.ds.create(_res(KIND_CONFIG, CONFIG_NAME, cfg.to_spec()))
                return
            cur["spec"] = {**(cur.get("spec") or {}), **cfg.to_spec()}
            self.ds.update(cur)

        self.retry("set IPAM configuration", attempt)

    # ----- blocks -----

    def get_block(self, cidr: IPNetwork | str) -> StoredBlock | None:
        try:
            res = self.ds.get(KIND_BLOCK, cidr_name(cidr))
        except NotFound:
            return None
        return StoredBlock(Block.from_spec(res["spec"]), res["metadata"]["resourceVersion"], res)

    def blocks(self) -> list[StoredBlock]:
        return [
            StoredBlock(Block.from_spec(r["spec"]), r["metadata"]["resourceVersion"], r)
            for r in self.ds.list(KIND_BLOCK).items
        ]

    def block_names(self) -> set[str]:
        return {r["metadata"]["name"] for r in self.ds.list(KIND_BLOCK).items}

    def create_block(self, block: Block) -> StoredBlock:
        res = self.ds.create(_res(KIND_BLOCK, block.name, block.to_spec()))
        return StoredBlock(block, res["metadata"]["resourceVersion"], res)

    def write_block(self, sb: StoredBlock) -> None:
        """CAS-update (raises Conflict when someone else wrote the block meanwhile)."""
        res = dict(sb.resource)
        res["metadata"] = dict(res["metadata"], resourceVersion=sb.revision)
        res["spec"] = sb.block.to_spec()
        self.ds.update(res)

    def delete_block(self, sb: StoredBlock) -> None:
        self.ds.delete(KIND_BLOCK, sb.block.name, revision=sb.revision)

    # ----- affinities -----

    def affinities(self, node: str | None = None) -> list[Affinity]:
        if node is None:
            items = self.ds.list(KIND_AFFINITY).items
        else:
            items = self.ds.list_prefix(prefix_for(KIND_AFFINITY) + node + "-").items
        out = []
        for r in items:
            spec = r.get("spec") or {}
            if node is not None and spec.get("node") != node:
                continue
            if is_true(spec.get("deleted")):
                continue
            out.append(
                Affinity(
                    node=str(spec.get("node")),
                    cidr=str(spec.get("cidr")),
                    state=str(spec.get("state") or STATE_CONFIRMED),
                    revision=r["metadata"]["resourceVersion"],
                )
            )
        return out

    def create_affinity(self, node: str, cidr: IPNetwork) -> None:
        spec = {
            "state": STATE_PENDING,
            "node": node,
            "cidr": str(cidr),
            "type": "host",
            "deleted": "false",  # a string in Calico's BlockAffinity storage shape
        }
        self.ds.create(_res(KIND_AFFINITY, affinity_name(node, cidr), spec))

    def set_affinity_state(self, node: str, cidr: IPNetwork | str, state: str) -> None:
        def attempt() -> None:
            res = self.ds.get(KIND_AFFINITY, affinity_name(node, cidr))
            if res["spec"].get("state") == state:
                return
            res["spec"]["state"] = state
            self.ds.update(res)

        self.retry(f"set affinity {affinity_name(node, cidr)} {state}", attempt)

    def delete_affinity(self, node: str, cidr: IPNetwork | str) -> None:
        try:
            self.ds.delete(KIND_AFFINITY, affinity_name(node, cidr))
        except NotFound:
            pass

    # ----- handles -----

    def handle_blocks(self, handle_id: str) -> dict[str, int]:
        try:
            res = self.ds.get(KIND_HANDLE, handle_id)
        except NotFound:
            return {}
        return {str(k): int(v) for k, v in ((res.get("spec") or {}).get("block") or {}).items()}

    def handles(self) -> dict[str, dict[str, int]]:
        return {
            r["metadata"]["name"]: {
                str(k): int(v) for k, v in ((r.get("spec") or {}).get("block") or {}).items()
            }
            for r in self.ds.list(KIND_HANDLE).items
        }

    def adjust_handle(self, handle_id: str, cidr: IPNetwork | str, delta: int) -> None:
        """Add ``delta`` (may be negative) to the handle's count for block ``cidr``."""
        key = str(cidr)

        state = {"try_create": delta > 0}

        def attempt() -> None:
            if state["try_create"]:
                # Most handles are new (one per container): try the create first.
                state["try_create"] = False
                spec = {"handleID": handle_id, "block": {key: delta}, "deleted": False}
                self.ds.create(_res(KIND_HANDLE, handle_id, spec))
                return
            try:
                res = self.ds.get(KIND_HANDLE, handle_id)
            except NotFound:
                state["try_create"] = delta > 0
                if delta <= 0:
                    return
                raise Conflict(f"handle {handle_id} vanished; retry") from None
            blocks = dict((res.get("spec") or {}).get("block") or {})
            n = int(blocks.get(key, 0)) + delta
            if n > 0:
                blocks[key] = n
            else:
                blocks.pop(key, None)
            if not blocks:
                self.ds.delete(KIND_HANDLE, handle_id, revision=res["metadata"]["resourceVersion"])
                return
            res["spec"] = {**res.get("spec", {}), "handleID": handle_id, "block": blocks}
            self.ds.update(res)

        if delta:
            self.retry(f"update handle {handle_id}", attempt, also=(NotFound,))

    def delete_handle(self, handle_id: str) -> None:
        try:
            self.ds.delete(KIND_HANDLE, handle_id)
        except NotFound:
            pass
