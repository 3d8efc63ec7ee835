"""Composition root: ``build(spec)`` wires the components the spec names. No globals.

This is the one place components are built from the spec: the store, state, embedder, tokenizer,
ingest pipeline, retriever, models, tools, rerankers and answerers. The server and the CLI take an
``App`` and add only what is theirs (the server's keys, limits, metrics and audit writer, in
``server/context.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from stanchion.core.embed import Embedder, RecentQueries, SentenceTransformerEmbedder
from stanchion.core.packaged import MINILM_NAME
from stanchion.errors import SpecError
from stanchion.index.sqlite import SQLiteStore
from stanchion.index.store import Store
from stanchion.ingest.pipeline import Pipeline
from stanchion.ingest.tokens import Tokenizer, tokenizer_for
from stanchion.retrieve.search import Retriever
from stanchion.spec import ModelSpec, PriceSpec, Spec

# Providers whose model runs in this process: nothing they read leaves it, so with
# ``guards.pii.exempt_local`` (the default) they read the original text.
LOCAL_PROVIDERS = frozenset({"llamacpp", "extractive", "planner"})

if TYPE_CHECKING:
    from stanchion.agents import Agent
    from stanchion.answer import Answerer
    from stanchion.cache.entry import CacheBackend
    from stanchion.guards.injection_check import InjectionCheck
    from stanchion.guards.session import PiiGuard
    from stanchion.guards.sources import SourceScreen
    from stanchion.guards.vault_store import VaultStore
    from stanchion.memory.history import SessionHistory
    from stanchion.memory.service import Memory
    from stanchion.memory.writer import MemoryWriter
    from stanchion.models.base import ChatModel
    from stanchion.models.registry import ModelRegistry
    from stanchion.retrieve.rerank import Reranker
    from stanchion.state import StateStore
    from stanchion.tools import Toolbox
    from stanchion.types import Message


class _Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class App:
    """The wired system. Components are built on first use, so ``stanchion --help`` stays instant."""

    spec: Spec
    _closers: list[_Closeable] = field(default_factory=list)

    @cached_property
    def store(self) -> Store:
        index = self.spec.index
        store: Store
        if index.backend == "postgres":
            from stanchion.index.postgres import PostgresStore

            assert index.dsn is not None  # the spec validates it
            store = PostgresStore(
                index.dsn,
                dim=self.embedder.dim,
                ef_search=index.ef_search,
                pool_timeout_s=index.pool_timeout_s,
            )
        else:
            store = SQLiteStore(self.spec.resolve(index.path), keyword_engine=index.keyword_engine)
        self._closers.append(store)
        return store

    @cached_property
    def state(self) -> StateStore:
        """API keys, ingest jobs and the audit log: beside the index (its PostgreSQL, or a SQLite file)."""
        from stanchion.state import open_state

        if self.spec.index.backend == "postgres":
            state = open_state(dsn=self.spec.index.dsn, pool_timeout_s=self.spec.index.pool_timeout_s)
        else:
            state = open_state(sqlite_path=self.spec.resolve(self.spec.server.state_path))
        self._closers.append(state)
        return state

    @cached_property
    def cache_backend(self) -> CacheBackend:
        """Where the response cache lives: Redis when ``server.redis_url`` is set, else a SQLite
        file beside the server's state (``cache/backends.py``)."""
        from stanchion.cache.backends import open_cache_backend

        backend = open_cache_backend(self.spec)
        self._closers.append(backend)
        return backend

    @cached_property
    def embedder(self) -> Embedder:
        """The spec's ``embedding``: the local model, or an OpenAI-compatible ``/embeddings`` endpoint."""
        embedding = self.spec.embedding
        if embedding.provider == "openai":
            from stanchion.core.openai_embed import OpenAIEmbedder

            assert embedding.base_url is not None  # the spec validates it
            remote = OpenAIEmbedder(
                base_url=embedding.base_url,
                model=embedding.model,
                api_key_env=embedding.api_key_env,
                batch_size=embedding.batch_size,
            )
            self._closers.append(remote)
            return remote
        return SentenceTransformerEmbedder(embedding.model, batch_size=embedding.batch_size)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """What measures chunk sizes: ``embedding.tokenizer``; by default the local embedding
        model's own, and all-MiniLM-L6-v2's for a remote one (its tokenizer is not at hand)."""
        embedding = self.spec.embedding
        default = embedding.model if embedding.provider == "local" else MINILM_NAME
        return tokenizer_for(embedding.tokenizer or default)

    @cached_property
    def prices(self) -> dict[str, PriceSpec]:
        """Each model's price by name: answers are billed per model that produced tokens."""
        return {name: model.price for name, model in self.spec.models.items()}

    @cached_property
    def pipeline(self) -> Pipeline:
        return Pipeline(self.spec, self.store, self.embedder, self.tokenizer)

    @cached_property
    def query_embedder(self) -> RecentQueries:
        """The embedder for questions: retrieval and the response cache share it, so a question
        is embedded once per request however many of them need its vector."""
        return RecentQueries(self.outbound_embedder)

    @cached_property
    def outbound_embedder(self) -> Embedder:
        """The embedder for what a request sends (questions, ``/v1/embeddings`` input): a remote
        one masks each PII value by its type first when ``guards.pii`` is on; a local one reads
        the text as it is (nothing leaves the process)."""
        guard = self.pii_guard
        # Only the in-process model counts as local: any other embedder may send text away.
        if guard is None or isinstance(self.embedder, SentenceTransformerEmbedder):
            return self.embedder
        from stanchion.guards.masking_embedder import MaskingEmbedder

        return MaskingEmbedder(self.embedder, guard)

    @cached_property
    def retriever(self) -> Retriever:
        r = self.spec.retrieval
        return Retriever(self.store, self.query_embedder, fusion=r.fusion, candidates=r.candidates)

    @cached_property
    def tools(self) -> Toolbox:
        """The tools the spec declares (``tools:``), each built on first use."""
        from stanchion.tools import Toolbox

        return Toolbox(self.spec.tools, retriever=lambda: self.retriever, base_dir=self.spec.base_dir)

    @cached_property
    def models(self) -> ModelRegistry:
        from stanchion.models.registry import ModelRegistry

        guard = self.pii_guard
        if guard is None:
            return ModelRegistry(self.spec, embedder=lambda: self.embedder)
        from stanchion.guards.masking_model import MaskingModel

        exempt = (
            LOCAL_PROVIDERS if self.spec.guards.pii and self.spec.guards.pii.exempt_local else frozenset()
        )

        def mask(name: str, model_spec: ModelSpec, model: ChatModel) -> ChatModel:
            return model if model_spec.provider in exempt else MaskingModel(model, guard)

        return ModelRegistry(self.spec, embedder=lambda: self.embedder, wrap=mask)

    @cached_property
    def vault_store(self) -> VaultStore:
        """Where conversations keep their PII pseudonyms between calls: Redis at
        ``server.redis_url`` (shared by workers), else this process."""
        from stanchion.guards.vault_store import open_vault_store

        store = open_vault_store(self.spec)
        self._closers.append(store)
        return store

    @cached_property
    def pii_guard(self) -> PiiGuard | None:
        """The PII guard ``guards.pii`` declares (None without it): every remote model is wrapped
        to mask through it, and the request pipeline opens each call's session on it."""
        pii = self.spec.guards.pii
        if pii is None:
            return None
        from stanchion.guards.pii import PiiDetector
        from stanchion.guards.session import PiiGuard

        detector = PiiDetector(thresholds=dict(pii.thresholds.items()), entities=pii.entities)
        return PiiGuard(detector, style=pii.style, timeout_s=pii.timeout_s)

    def route_model(self, name: str | None = None) -> ChatModel:
        """The ChatModel behind a route (default: the answer route): a fallback chain or a router."""
        return self.models.route(name or self.spec.answer.route)

    def answerer(self, route: str | None = None) -> Answerer:
        """An Answerer for ``route`` (default: the answer route): the route's model, its context
        budget, the models' prices, the retrieval mode and the reranker. A new one each call."""
        from stanchion.answer import Answerer

        spec = self.spec
        chosen = route or spec.answer.route
        model = self.route_model(chosen)  # SpecError for an unknown route
        models = [spec.models[n] for n in _route_models(spec, chosen)]
        # Every model the route may fall back to must fit the prompt.
        context = min((m.context_window - m.max_output_tokens for m in models), default=8192 - 512)
        primary = models[0] if models else None
        return Answerer(
            self.retriever,
            model,
            spec=spec.answer,
            embedder=self.embedder,
            context_tokens=context,
            reranker=self.reranker(),
            counter=self.tokenizer,
            prices=self.prices,
            max_output_tokens=primary.max_output_tokens if primary else None,
            mode=spec.retrieval.mode,
            sources=self.source_screen,
        )

    @cached_property
    def memory(self) -> Memory:
        """Long-term memory of each (tenant, user), on the control-plane database."""
        from stanchion.memory.service import Memory
        from stanchion.memory.store import DatabaseMemoryStore

        return Memory(DatabaseMemoryStore(self.state.db, model=self.embedder.name), self.query_embedder)

    @cached_property
    def memory_writer(self) -> MemoryWriter:
        """Writes what users state after their runs, in the background of the running event loop."""
        from stanchion.memory.writer import MemoryWriter

        return MemoryWriter(self.memory)

    def agent(self, name: str) -> Agent:
        """The agent ``agents.<name>`` declares: its route's model, its tools, the injection guard
        on tool results, and memory when it asks for it. A new one each call (it holds no state)."""
        from stanchion.agents import Agent, AgentParts

        if name not in self.spec.agents:
            known = ", ".join(self.spec.agents) or "none (declare them under agents: in stanchion.yaml)"
            raise SpecError(f"no agent named {name!r} (agents: {known})", key_path="agents")
        spec = self.spec.agents[name]
        check = self.injection_check
        memory = self.memory if spec.memory else None

        def recall(tenant: str, user: str, query: str) -> list[str]:
            assert memory is not None
            return [r.text for r in memory.recall(tenant, user, query, k=5)]

        def remember(tenant: str, user: str, messages: Sequence[Message]) -> bool:
            return self.memory_writer.submit(tenant, user, messages, source=f"agent:{name}")

        parts = AgentParts(
            model=self.route_model(spec.route),
            tools=self.tools.specs(spec.tools),
            call_tool=self.tools.call,
            prices=self.prices,
            screen=check.screen_tool_result if check is not None else None,
            recall=recall if memory is not None else None,
            remember=remember if memory is not None else None,
            history=self.sessions.context,
            record=self.sessions.append,
        )
        return Agent(name, spec, parts)

    @cached_property
    def sessions(self) -> SessionHistory:
        """Each session's turns and running summary, on the control-plane database."""
        from stanchion.memory.history import SessionHistory

        return SessionHistory(self.state.db)

    @cached_property
    def injection_check(self) -> InjectionCheck | None:
        """``guards.injection`` on what callers and tools send (None without it): one per app,
        sharing the question embedder and its remembered verdicts."""
        injection = self.spec.guards.injection
        if injection is None:
            return None
        from stanchion.guards.injection_check import InjectionCheck

        return InjectionCheck(injection, lambda: self.query_embedder)

    @cached_property
    def source_screen(self) -> SourceScreen | None:
        """``guards.injection.sources`` on retrieved chunks before any prompt (None without
        ``guards.injection``). One per app: its memory of chunks checked at query time is shared."""
        injection = self.spec.guards.injection
        if injection is None:
            return None
        from stanchion.guards.sources import source_screen

        embedder = self.embedder
        return source_screen(
            injection, embedder, lambda hashes: self.store.cached_vectors(embedder.name, hashes)
        )

    def reranker(self) -> Reranker | None:
        """The spec's ``answer.rerank``, or None; a new one each call."""
        from stanchion.retrieve.rerank import BiEncoderReranker, CrossEncoderReranker, LLMReranker

        rerank = self.spec.answer.rerank
        if rerank.kind == "none":
            return None
        if rerank.kind == "bi-encoder":
            return BiEncoderReranker(self.embedder)
        if rerank.kind == "llm":
            return LLMReranker(self.route_model(rerank.model or self.spec.answer.route))
        if not rerank.model:
            raise SpecError(
                "answer.rerank.model: the cross-encoder reranker needs a local model folder",
                key_path="answer.rerank.model",
            )
        return CrossEncoderReranker(self.spec.resolve(rerank.model))

    def close(self) -> None:
        for closer in self._closers:
            closer.close()
        self._closers.clear()


def _route_models(spec: Spec, route: str) -> list[str]:
    chosen = spec.routes[route]
    return list(dict.fromkeys([*chosen.models, *(n for chain in chosen.tiers.values() for n in chain)]))


def build(spec: Spec, *, embedder: Embedder | None = None) -> App:
    """Wire the app for ``spec``; pass ``embedder`` to share an already loaded model (tests, evals)."""
    app = App(spec)
    if embedder is not None:
        app.__dict__["embedder"] = embedder  # seeds the cached_property
    return app
