"""The PII vault store's conformance suite. Every store's tests subclass ``VaultStoreConformance``
and give an ``open_store`` fixture: a callable that opens a store on the same backing each time it
is called (two calls are two workers; an in-process store returns its one instance)::

    class TestInMemoryVaultStore(VaultStoreConformance):
        @pytest.fixture
        def open_store(self):
            store = InMemoryVaultStore()
            return lambda style="placeholder": store

Each test runs its scenario in one event loop (``asyncio.run``) and closes what it opened.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest

from stanchion.guards.vault import PseudonymVault, Span, Style, VaultScope
from stanchion.guards.vault_store import VaultStore

__all__ = ["OpenStore", "VaultStoreConformance", "assert_consistent", "names_in"]

OpenStore = Callable[..., VaultStore]
Scenario = Callable[..., Awaitable[None]]

_NAME = re.compile(r"\b[A-Z][a-z]+ [A-Z][a-z]+\b")
_EMAIL = re.compile(r"[\w.]+@[\w.]+\.\w+")


def names_in(text: str) -> list[Span]:
    """A stand-in detector: two capitalised words are a PERSON, and any e-mail address."""
    spans = [Span(m.start(), m.end(), "PERSON") for m in _NAME.finditer(text)]
    return spans + [Span(m.start(), m.end(), "EMAIL_ADDRESS") for m in _EMAIL.finditer(text)]


def assert_consistent(vault: PseudonymVault) -> None:
    """One pseudonym per value, and no placeholder key or fake for two values."""
    entries = vault.to_state()["entries"]
    keys = [key for _, _, key, _ in entries]
    fakes = [fake for _, _, _, fake in entries if fake is not None]
    assert len(set(keys)) == len(keys), f"a placeholder key stands for two values: {sorted(keys)}"
    assert len(set(fakes)) == len(fakes), f"a fake stands for two values: {sorted(fakes)}"
    for value, _, key, fake in entries:
        assert vault.original(f"<{key}>") == value
        if fake is not None:
            assert vault.original(fake) == value


class VaultStoreConformance:
    """Behaviour every vault store must have. Subclasses provide ``open_store(style=...)``."""

    @pytest.fixture
    def open_store(self) -> OpenStore:  # pragma: no cover - overridden by every store
        raise NotImplementedError

    @staticmethod
    def run(
        open_store: OpenStore, scenario: Scenario, *, workers: int = 1, style: Style = "placeholder"
    ) -> None:
        async def main() -> None:
            stores = [open_store(style=style) for _ in range(workers)]
            try:
                await scenario(*stores)
            finally:
                for store in stores:
                    store.close()

        asyncio.run(main())

    def test_a_saved_vault_is_handed_out_again(self, open_store: OpenStore) -> None:
        """What one request issued and saved, a later request of the conversation restores and
        masks with the same pseudonyms (another worker too)."""
        scope = VaultScope("acme", "conv-1", user="u1")

        async def scenario(one: VaultStore, two: VaultStore) -> None:
            first = await one.vault(scope)
            text = "Ann Lee wrote to bob@corp.io"
            masked = first.mask(text, names_in(text))
            await one.save(first)
            later = await two.vault(scope)
            assert later.restore(masked) == text
            assert later.mask("Ask Ann Lee", []) == f"Ask {first.pseudonym('Ann Lee')}"

        self.run(open_store, scenario, workers=2)

    def test_a_new_scope_gets_an_empty_vault(self, open_store: OpenStore) -> None:
        async def scenario(store: VaultStore) -> None:
            vault = await store.vault(VaultScope("acme", "never-seen"))
            assert len(vault) == 0 and vault.restore("<PERSON_1>") == "<PERSON_1>"
            assert vault.expires_at is not None and not vault.expired()

        self.run(open_store, scenario)

    def test_tenants_users_and_conversations_share_nothing(self, open_store: OpenStore) -> None:
        """Scopes whose parts hold ':' and '%' (an escaped key's characters) stay apart."""
        scopes = [
            VaultScope("a:b", "c"),
            VaultScope("a", "b:c"),
            VaultScope("a%3Ab", "c"),
            VaultScope("a", "c", user="b"),
            VaultScope("a", "b%3Ac"),
            VaultScope("a:b:c", "%"),
        ]
        assert len({s.key for s in scopes}) == len(scopes)

        async def scenario(store: VaultStore) -> None:
            for i, scope in enumerate(scopes):
                vault = await store.vault(scope)
                text = f"Name{chr(97 + i)} Person"
                vault.mask(text, names_in(text))
                await store.save(vault)
            for i, scope in enumerate(scopes):
                vault = await store.vault(scope)
                assert len(vault) == 1, f"{scope} sees another scope's values"
                assert vault.restore("<PERSON_1>") == f"Name{chr(97 + i)} Person"

        self.run(open_store, scenario)

    def test_saving_again_adds_only_what_is_new(self, open_store: OpenStore) -> None:
        """A request may save after each masking; nothing is duplicated or renumbered."""
        scope = VaultScope("acme", "conv-2")

        async def scenario(one: VaultStore, two: VaultStore) -> None:
            vault = await one.vault(scope)
            vault.mask("Ann Lee", names_in("Ann Lee"))
            await one.save(vault)
            await one.save(vault)
            vault.mask("Bob Roe and Ann Lee", names_in("Bob Roe and Ann Lee"))
            await one.save(vault)
            again = await two.vault(scope)
            assert len(again) == 2
            assert again.pseudonym("Ann Lee") == "<PERSON_1>" and again.pseudonym("Bob Roe") == "<PERSON_2>"
            assert_consistent(again)

        self.run(open_store, scenario, workers=2)

    @pytest.mark.parametrize("style", ["placeholder", "fake"])
    def test_two_requests_at_once_lose_nothing_and_collide_nowhere(
        self, open_store: OpenStore, style: Style
    ) -> None:
        """Two workers mask two requests of one conversation at the same time, each issuing new
        values (the same number, the same fake) and one value in common: the stored vault holds
        every value once, the shared one under the first saver's pseudonym, and restores both."""
        scope = VaultScope("acme", "conv-3")
        text_a = "Ann Lee and Cy Dunn wrote to ann@corp.io"
        text_b = "Bob Roe and Cy Dunn wrote to bob@corp.io"

        async def scenario(one: VaultStore, two: VaultStore) -> None:
            seed = await one.vault(scope)
            seed.mask("Eve Park", names_in("Eve Park"))
            await one.save(seed)
            a, b = await asyncio.gather(one.vault(scope), two.vault(scope))
            masked_a = a.mask(text_a, names_in(text_a))
            masked_b = b.mask(text_b, names_in(text_b))
            assert a.restore(masked_a) == text_a and b.restore(masked_b) == text_b
            await asyncio.gather(one.save(a), two.save(b))
            final = await one.vault(scope)
            assert_consistent(final)
            for value in ("Eve Park", "Ann Lee", "Bob Roe", "Cy Dunn", "ann@corp.io", "bob@corp.io"):
                assert final.pseudonym(value) is not None, f"{value} was lost"
            assert final.pseudonym("Cy Dunn") == a.pseudonym("Cy Dunn")  # a saved first
            assert final.pseudonym("Eve Park") == seed.pseudonym("Eve Park")
            for text in (text_a, text_b, "Eve Park, Cy Dunn"):
                assert final.restore(final.mask(text, [])) == text
            assert final.mask(text_a, []) != text_a and "Cy Dunn" not in final.mask(text_b, [])

        self.run(open_store, scenario, workers=2, style=style)

    def test_many_requests_at_once(self, open_store: OpenStore) -> None:
        """Eight workers each issue eight new names at once: 64 values, 64 distinct pseudonyms."""
        scope = VaultScope("acme", "conv-4")

        async def request(store: VaultStore, n: int) -> None:
            vault = await store.vault(scope)
            text = ", ".join(f"Name{chr(97 + n)} Last{chr(97 + i)}" for i in range(8))
            vault.mask(text, names_in(text))
            await store.save(vault)

        async def scenario(*stores: VaultStore) -> None:
            await asyncio.gather(*(request(store, n) for n, store in enumerate(stores)))
            final = await stores[0].vault(scope)
            assert len(final) == 64
            assert_consistent(final)

        self.run(open_store, scenario, workers=8, style="fake")

    def test_fake_style_vaults_share_their_secret(self, open_store: OpenStore) -> None:
        """Two workers opening a new conversation at once draw fakes from one secret."""
        scope = VaultScope("acme", "conv-5")

        async def scenario(one: VaultStore, two: VaultStore) -> None:
            a, b = await asyncio.gather(one.vault(scope), two.vault(scope))
            assert a.style == b.style == "fake"
            assert a.to_state()["secret"] == b.to_state()["secret"]
            assert a.mask("Ann Lee", names_in("Ann Lee")) == b.mask("Ann Lee", names_in("Ann Lee"))

        self.run(open_store, scenario, workers=2, style="fake")

    def test_a_value_that_looks_like_a_pseudonym_round_trips(self, open_store: OpenStore) -> None:
        """Values holding newlines, colons, '<PERSON_1>' and lone surrogates survive storage."""
        scope = VaultScope("acme", "conv-6")
        odd = ["Ann\nLee", "k:PERSON_1", "<PERSON_1>", "x\ud800y", "Zoë Ñúñez"]

        async def scenario(one: VaultStore, two: VaultStore) -> None:
            vault = await one.vault(scope)
            text = " | ".join(odd)
            spans, pos = [], 0
            for value in odd:
                spans.append(Span(pos, pos + len(value), "PERSON"))
                pos += len(value) + 3
            masked = vault.mask(text, spans)
            await one.save(vault)
            again = await two.vault(scope)
            assert again.restore(masked) == text
            assert_consistent(again)

        self.run(open_store, scenario, workers=2)
