"""Where vaults live between the calls of a conversation: the ``VaultStore`` protocol, its
in-process form, and ``open_vault_store(spec)``, which picks one for a spec.

The request pipeline's PII stage asks the store for the vault of
``VaultScope(tenant=context.tenant, user=context.user, conversation=<conversation id, or the
request id when the call names none>)``, masks with it, and hands it back to ``save`` once the
request has issued its pseudonyms (before the masked text leaves the process, and again if it
masks more later): ``save`` persists what the vault issued since it was handed out.

    store = open_vault_store(spec)            # Redis with server.redis_url, else in-process
    vault = await store.vault(scope)          # the live vault, or a new one; ttl refreshed
    masked = vault.mask(text, detector.detect(text))
    await store.save(vault)                   # other workers now see these pseudonyms

A vault lives ``ttl`` seconds after it was last handed out or saved, then the store forgets it;
whoever still holds it (a request under way) keeps using it. Expiry loses nothing the caller
needs: clients send the conversation's history in original values (answers come back restored),
so a fresh vault masks it again. The store key is ``VaultScope.key``
(``pii-vault:<tenant>:<user>:<conversation>``, each part escaped), so tenants, users and
conversations never share a vault.

A store that cannot answer raises ``GuardError``: the request is refused and nothing is sent
(fail closed). ``RedisVaultStore`` (``guards/vault_store_redis.py``) is the store shared by
workers; ``stanchion.testing.vault_suite`` is the behaviour both stores pass.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from stanchion.guards.vault import PseudonymVault, Style, VaultScope

if TYPE_CHECKING:
    from stanchion.spec import Spec

__all__ = ["InMemoryVaultStore", "VaultStore", "open_vault_store"]


class VaultStore(Protocol):
    async def vault(self, scope: VaultScope) -> PseudonymVault:
        """The live vault of ``scope``, or a new empty one; its ttl starts again. Raises
        ``GuardError`` when the store cannot answer."""
        ...

    async def save(self, vault: PseudonymVault) -> None:
        """Persist what ``vault`` issued since the store handed it out. Raises ``GuardError``
        when the store cannot answer."""
        ...

    def close(self) -> None:
        """Release connections (nothing stored is lost)."""
        ...


class InMemoryVaultStore:
    """Vaults in this process, each for ``ttl`` seconds after its last use, at most ``max_vaults``
    (least recently used dropped first). ``clock`` is injectable (``time.time`` by default).

    The requests of one process share one vault object per scope (its methods never await), so
    two requests of a conversation at once see each other's pseudonyms as they are issued and
    ``save`` only refreshes the ttl; a vault dropped meanwhile (expired, past the cap) that is
    saved while no other vault holds its scope is kept again."""

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        style: Style = "placeholder",
        max_vaults: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"a vault's ttl must be positive seconds, not {ttl}")
        if max_vaults < 1:
            raise ValueError(f"max_vaults must be at least 1, not {max_vaults}")
        self.ttl = ttl
        self.style: Style = style
        self.max_vaults = max_vaults
        self._clock = clock
        self._vaults: OrderedDict[str, PseudonymVault] = OrderedDict()
        self._lock = threading.Lock()

    async def vault(self, scope: VaultScope) -> PseudonymVault:
        now = self._clock()
        with self._lock:
            self._expire(now)
            found = self._vaults.get(scope.key)
            if found is None or found.scope != scope:
                found = PseudonymVault(scope, style=self.style)
            self._keep(found, now)
            return found

    async def save(self, vault: PseudonymVault) -> None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            if self._vaults.get(vault.scope.key, vault) is vault:
                self._keep(vault, now)

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._vaults)

    def _keep(self, vault: PseudonymVault, now: float) -> None:
        key = vault.scope.key
        self._vaults[key] = vault
        self._vaults.move_to_end(key)
        vault.expires_at = now + self.ttl
        while len(self._vaults) > self.max_vaults:
            self._vaults.popitem(last=False)

    def _expire(self, now: float) -> None:
        # Least recently used first, and each expires ttl after its last use: stop at a live one.
        while self._vaults:
            key, oldest = next(iter(self._vaults.items()))
            if not oldest.expired(now):
                return
            del self._vaults[key]


def open_vault_store(spec: Spec) -> VaultStore:
    """The vault store a spec asks for: Redis at ``server.redis_url`` (shared by every worker and
    host), else in this process; ``ttl``, pseudonym style and the Redis time limit from
    ``guards.pii`` (``vault_ttl_s``, ``style``, ``timeout_s``; defaults when the guard is off)."""
    from stanchion.spec import PiiGuardSpec

    pii = spec.guards.pii or PiiGuardSpec()
    if spec.server.redis_url:
        from stanchion.guards.vault_store_redis import RedisVaultStore

        shared: VaultStore = RedisVaultStore(
            spec.server.redis_url, ttl=pii.vault_ttl_s, style=pii.style, timeout_s=pii.timeout_s
        )
        return shared
    local: VaultStore = InMemoryVaultStore(ttl=pii.vault_ttl_s, style=pii.style)
    return local
