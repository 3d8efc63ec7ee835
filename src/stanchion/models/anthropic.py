"""AnthropicModel: a ChatModel over the Anthropic Messages API (``POST /v1/messages``).

The wire format lives in ``anthropic_format.py``; the connection (auth from the environment at
call time, one httpx client per event loop, error translation, time limits) is the same
``ProviderClient`` the OpenAI-compatible adapter uses, with Anthropic's headers and error names.
Anthropic's 529 "overloaded" is a plain ModelHTTPError, retryable like any 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from types import TracebackType

import httpx

from stanchion.models.anthropic_format import (
    ANTHROPIC_VERSION,
    MessageStreamParser,
    build_request,
    classify_error,
    parse_message,
)
from stanchion.models.base import ChatOptions
from stanchion.models.openai_compat import ProviderClient
from stanchion.types import Completion, Message, StreamEvent

__all__ = ["AnthropicModel"]

DEFAULT_BASE_URL = "https://api.anthropic.com"


def _api_key_header(key: str) -> dict[str, str]:
    return {"x-api-key": key}


class AnthropicModel:
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
        self._name = name
        self.model = model
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.default_max_tokens = default_max_tokens
        self._http = ProviderClient(
            model_name=name,
            url=f"{self.base_url}/v1/messages",
            api_key_env=api_key_env,
            auth=_api_key_header,
            headers={"anthropic-version": ANTHROPIC_VERSION},
            classify=classify_error,
            timeout_s=timeout_s,
            transport=transport,
        )

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"AnthropicModel(name={self._name!r}, model={self.model!r}, url={self._http.url!r})"

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        options = options or ChatOptions()
        body = build_request(self.model, messages, options, default_max_tokens=self.default_max_tokens)
        payload = await self._http.post_json(body, timeout_s=options.timeout_s)
        return parse_message(payload, model=self._name)

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncIterator[StreamEvent]:
        options = options or ChatOptions()
        body = build_request(
            self.model, messages, options, stream=True, default_max_tokens=self.default_max_tokens
        )
        parser = MessageStreamParser(model=self._name)
        async with aclosing(self._http.stream_lines(body, timeout_s=options.timeout_s)) as lines:
            async for line in lines:
                for event in parser.feed_line(line):
                    yield event
                if parser.done:
                    break
        yield parser.finish()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AnthropicModel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
