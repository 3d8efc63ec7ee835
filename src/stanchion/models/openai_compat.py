"""A ChatModel over any OpenAI-compatible ``/chat/completions`` endpoint, and its HTTP plumbing.

``OpenAICompatModel`` serves OpenAI, vLLM, Ollama and llama.cpp's server by configuration alone:
the wire format lives in ``openai_format.py``; this module holds the connection. ``ProviderClient``
(base URL, auth read from the environment at call time, one httpx client per event loop, and the
translation of HTTP failures into ``stanchion.errors``) is reused by the Anthropic adapter.

Time limits: ``complete`` must have the whole answer within ``timeout_s``; ``stream`` must see the
response start, and then each further piece, within ``timeout_s`` of the last, so a long answer
that keeps flowing is never cut off.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import httpx

from stanchion.errors import ModelError, ModelTimeout, ModelUnavailable
from stanchion.models.base import ChatOptions
from stanchion.models.http_chat import HTTPChatModel
from stanchion.models.openai_format import (
    ChatStreamParser,
    ErrorKind,
    build_request,
    classify_error,
    http_error,
    parse_completion,
)
from stanchion.types import Completion, Message

__all__ = ["OpenAICompatModel", "ProviderClient", "bearer_auth"]

ErrorClassifier = Callable[[str], tuple[ErrorKind, str]]

# Provider error bodies can echo a key in part ("Incorrect API key provided: sk-ab***yz").
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_*.\-]{6,}")


def bearer_auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _redacted_url(url: str) -> str:
    """The URL without user:password, which some self-hosted endpoints carry."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(userinfo=b"")) if parsed.userinfo else url


class ProviderClient:
    """POSTs JSON to one provider URL and turns every failure into a ``ModelError``.

    The key is read from ``api_key_env`` on every request, never stored, and scrubbed from error
    bodies. An ``httpx.AsyncClient`` is bound to the event loop it was made on, so one is made per
    running loop (the server has one; the CLI and tests call ``asyncio.run`` more than once).
    """

    def __init__(
        self,
        *,
        model_name: str,
        url: str,
        api_key_env: str | None,
        auth: Callable[[str], dict[str, str]] = bearer_auth,
        headers: Mapping[str, str] | None = None,
        classify: ErrorClassifier = classify_error,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        httpx.URL(url)  # a malformed URL is a configuration error: say so at construction
        self.model_name = model_name
        self.url = url
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self._auth = auth
        self._headers = dict(headers or {})
        self._classify = classify
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"ProviderClient(url={_redacted_url(self.url)!r}, api_key_env={self.api_key_env!r})"

    def headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ModelError(
                    f"environment variable {self.api_key_env} (the API key) is not set", model=self.model_name
                )
            headers.update(self._auth(key))
        return headers

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A client left behind by a finished loop cannot be closed from this one; drop it.
            self._client = httpx.AsyncClient(transport=self._transport, timeout=self.timeout_s)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()

    async def post_json(self, body: Mapping[str, Any], *, timeout_s: float | None = None) -> Any:
        """The decoded JSON answer; the whole exchange must finish within the time limit."""
        limit = timeout_s or self.timeout_s
        headers = self.headers()
        try:
            async with asyncio.timeout(limit):
                response = await self._http().post(self.url, json=body, headers=headers, timeout=limit)
        except TimeoutError as exc:
            raise ModelTimeout(f"no answer within {limit:g}s", model=self.model_name) from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, limit) from exc
        if not response.is_success:
            raise self._status_error(response.status_code, response.text, response.headers)
        try:
            return response.json()
        except ValueError as exc:
            raise ModelError(
                f"HTTP {response.status_code} answer is not JSON: {self._scrub(response.text[:200])!r}",
                model=self.model_name,
            ) from exc

    async def stream_lines(
        self, body: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> AsyncGenerator[str, None]:
        """The response's lines as they arrive; each read must finish within the time limit."""
        limit = timeout_s or self.timeout_s
        headers = self.headers()
        try:
            async with self._http().stream(
                "POST", self.url, json=body, headers=headers, timeout=limit
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise self._status_error(response.status_code, response.text, response.headers)
                async for line in response.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, limit) from exc

    def _status_error(self, status_code: int, text: str, headers: Mapping[str, str]) -> ModelError:
        body = self._scrub(text[:4000])
        kind, detail = self._classify(body)
        return http_error(
            status_code,
            body,
            model=self.model_name,
            headers=headers,
            api_key_env=self.api_key_env,
            kind=kind,
            detail=detail,
        )

    def _transport_error(self, exc: httpx.HTTPError, limit: float) -> ModelError:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            return ModelTimeout(f"no answer within {limit:g}s ({reason})", model=self.model_name)
        if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
            return ModelUnavailable(f"connection failed ({reason})", model=self.model_name)
        # UnsupportedProtocol, LocalProtocolError, DecodingError: a bad URL or a broken answer.
        return ModelError(f"request failed ({reason})", model=self.model_name)

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            text = text.replace(key, "[redacted]")
        return _KEY_LIKE.sub("sk-[redacted]", text)


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
            f"base_url={_redacted_url(self.base_url)!r})"
        )
