"""A ChatModel over any OpenAI-compatible ``/chat/completions`` endpoint, and its HTTP plumbing.

``OpenAICompatModel`` serves OpenAI, vLLM, Ollama and llama.cpp's server by configuration alone:
the wire format lives in ``openai_format.py``; this module holds the connection. ``ProviderClient``
(in ``provider_http.py``: auth read from the environment at call time, a connection pool per event
loop, HTTP failures translated into ``stanchion.errors``) is shared with the Anthropic adapter.

Time limits: ``complete`` must have the whole answer within ``timeout_s``; ``stream`` must see the
response start, and then each further piece, within ``timeout_s`` of the last, so a long answer
that keeps flowing is never cut off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from stanchion.models.base import Capabilities, ChatOptions
from stanchion.models.http_chat import HTTPChatModel
from stanchion.models.openai_format import (
    ChatStreamParser,
    build_request,
    parse_completion,
)
from stanchion.models.provider_http import ProviderClient, bearer_auth, redacted_url
from stanchion.types import Completion, Message

__all__ = ["OpenAICompatModel", "ProviderClient", "bearer_auth"]


class _OpenAIWire:
    def build_request(
        self,
        model: str,
        messages: Sequence[Message],
        options: ChatOptions,
        *,
        stream: bool = False,
        default_max_tokens: int | None = None,
    ) -> dict[str, Any]:
        return build_request(model, messages, options, stream=stream, default_max_tokens=default_max_tokens)

    def parse(self, payload: Any, *, model: str) -> Completion:
        return parse_completion(payload, model=model)

    def stream_parser(self, *, model: str) -> ChatStreamParser:
        return ChatStreamParser(model=model)


class OpenAICompatModel(HTTPChatModel):
    """A ChatModel over an OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

    ``name`` is the configured name reported in answers and errors; ``model`` is the provider's
    model id. ``base_url`` includes the version prefix, e.g. ``http://localhost:8000/v1``.
    ``default_max_tokens`` applies when ``ChatOptions.max_tokens`` is unset; ``transport`` lets
    tests substitute ``httpx.MockTransport``. Call ``aclose()`` (or use ``async with``) before
    the event loop ends, so no pooled connection is left open.
    """

    # Its stream parser reads the body's bytes and hands text on as plain pieces (the gateway's
    # fast path).
    capabilities = Capabilities(streams_pieces=True, tools=True, json_mode=True)

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 30.0,
        default_max_tokens: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        http = ProviderClient(
            model_name=name,
            url=f"{self.base_url}/chat/completions",
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            transport=transport,
        )
        super().__init__(
            name, model=model, wire=_OpenAIWire(), http=http, default_max_tokens=default_max_tokens
        )

    def __repr__(self) -> str:
        return (
            f"OpenAICompatModel(name={self._name!r}, model={self.model!r}, "
            f"base_url={redacted_url(self.base_url)!r})"
        )
