"""Where vaults live between the calls of a conversation: ``VaultStore``, and its in-process form.

The request pipeline's PII stage asks the store for the vault of
``VaultScope(tenant=context.tenant, user=context.user, conversation=<conversation id, or the
request id when the call names none>)``; the store key is ``VaultScope.key``
(``pii-vault:<tenant>:<user>:<conversation>``). A vault lives ``ttl`` seconds after it was last
handed out, then the store forgets it; whoever still holds it (a request under way) keeps using
it. Expiry loses nothing the caller needs: clients send the conversation's history in original
values (answers come back restored), so a fresh vault masks it again.

A Redis-backed store (shared by workers) is still to come: it will keep the same key, with the
vault's values and secret in one hash and Redis' own expiry.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from stanchion.guards.vault import PseudonymVault, Style, VaultScope


class VaultStore(Protocol):
    def vault(self, scope: VaultScope) -> PseudonymVault:
        """The live vault of ``scope``, or a new empty one (which the store then keeps)."""
        ...


class InMemoryVaultStore:
    """Vaults in this process, each for ``ttl`` seconds after its last use, at most ``max_vaults``
    (least recently used dropped first). ``clock`` is injectable (``time.time`` by default)."""

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

    def vault(self, scope: VaultScope) -> PseudonymVault:
        now = self._clock()
        with self._lock:
            self._expire(now)
            found = self._vaults.get(scope.key)
            if found is None or found.scope != scope:
                found = PseudonymVault(scope, style=self.style)
                self._vaults[scope.key] = found
            self._vaults.move_to_end(scope.key)
            found.expires_at = now + self.ttl
            while len(self._vaults) > self.max_vaults:
                self._vaults.popitem(last=False)
            return found

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._vaults)

    def _expire(self, now: float) -> None:
        # Least recently used first, and each expires ttl after its last use: stop at a live one.
        while self._vaults:
            key, oldest = next(iter(self._vaults.items()))
            if not oldest.expired(now):
                return
            del self._vaults[key]
