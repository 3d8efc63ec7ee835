"""What both cache backends share: checking an entry before it is stored, its fields as bytes and
back, and the local vector indexes a worker keeps per (tenant, partition)."""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stanchion.cache.entry import CacheEntry, Candidate, Dependency, Vector
from stanchion.cache.vector_index import DEFAULT_DEPTH, VectorIndex

__all__ = [
    "TENANT_PATTERN",
    "LocalIndexes",
    "PartitionIndex",
    "check_entry",
    "check_tenant",
    "decode_dependencies",
    "decode_response",
    "decode_vector",
    "encode_dependencies",
    "encode_response",
    "encode_vector",
    "nearest_live",
]


# A plain tenant name. The backends take any non-empty name (Redis percent-encodes it in its keys,
# so no name can forge another's); this names the common case for callers that want it.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not tenant or len(tenant) > 256:
        raise ValueError(f"a cache tenant is a name of 1-256 characters, not {tenant!r}")
    return tenant


def check_entry(entry: CacheEntry, max_entries: int) -> None:
    """Refuse an entry no backend could store faithfully, naming what is wrong."""
    check_tenant(entry.tenant)
    if not entry.id:
        raise ValueError("a cache entry needs an id")
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ValueError(f"max_entries must be a positive integer, not {max_entries!r}")
    for name in ("created", "expires", "cost_usd"):
        if not math.isfinite(float(getattr(entry, name))):
            raise ValueError(f"cache entry {entry.id}: {name} must be a finite number")
    if entry.vector is not None:
        v = np.asarray(entry.vector)
        if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)) or not np.any(v):
            raise ValueError(f"cache entry {entry.id}: the vector must be one non-zero row of finite numbers")


def encode_vector(vector: Vector | None) -> bytes:
    """float32, little-endian; b"" for no vector."""
    if vector is None:
        return b""
    return np.asarray(vector, dtype="<f4").reshape(-1).tobytes()


def decode_vector(data: bytes | None) -> Vector | None:
    if not data:
        return None
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def encode_response(response: Mapping[str, Any]) -> str:
    return json.dumps(response, ensure_ascii=False, separators=(",", ":"))


