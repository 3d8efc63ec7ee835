"""The shared cache backend: entries in Redis, seen by every worker at once.

Keys, for ``prefix`` P, tenant T (percent-encoded: only ``[A-Za-z0-9_.~%-]`` remain, so the
braces delimit it and a SCAN pattern matches it literally) and partition hash H (sha1 of the
partition, fixed length)::

    P{T}:e:<entry id>        hash: the entry's fields; expires with the entry (PEXPIREAT)
    P{T}:x:H:<exact key>     the id of the entry stored under that key; expires with it
    P{T}:s:H                 stream: one record (id) per put, trimmed to max_entries (exact MAXLEN)
    P{T}:m:H                 the last stream id trimmed away
    P{T}:c                   hash: the tenant's counters (HINCRBYFLOAT)

A put is one Lua script: it removes the entry its exact key held, writes the hash and key, appends
to the stream and, past ``max_entries``, trims the oldest records and deletes their entries; the
stream and mark live as long as the partition's newest entry. Redis alone has no fast vector
search here (7.0: no RediSearch, no vector sets), so each worker keeps an in-process
``VectorIndex`` per partition, kept in step through the stream: every semantic lookup first reads
the records after the last one it saw, with their vectors (one script call; an empty reply when
nothing changed). Records the worker saw and that were trimmed since leave its index; a worker
that fell behind the trimmed start (it missed records) reloads the partition from the stream.
The candidates the index proposes are read back (one script call for all) before they are
returned: an entry whose hash is gone (expired, evicted, deleted) leaves the local index instead.

Redis being down raises ``RedisUnavailable`` (the stage then runs without the cache).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import quote, unquote

import numpy as np

from stanchion.cache.codec import (
    LocalIndexes,
    PartitionIndex,
    check_entry,
    check_tenant,
    decode_dependencies,
    decode_response,
    decode_vector,
    encode_dependencies,
    encode_response,
    encode_vector,
    nearest_live,
)
from stanchion.cache.entry import CacheEntry, CacheStats, Candidate, Vector
from stanchion.cache.vector_index import DEFAULT_DEPTH
from stanchion.errors import RedisError
from stanchion.redis_client import RedisClient, RespValue

__all__ = ["RedisCacheBackend"]

_FIELDS = ("i", "t", "p", "k", "q", "r", "c", "x", "v", "d", "n", "u")  # id ... cost, as _entry reads them
_CATCH_UP_BATCH = 500  # records per catch-up call: ~10 ms of Redis, which serves no one meanwhile
_SCAN_COUNT = 1000

_DROP = """
local function drop(base, eid, sid)
  local key = base .. 'e:' .. eid
  local f = redis.call('HMGET', key, 'k', 's', 'h')
  if not f[2] then return 0 end
  if sid and f[2] ~= sid then return 0 end
  local exact = base .. 'x:' .. f[3] .. ':' .. f[1]
  if redis.call('GET', exact) == eid then redis.call('DEL', exact) end
  if not sid then redis.call('XDEL', base .. 's:' .. f[3], f[2]) end
  return redis.call('DEL', key)
end
"""

# KEYS: entry, exact key, stream, mark. ARGV: base, id, expires (ms), max_entries, H, field/value...
_PUT = (
    _DROP
    + """
local base, id, expires, max_entries = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local old = redis.call('GET', KEYS[2])
if old then drop(base, old) end
drop(base, id)
local t = redis.call('TIME')
if expires <= tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then return 0 end
local sid = redis.call('XADD', KEYS[3], '*', 'id', id)
redis.call('HSET', KEYS[1], 's', sid, 'h', ARGV[5], unpack(ARGV, 6))
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('SET', KEYS[2], id, 'PXAT', expires)
local until_ms = redis.call('PEXPIRETIME', KEYS[3])
if until_ms < expires then
  until_ms = expires
  redis.call('PEXPIREAT', KEYS[3], expires)
