"""The vault store shared by workers: each vault is one Redis hash under ``prefix + VaultScope.key``,
with Redis' own expiry (``ttl``, refreshed whenever the vault is handed out or saved).

Fields of the hash (values are UTF-8, lone surrogates kept)::

    style, secret, scope        written once, by whoever creates the vault (HSETNX)
    v:<value>                   "<ENTITY>\\n<KEY>\\n<fake or empty>": the value's pseudonym
    k:<KEY>                     the value behind placeholder key KEY (PERSON_1)
    f:<fake>                    the value behind a fake
    n:<ENTITY>, a:<ENTITY>      the highest placeholder number and fake attempt used

Two workers may serve two requests of one conversation at once. Each masks with its own copy of
the vault, so both may issue ``<PERSON_3>`` (or the same fake: the secret is shared) for two
different values. ``save`` is one Lua script, atomic in Redis: a value already stored keeps the
pseudonym stored first (the later request keeps restoring its own answer with its own copy); a
new value whose placeholder key is taken gets the next free number, and one whose fake is taken,
equals a stored value or overlaps another fake gets its placeholder instead. So the stored vault
holds every value either request issued, one pseudonym per value, and no pseudonym for two
values; the next request of the conversation masks the whole history with it.

Redis down or slower than ``timeout_s`` per call: ``GuardError`` (fail closed).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import weakref
from collections.abc import Sequence
from typing import Any

from stanchion.errors import GuardError, RedisError, StoreError
from stanchion.guards.vault import STYLES, PseudonymVault, Style, VaultScope
from stanchion.redis_client import RedisClient, RespValue

__all__ = ["RedisVaultStore"]

log = logging.getLogger(__name__)

# KEYS: the vault. ARGV: ttl (ms), style, secret (hex), scope. Reply: HGETALL.
_OPEN = """
redis.call('HSETNX', KEYS[1], 'style', ARGV[2])
redis.call('HSETNX', KEYS[1], 'secret', ARGV[3])
redis.call('HSETNX', KEYS[1], 'scope', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: the vault. ARGV: ttl (ms), style, secret, scope, number of counters, then per counter
# entity, highest number, fake attempts; then per new entry value, entity, key, fake ('' none).
# Reply: how many entries were stored under another pseudonym than the request's.
_SAVE = """
local K = KEYS[1]
redis.call('HSETNX', K, 'style', ARGV[2])
redis.call('HSETNX', K, 'secret', ARGV[3])
redis.call('HSETNX', K, 'scope', ARGV[4])
local function raise(field, n)
  if n > tonumber(redis.call('HGET', K, field) or '0') then redis.call('HSET', K, field, n) end
end
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  raise('n:' .. ARGV[i], tonumber(ARGV[i + 1]))
  raise('a:' .. ARGV[i], tonumber(ARGV[i + 2]))
  i = i + 3
end
local fakes, moved = nil, 0
while i <= #ARGV do
  local value, e, key, fake = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if redis.call('HEXISTS', K, 'v:' .. value) == 0 then
    if redis.call('HEXISTS', K, 'k:' .. key) == 1 then
      local n = tonumber(redis.call('HGET', K, 'n:' .. e) or '0')
      repeat
        n = n + 1
        key = e .. '_' .. n
      until redis.call('HEXISTS', K, 'k:' .. key) == 0
      redis.call('HSET', K, 'n:' .. e, n)
      moved = moved + 1
    end
    if fake ~= '' then
      if fakes == nil then
        fakes = {}
        for _, field in ipairs(redis.call('HKEYS', K)) do
          if string.sub(field, 1, 2) == 'f:' then fakes[#fakes + 1] = string.sub(field, 3) end
        end
      end
      local clash = redis.call('HEXISTS', K, 'v:' .. fake) == 1
      for _, other in ipairs(fakes) do
        if clash then break end
        clash = string.find(other, fake, 1, true) ~= nil or string.find(fake, other, 1, true) ~= nil
      end
      if clash then
        fake = ''
        moved = moved + 1
      else
        fakes[#fakes + 1] = fake
        redis.call('HSET', K, 'f:' .. fake, value)
      end
    end
    redis.call('HSET', K, 'v:' .. value, e .. '\\n' .. key .. '\\n' .. fake, 'k:' .. key, value)
  end
end
redis.call('PEXPIRE', K, ARGV[1])
return moved
"""


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(data: RespValue) -> str:
    if not isinstance(data, bytes):
        raise RedisError(f"unexpected reply from Redis: {data!r}")
    return data.decode("utf-8", "surrogatepass")


class RedisVaultStore:
    """Vaults in the Redis at ``url`` (see the module docstring). ``timeout_s`` bounds each
    Redis call; one connection per store, made on first use (``stanchion/redis_client.py``)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 3600.0,
        style: Style = "placeholder",
        prefix: str = "",
        timeout_s: float = 2.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"a vault's ttl must be positive seconds, not {ttl}")
        if style not in STYLES:
            raise ValueError(f"unknown pseudonym style {style!r}: use one of {', '.join(STYLES)}")
        self.ttl = ttl
        self.style: Style = style
        self.prefix = prefix
        self._ttl_ms = max(1, round(ttl * 1000))
        self._redis = RedisClient(url, timeout_s=timeout_s)
        self._shas: dict[str, str] = {}
        # How many of a handed-out vault's entries Redis already holds: save sends only the rest.
        self._saved: weakref.WeakKeyDictionary[PseudonymVault, int] = weakref.WeakKeyDictionary()

    def key(self, scope: VaultScope) -> str:
        return self.prefix + scope.key

    async def vault(self, scope: VaultScope) -> PseudonymVault:
        secret = secrets.token_hex(16)  # kept only if this call creates the vault
        reply = await self._call(
            _OPEN, self.key(scope), [self._ttl_ms, self.style, secret, _scope_text(scope)]
        )
        try:
            vault = _vault_of(scope, reply, expires_at=time.time() + self.ttl)
        except (ValueError, KeyError, IndexError, RedisError) as exc:
            raise GuardError(
                "the PII vault in Redis is unreadable: the request was refused, nothing was sent",
                detail=repr(exc),
            ) from exc
        self._saved[vault] = len(vault)
        return vault

    async def save(self, vault: PseudonymVault) -> None:
        state = vault.to_state()
        entries = state["entries"][self._saved.get(vault, 0) :]
        counts: dict[str, int] = state["counts"]
        attempts: dict[str, int] = state["fake_attempts"]
        args: list[str | bytes | int] = [
            self._ttl_ms,
            state["style"],
            state["secret"],
            _scope_text(vault.scope),
            len(counts.keys() | attempts.keys()),
        ]
        for entity in counts.keys() | attempts.keys():
            args += [entity, counts.get(entity, 0), attempts.get(entity, 0)]
        for value, entity, key, fake in entries:
            args += [_bytes(value), entity, key, _bytes(fake or "")]
        moved = await self._call(_SAVE, self.key(vault.scope), args)
        self._saved[vault] = len(state["entries"])
        if moved:
            log.info("guard.vault_merged", extra={"moved": moved, "entries": len(entries)})

    def close(self) -> None:
        self._redis.close()

    async def _call(self, script: str, key: str, args: Sequence[str | bytes | int]) -> RespValue:
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()
        try:
            try:
                return await self._redis.call("EVALSHA", sha, 1, key, *args)
            except RedisError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
            await self._redis.call("SCRIPT", "LOAD", script)  # a restarted or flushed Redis forgot it
            return await self._redis.call("EVALSHA", sha, 1, key, *args)
        except StoreError as exc:
            log.error("guard.vault_store_failed", extra={"error": type(exc).__name__})
            raise GuardError(
                "the PII vault store (Redis) did not answer: the request was refused, nothing was sent",
                detail=str(exc),
            ) from exc


def _scope_text(scope: VaultScope) -> str:
    return f"{scope.tenant}\n{scope.user}\n{scope.conversation}"


def _vault_of(scope: VaultScope, reply: RespValue, *, expires_at: float) -> PseudonymVault:
    """The vault an HGETALL reply describes (``_OPEN``'s reply)."""
    if not isinstance(reply, list) or len(reply) % 2:
        raise RedisError(f"unexpected reply from Redis: {type(reply).__name__}")
    fields = {_text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
    stored_scope = _text(fields["scope"])
    if stored_scope != _scope_text(scope):
        raise ValueError(f"the hash at {scope.key} belongs to another scope")
    entries: list[list[Any]] = []
    counts: dict[str, int] = {}
    attempts: dict[str, int] = {}
    for name, data in fields.items():
        if name.startswith("v:"):
            entity, key, fake = _text(data).split("\n")
            entries.append([name[2:], entity, key, fake or None])
        elif name.startswith("n:"):
            counts[name[2:]] = int(_text(data))
        elif name.startswith("a:"):
            attempts[name[2:]] = int(_text(data))
    state = {
        "style": _text(fields["style"]),
        "secret": _text(fields["secret"]),
        "expires_at": expires_at,
        "entries": entries,
        "counts": counts,
        "fake_attempts": attempts,
    }
    return PseudonymVault.from_state(scope, state)