def decode_response(data: str | bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(data)
    return value


def encode_dependencies(dependencies: Sequence[Dependency]) -> str:
    return json.dumps([[d.chunk_id, d.hash] for d in dependencies], ensure_ascii=False, separators=(",", ":"))


def decode_dependencies(data: str | bytes) -> tuple[Dependency, ...]:
    return tuple(Dependency(chunk_id, hash_) for chunk_id, hash_ in json.loads(data))


@dataclass
class PartitionIndex:
    """One partition's vectors as this worker knows them, one index per dimension (a partition
    whose embedding model changed holds two); how far it has read the partition's log
    (``position``: a SQLite seq, a Redis stream id); and the entries it holds in log order (``log``:
    position key, id, expiry), so that those evicted or expired since leave it from the front
    without waiting to turn up as candidates (a long-running worker's memory stays bounded)."""

    depth: int = DEFAULT_DEPTH
    position: Any = None
    by_dim: dict[int, VectorIndex] = field(default_factory=dict)
    log: deque[tuple[Any, str, float]] = field(default_factory=deque)
    latest: dict[str, Any] = field(default_factory=dict)  # id -> the position key of its newest record

    def extend(self, records: Sequence[tuple[Any, str, float, Vector | None]]) -> None:
        """Records read from the partition's log, in order: (position key, id, expiry, vector or
        None: no vector, or the record is stale). An id seen again keeps only its newest vector."""
        newest: dict[str, tuple[Any, float, Vector]] = {}
        for key, entry_id, expires, vector in records:
            newest.pop(entry_id, None)
            if vector is not None:
                newest[entry_id] = (key, expires, vector)
        self.remove(entry_id for _, entry_id, _, _ in records)
        groups: dict[int, tuple[list[str], list[Vector]]] = {}
        for entry_id, (key, expires, vector) in newest.items():
            group = groups.setdefault(int(vector.shape[0]), ([], []))
            group[0].append(entry_id)
            group[1].append(vector)
            self.log.append((key, entry_id, expires))
            self.latest[entry_id] = key
        for dim, (group_ids, group_vectors) in groups.items():
            if dim not in self.by_dim:
                self.by_dim[dim] = VectorIndex(dim, depth=self.depth)
            self.by_dim[dim].add(group_ids, np.stack(group_vectors))

    def forget(self, *, through: Any, now: float) -> None:
        """Drop, from the front of the log, the entries at or before ``through`` (trimmed or
        evicted; None: none) and those expired by ``now``, up to the first that is neither."""
        gone: list[str] = []
        while self.log:
            key, entry_id, expires = self.log[0]
            if not ((through is not None and key <= through) or expires <= now):
                break
            self.log.popleft()
            if self.latest.get(entry_id) == key:
                del self.latest[entry_id]
                gone.append(entry_id)
        if gone:
            self.remove(gone)

    def remove(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for index in self.by_dim.values():
            index.remove(ids)

    def __len__(self) -> int:
        return sum(len(index) for index in self.by_dim.values())

    @property
    def nbytes(self) -> int:
        return sum(index.nbytes for index in self.by_dim.values())


MAX_PARTITIONS = 1024  # partition indexes a worker keeps; the least recently used go first


class LocalIndexes:
    """Every partition index of one worker, by (tenant, partition), most recently used last.

    Every conversation is a partition of its own (its earlier turns are in the key), so a worker
    looks up far more partitions than hold anything. When it opens a new one it forgets those it
    found empty, and past ``MAX_PARTITIONS`` the least recently used: a forgotten partition is
    read again from the store when next looked up, so nothing is lost but that read."""

    def __init__(self, depth: int = DEFAULT_DEPTH, *, max_partitions: int = MAX_PARTITIONS) -> None:
        self.depth = depth
        self.max_partitions = max_partitions
        self._partitions: OrderedDict[tuple[str, str], PartitionIndex] = OrderedDict()

    def get(self, tenant: str, partition: str) -> PartitionIndex:
        key = (tenant, partition)
        found = self._partitions.get(key)
        if found is not None:
            self._partitions.move_to_end(key)
            return found
        for stale in [k for k, index in self._partitions.items() if not index.log]:
            del self._partitions[stale]
        while len(self._partitions) >= self.max_partitions:
            self._partitions.popitem(last=False)
        found = self._partitions[key] = PartitionIndex(self.depth)
        return found

    def reset(self, tenant: str, partition: str) -> PartitionIndex:
        self._partitions[(tenant, partition)] = fresh = PartitionIndex(self.depth)
        return fresh

    def remove(self, tenant: str, ids: Sequence[str]) -> None:
        for (owner, _), index in self._partitions.items():
            if owner == tenant:
                index.remove(ids)

    def drop(self, tenant: str | None) -> None:
        if tenant is None:
            self._partitions.clear()
        else:
            for key in [key for key in self._partitions if key[0] == tenant]:
                del self._partitions[key]

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self._partitions.values())


async def nearest_live(
    index: PartitionIndex,
    vector: Vector,
    k: int,
    fetch: Callable[[list[str]], Awaitable[dict[str, CacheEntry]]],
) -> list[Candidate]:
    """The ``k`` nearest of ``index`` that ``fetch`` still finds live (by id); those it does not
    find (expired, evicted, deleted by another worker) leave the index, and the search is
    repeated until ``k`` live ones are found or the index runs out."""
    q = np.asarray(vector, dtype=np.float32).reshape(-1)
    local = index.by_dim.get(int(q.shape[0]))
    if local is None or k < 1:
        return []
    while True:
        hits = local.search(q, k)
        if not hits:
            return []
        entries = await fetch([entry_id for entry_id, _ in hits])
        gone = [entry_id for entry_id, _ in hits if entry_id not in entries]
        if not gone:
            return [Candidate(entries[entry_id], score) for entry_id, score in hits if entry_id in entries]
        index.remove(gone)