end
local excess = redis.call('XLEN', KEYS[3]) - max_entries
if excess > 0 then
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', excess)
  for _, record in ipairs(oldest) do drop(base, record[2][2], record[1]) end
  redis.call('XTRIM', KEYS[3], 'MAXLEN', max_entries)
  redis.call('SET', KEYS[4], oldest[#oldest][1], 'PXAT', until_ms)
elseif redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('PEXPIREAT', KEYS[4], until_ms)
end
return 1
"""
)

# KEYS: stream, mark. ARGV: base, the last record seen ('0-0': none), how many.
# Reply: {reload (0/1), mark or '', record ids joined by ',', entry ids as "<length>:<id>" one after
# another, vector lengths in bytes joined by ',' (0: none, or the record is stale), the vectors
# concatenated, expiries (epoch seconds) joined by ','}. Six values whatever the batch size: a large reply is a few bulk strings, which
# the client reads in one pass, not thousands of small ones.
_CATCH_UP = """
local function newer(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local after, reload = ARGV[2], 0
local mark = redis.call('GET', KEYS[2])
if mark and after ~= '0-0' and newer(mark, after) then
  reload, after = 1, '0-0'
end
local start = '-'
if after ~= '0-0' then start = '(' .. after end
local sids, ids, lengths, vectors, expiries = {}, {}, {}, {}, {}
for _, record in ipairs(redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', tonumber(ARGV[3]))) do
  local eid = record[2][2]
  local f = redis.call('HMGET', ARGV[1] .. 'e:' .. eid, 's', 'v', 'x')
  sids[#sids + 1] = record[1]
  ids[#ids + 1] = string.len(eid) .. ':' .. eid
  if f[1] == record[1] and f[2] then
    lengths[#lengths + 1] = string.len(f[2])
    vectors[#vectors + 1] = f[2]
    expiries[#expiries + 1] = f[3]
  else
    lengths[#lengths + 1] = 0
    expiries[#expiries + 1] = '0'
  end
end
return {reload, mark or '', table.concat(sids, ','), table.concat(ids), table.concat(lengths, ','),
        table.concat(vectors), table.concat(expiries, ',')}
"""

# KEYS: entry hashes. Reply: each one's fields (nils when it is gone).
_FETCH = (
    "local out = {}\nfor i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, "
    + ", ".join(f"'{f}'" for f in _FIELDS)
    + ") end\nreturn out\n"
)

# KEYS: exact key. ARGV: base. Reply: the fields of the entry it names, or nil.
_GET_EXACT = (
    "local id = redis.call('GET', KEYS[1])\nif not id then return false end\n"
    "return redis.call('HMGET', ARGV[1] .. 'e:' .. id, " + ", ".join(f"'{f}'" for f in _FIELDS) + ")\n"
)

# ARGV: base, ids. Reply: how many existed.
_DELETE = (
    _DROP
    + """
local n = 0
for i = 2, #ARGV do n = n + drop(ARGV[1], ARGV[i]) end
return n
"""
)

# KEYS: counters. ARGV: name, amount, name, amount, ...
_COUNT = """
for i = 1, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


class RedisCacheBackend:
    """Cache entries in the Redis at ``url`` under keys starting with ``prefix``.

    ``timeout_s`` bounds each Redis call (``RedisUnavailable`` past it); ``depth`` is the number of
    candidates each semantic lookup rescores (``VectorIndex``). One connection per backend, made
    on first use (``stanchion/redis_client.py``)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "stanchion:cache:",
        timeout_s: float = 2.0,
        depth: int = DEFAULT_DEPTH,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"a cache key prefix may not hold braces (they delimit the tenant): {prefix!r}")
        self.prefix = prefix
        self._redis = RedisClient(url, timeout_s=timeout_s)
        self.indexes = LocalIndexes(depth)
        self._shas: dict[str, str] = {}

    # --- the protocol ---------------------------------------------------------------------------

    async def get_exact(self, tenant: str, partition: str, exact_key: str) -> CacheEntry | None:
        base = self._base(tenant)
        reply = await self._script(_GET_EXACT, [f"{base}x:{_hash(partition)}:{exact_key}"], [base])
        return _entry(reply) if isinstance(reply, list) else None

    async def nearest(self, tenant: str, partition: str, vector: Vector, k: int) -> list[Candidate]:
        base = self._base(tenant)
        index = await self._caught_up(tenant, partition)

        async def fetch(ids: list[str]) -> dict[str, CacheEntry]:
            reply = await self._script(_FETCH, [f"{base}e:{i}" for i in ids], [])
            found = [_entry(fields) for fields in reply] if isinstance(reply, list) else []
            return {e.id: e for e in found if e is not None and e.partition == partition}

        return await nearest_live(index, vector, k, fetch)

    async def put(self, entry: CacheEntry, *, max_entries: int) -> None:
        check_entry(entry, max_entries)
        base, h = self._base(entry.tenant), _hash(entry.partition)
        fields: list[str | bytes | int | float] = [
            "i", entry.id,
            "t", entry.tenant,
            "p", entry.partition,
            "k", entry.exact_key,
            "q", entry.question,
            "r", encode_response(entry.response),
            "c", repr(float(entry.created)),
            "x", repr(float(entry.expires)),
            "v", encode_vector(entry.vector),
            "d", encode_dependencies(entry.dependencies),
            "n", int(entry.tokens),
            "u", repr(float(entry.cost_usd)),
        ]  # fmt: skip
        keys = [f"{base}e:{entry.id}", f"{base}x:{h}:{entry.exact_key}", f"{base}s:{h}", f"{base}m:{h}"]
        expires_ms = math.floor(float(entry.expires) * 1000)
        await self._script(_PUT, keys, [base, entry.id, expires_ms, max_entries, h, *fields])

    async def delete(self, tenant: str, ids: Sequence[str]) -> int:
        base = self._base(tenant)
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        reply = await self._script(_DELETE, [], [base, *ids])
        self.indexes.remove(tenant, ids)
        return int(reply) if isinstance(reply, int) else 0

    async def clear(self, tenant: str | None = None) -> int:
        pattern = _glob(self.prefix) + ("{" + _tenant_key(tenant) + "}:*" if tenant is not None else "{*")
        removed = 0
        async for keys in self._scan(pattern):
            removed += sum(1 for key in keys if self._parse(key)[1].startswith("e:"))
            await self._redis.call("UNLINK", *keys)
        self.indexes.drop(tenant)
        return removed

    async def count(self, tenant: str, counters: Mapping[str, float]) -> None:
        base = self._base(tenant)
        args: list[str | bytes | int | float] = []
        for name, value in counters.items():
            if value:
                args += [name, repr(float(value))]
        if args:
            await self._script(_COUNT, [f"{base}c"], args)

    async def stats(self, tenant: str | None = None) -> CacheStats:
        glob_prefix = _glob(self.prefix)
        tenant_glob = "{" + _tenant_key(tenant) + "}" if tenant is not None else "{*}"
        entries: dict[str, int] = {tenant: 0} if tenant is not None else {}
        async for keys in self._scan(f"{glob_prefix}{tenant_glob}:e:*"):
            for key in keys:
                owner, rest = self._parse(key)
                if rest.startswith("e:"):
                    entries[owner] = entries.get(owner, 0) + 1
        counters: dict[str, dict[str, float]] = {}
        async for keys in self._scan(f"{glob_prefix}{tenant_glob}:c"):
            for key in keys:
                owner, rest = self._parse(key)
                if rest == "c":
                    reply = await self._redis.call("HGETALL", key)
                    pairs = reply if isinstance(reply, list) else []
                    counters[owner] = {
                        _text(pairs[i]): float(_text(pairs[i + 1])) for i in range(0, len(pairs) - 1, 2)
                    }
        return CacheStats(entries=entries, counters=counters)

    async def ping(self) -> None:
        await self._redis.call("PING")

    def close(self) -> None:
        self._redis.close()

    # --- keeping the local index in step -----------------------------------------------------

    async def _caught_up(self, tenant: str, partition: str) -> PartitionIndex:
        """This partition's local index, after reading the stream records it has not seen and
        dropping the entries trimmed or expired since."""
        base, h = self._base(tenant), _hash(partition)
        while True:
            index = self.indexes.get(tenant, partition)
            before = index.position
            reply = await self._script(
                _CATCH_UP, [f"{base}s:{h}", f"{base}m:{h}"], [base, before or "0-0", _CATCH_UP_BATCH]
            )
            if self.indexes.get(tenant, partition) is not index or index.position != before:
                continue  # another lookup of this worker moved it on meanwhile: read from there
            if not isinstance(reply, list) or len(reply) != 7:
                raise RedisError(f"unexpected reply to the cache's catch-up script: {reply!r:.200}")
            if reply[0] == 1:  # records it never saw were trimmed: start again from the stream
                index = self.indexes.reset(tenant, partition)
            records = _records(reply[2:])
            index.extend(records)
            if records:
                index.position = _text(reply[2]).rpartition(",")[2]
            if len(records) == _CATCH_UP_BATCH:
                continue
            mark = _text(reply[1])
            index.forget(through=_sid(mark) if mark else None, now=time.time())
            return index

    # --- Redis ----------------------------------------------------------------------------------

    async def _script(
        self, script: str, keys: Sequence[str], args: Sequence[str | bytes | int | float]
    ) -> RespValue:
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()
        try:
            return await self._redis.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self._redis.call("SCRIPT", "LOAD", script)  # a restarted or flushed Redis forgot it
        return await self._redis.call("EVALSHA", sha, len(keys), *keys, *args)

    async def _scan(self, pattern: str) -> AsyncIterator[list[str]]:
        cursor = "0"
        while True:
            reply = await self._redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT)
            if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], list):
                raise RedisError(f"unexpected reply to SCAN: {reply!r}")
            keys = [_text(key) for key in reply[1]]
            if keys:
                yield keys
            cursor = _text(reply[0])
            if cursor == "0":
                return

    def _parse(self, key: str) -> tuple[str, str]:
        """(tenant, the rest) of one of this backend's keys."""
        inner = key[len(self.prefix) + 1 :]
        tenant, _, rest = inner.partition("}:")
        return unquote(tenant), rest

    def _base(self, tenant: str) -> str:
        return f"{self.prefix}{{{_tenant_key(tenant)}}}:"


def _tenant_key(tenant: str) -> str:
    """The tenant as it stands in keys: percent-encoded, one-to-one, no braces or glob characters."""
    return quote(check_tenant(tenant), safe="")


def _hash(partition: str) -> str:
    return hashlib.sha1(partition.encode()).hexdigest()


def _glob(text: str) -> str:
    """``text`` matched literally by a Redis glob."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(value: RespValue) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if value is None:
        return ""
    return str(value)


def _records(parts: Sequence[RespValue]) -> list[tuple[tuple[int, int], str, float, Vector | None]]:
    """The catch-up script's records: (stream id, entry id, expiry, vector or None)."""
    sids = [s for s in _text(parts[0]).split(",") if s]
    ids = _netstrings(parts[1] if isinstance(parts[1], bytes) else b"")
    lengths = [int(n) for n in _text(parts[2]).split(",") if n]
    blob = parts[3] if isinstance(parts[3], bytes) else b""
    expiries = [float(x) for x in _text(parts[4]).split(",") if x]
    if not len(sids) == len(ids) == len(lengths) == len(expiries):
        raise RedisError("the cache's catch-up script gave records, ids and vectors that do not match")
    out: list[tuple[tuple[int, int], str, float, Vector | None]] = []
    offset = 0
    for sid, entry_id, length, expires in zip(sids, ids, lengths, expiries, strict=True):
        vector = None
        if length:
            vector = np.frombuffer(blob, dtype="<f4", count=length // 4, offset=offset).astype(np.float32)
            offset += length
        out.append((_sid(sid), entry_id, expires, vector))
    return out


def _netstrings(data: bytes) -> list[str]:
    """``b"3:abc2:de"`` -> ``["abc", "de"]``."""
    out: list[str] = []
    at = 0
    while at < len(data):
        colon = data.index(b":", at)
        size = int(data[at:colon])
        out.append(data[colon + 1 : colon + 1 + size].decode())
        at = colon + 1 + size
    return out


def _sid(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _entry(fields: RespValue) -> CacheEntry | None:
    if not isinstance(fields, list) or len(fields) != len(_FIELDS) or fields[0] is None:
        return None
    values = [v if isinstance(v, bytes) else b"" for v in fields]
    (
        entry_id,
        tenant,
        partition,
        exact_key,
        question,
        response,
        created,
        expires,
        vector,
        deps,
        tokens,
        cost,
    ) = values
    if float(expires) <= time.time():
        return None  # Redis expires it within the millisecond; never serve it meanwhile
    return CacheEntry(
        id=entry_id.decode(),
        tenant=tenant.decode(),
        partition=partition.decode(),
        exact_key=exact_key.decode(),
        question=question.decode(),
        response=decode_response(response),
        created=float(created),
        expires=float(expires),
        vector=decode_vector(vector),
        dependencies=decode_dependencies(deps),
        tokens=int(tokens),
        cost_usd=float(cost),
    )
