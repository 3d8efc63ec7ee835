"""API keys -> Principal. Keys are looked up by hash; a short cache keeps the lookup off the hot path.

A revoked key stops working on every worker within ``KEY_CACHE_S`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from stanchion.server.errors import APIError
from stanchion.state import ApiKey, Principal, StateStore
from stanchion.state.records import Scope
from stanchion.state.secrets import key_hash

KEY_CACHE_S = 2.0
_MAX_CACHED = 10_000


class KeyResolver:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def principal(self, headers: Mapping[str, str]) -> Principal:
        secret = _bearer(headers)
        digest = key_hash(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            key = cached[1]
        else:
            key = await asyncio.to_thread(self.state.key_for_secret, secret)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = (now + KEY_CACHE_S, key)
        if key is None:
            raise APIError(
                401, "invalid_api_key", "the API key is not valid; create one with `stanchion keys create`"
            )
        if not key.active:
            raise APIError(401, "revoked_api_key", f"the API key {key.prefix} was revoked")
        return key.principal()


def require(principal: Principal, scope: Scope) -> None:
    if not principal.can(scope):
        raise APIError(
            403,
            "insufficient_scope",
            f"this API key lacks the {scope!r} scope (it has: {', '.join(sorted(principal.scopes))})",
        )


def _bearer(headers: Mapping[str, str]) -> str:
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if api_key := headers.get("x-api-key", "").strip():
        return api_key
    raise APIError(
        401,
        "missing_api_key",
        "send an API key as 'Authorization: Bearer <key>' (create one with `stanchion keys create`)",
        headers={"WWW-Authenticate": "Bearer"},
    )
