"""The built-in chat model providers, each one function from a model's spec to a ChatModel.

They are registered by entry point in Stanchion's ``pyproject.toml`` (group
``stanchion.providers``), exactly as a provider from another package is (``core/plugins.py``):
``registry.build_model`` looks every provider up by name, built-in or not. Each factory imports
its adapter only when called, so a spec that never names llama.cpp never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from stanchion.core.embed import Embedder
from stanchion.models.base import ChatModel
from stanchion.spec import ModelSpec

__all__ = ["ProviderFactory", "anthropic", "extractive", "llamacpp", "openai", "planner"]


class ProviderFactory(Protocol):
    """What a ``stanchion.providers`` entry point names. ``embedder`` is called only by a
    provider that needs the embedding model (the extractive and planner ones)."""

    def __call__(self, name: str, spec: ModelSpec, *, embedder: Callable[[], Embedder]) -> ChatModel: ...


def openai(name: str, spec: ModelSpec, *, embedder: Callable[[], Embedder]) -> ChatModel:
    """Any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, llama.cpp server, LM Studio, TGI."""
    from stanchion.models.openai_compat import OpenAICompatModel

    return OpenAICompatModel(
        name,
        base_url=spec.base_url or "https://api.openai.com/v1",
        model=spec.model,
        # Real OpenAI needs a key; a local server (vLLM, Ollama, llama.cpp) usually has none.
        api_key_env=spec.api_key_env or (None if spec.base_url else "OPENAI_API_KEY"),
        timeout_s=spec.timeout_s,
        default_max_tokens=spec.max_output_tokens,
    )


def anthropic(name: str, spec: ModelSpec, *, embedder: Callable[[], Embedder]) -> ChatModel:
    """Anthropic's Messages API."""
    from stanchion.models.anthropic import AnthropicModel

    return AnthropicModel(
        name,
        model=spec.model,
        api_key_env=spec.api_key_env or "ANTHROPIC_API_KEY",
        base_url=spec.base_url or "https://api.anthropic.com",
        timeout_s=spec.timeout_s,
        default_max_tokens=spec.max_output_tokens,
    )


def llamacpp(name: str, spec: ModelSpec, *, embedder: Callable[[], Embedder]) -> ChatModel:
    """A GGUF model in process (the packaged SmolLM2 when ``model`` is empty)."""
    from stanchion.models.llamacpp import LlamaCppModel

    return LlamaCppModel(name, model_path=spec.model or None, n_ctx=spec.context_window)


def extractive(name: str, spec: ModelSpec, *, embedder: Callable[[], Embedder]) -> ChatModel:
    """No LLM: answers by quoting the sources' best sentences."""
    from stanchion.models.extractive import ExtractiveModel

    return ExtractiveModel(embedder(), name=name)


def planner(name: str, spec: ModelSpec, *, embedder: Callable[[], Embedder]) -> ChatModel:
    """No LLM: calls the offered tools by rules (SQL written from the schema, search, calculator)
    and answers from their results, quoting them."""
    from stanchion.models.planner import PlannerModel

    return PlannerModel(embedder(), name=name)
