"""AnthropicModel: a ChatModel over the Anthropic Messages API (``POST /v1/messages``).

The wire format lives in ``anthropic_format.py``; the connection (auth from the environment at
call time, one httpx client per event loop, error translation, time limits) is the same
``ProviderClient`` the OpenAI-compatible adapter uses, with Anthropic's headers and error names.
Anthropic's 529 "overloaded" is a plain ModelHTTPError, retryable like any 5xx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from stanchion.models.anthropic_format import (
    ANTHROPIC_VERSION,
    MessageStreamParser,
    build_request,
    classify_error,
    parse_message,
)
from stanchion.models.base import ChatOptions
from stanchion.models.http_chat import HTTPChatModel
from stanchion.models.provider_http import ProviderClient
from stanchion.types import Completion, Message

__all__ = ["AnthropicModel"]

DEFAULT_BASE_URL = "https://api.anthropic.com"


def _api_key_header(key: str) -> dict[str, str]:
    return {"x-api-key": key}


class _AnthropicWire:
    def build_request(
        self,
        model: str,
        messages: Sequence[Message],
        options: ChatOptions,
        *,
        stream: bool = False,
        default_max_tokens: int | None = None,
    ) -> dict[str, Any]:
        # The Messages API requires max_tokens; the adapter always has a default.
        return build_request(
            model, messages, options, stream=stream, default_max_tokens=default_max_tokens or 1024
        )

    def parse(self, payload: Any, *, model: str) -> Completion:
        return parse_message(payload, model=model)

    def stream_parser(self, *, model: str) -> MessageStreamParser:
        return MessageStreamParser(model=model)


class AnthropicModel(HTTPChatModel):
    """A ChatModel over Anthropic's Messages API.

    ``name`` is the configured name reported in answers and errors; ``model`` is Anthropic's
    model id. ``base_url`` may be given with or without the ``/v1`` suffix (proxies and gateways
    differ). ``api_key_env=None`` sends no key, for a gateway that adds its own. Call
    ``aclose()`` (or use ``async with``) before the event loop ends.
    """

    def __init__(
        self,
        name: str,
        *,
        model: str,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 30.0,
        default_max_tokens: int = 1024,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        http = ProviderClient(
            model_name=name,
            url=f"{self.base_url}/v1/messages",
            api_key_env=api_key_env,
            auth=_api_key_header,
            headers={"anthropic-version": ANTHROPIC_VERSION},
            classify=classify_error,
            timeout_s=timeout_s,
            transport=transport,
        )
        super().__init__(
            name, model=model, wire=_AnthropicWire(), http=http, default_max_tokens=default_max_tokens
        )

    def __repr__(self) -> str:
        return f"AnthropicModel(name={self._name!r}, model={self.model!r}, url={self._http.url!r})"
