"""MaskingModel and PiiSession: what a wrapped model receives, and what its caller gets back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from stanchion.app import build
from stanchion.errors import GuardError
from stanchion.guards.masking_model import MaskingModel
from stanchion.guards.pii import PiiDetector, PiiSpan
from stanchion.guards.session import CURRENT, PiiGuard
from stanchion.guards.vault import VaultScope
from stanchion.models.base import ChatOptions
from stanchion.spec import Spec
from stanchion.testing.fake_chat import FakeChatModel, Tokens
from stanchion.types import Completion, Message, StreamEvent, ToolCall

EMAIL = "jane.roe@example.com"


def _guard(**kwargs: Any) -> PiiGuard:
    return PiiGuard(PiiDetector(use_ner=False), **kwargs)  # the pattern recognizers: no model load


def _sent(model: FakeChatModel) -> str:
    return "\n".join(m.content for call in model.calls for m in call.messages)


def test_a_pseudonym_cut_across_stream_pieces_is_restored_whole() -> None:
    inner = FakeChatModel("up", [Tokens(["Sent to <EMAIL_", "ADDRESS", "_1", ">", ", done."])])
    model = MaskingModel(inner, _guard())

    async def main() -> list[StreamEvent]:
        CURRENT.set(_guard().session(VaultScope("t", "c")))
        return [e async for e in model.stream([Message("user", f"Mail {EMAIL} please")])]

    events = asyncio.run(main())
    assert "".join(e.text for e in events) == f"Sent to {EMAIL}, done."
    # No piece ever carries a half-restored pseudonym.
    assert all("<EMAIL" not in e.text and "ADDRESS" not in e.text for e in events)
    assert EMAIL not in _sent(inner) and "<EMAIL_ADDRESS_1>" in _sent(inner)


def test_stream_pieces_restore_too() -> None:
    inner = FakeChatModel("up", [Tokens(["<EMAIL_ADDRESS", "_1> ok"])])
    model = MaskingModel(inner, _guard())

    async def main() -> str:
        pieces = [p async for p in model.stream_pieces([Message("user", f"to {EMAIL}")])]
        return "".join(p if isinstance(p, str) else p.text for p in pieces)

    assert asyncio.run(main()) == f"{EMAIL} ok"


def test_without_a_current_session_a_call_still_masks() -> None:
    inner = FakeChatModel("up", ["Reply to <EMAIL_ADDRESS_1>."])
    model = MaskingModel(inner, _guard())
    completion = asyncio.run(model.complete([Message("user", f"My mail is {EMAIL}")]))
    assert completion.text == f"Reply to {EMAIL}."
    assert EMAIL not in _sent(inner)


class _ToolModel(FakeChatModel):
    async def complete(self, messages: Any, options: ChatOptions | None = None) -> Completion:
        await super().complete(messages, options)
        return Completion("", "up", tool_calls=(ToolCall("c1", "lookup", {"who": ["<EMAIL_ADDRESS_1>"]}),))


def test_tool_call_arguments_are_restored_and_tool_results_masked() -> None:
    inner = _ToolModel("up")
    model = MaskingModel(inner, _guard())
    messages = [
        Message("user", "find the customer"),
        Message("assistant", "", tool_calls=(ToolCall("c0", "search", {"q": EMAIL}),)),
        Message("tool", f"customer {EMAIL} found", tool_call_id="c0"),
    ]
    completion = asyncio.run(model.complete(messages))
    assert completion.tool_calls[0].arguments == {"who": [EMAIL]}
    sent = inner.calls[0].messages
    assert EMAIL not in sent[2].content and EMAIL not in str(sent[1].tool_calls[0].arguments)


def test_a_detector_error_fails_closed_and_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: PiiDetector, text: str) -> list[PiiSpan]:
        raise GuardError("PII detection failed")

    monkeypatch.setattr(PiiDetector, "detect", broken)
    inner = FakeChatModel("up", ["never"])
    with pytest.raises(GuardError):
        asyncio.run(MaskingModel(inner, _guard()).complete([Message("user", "hello")]))
    assert inner.calls == []


def test_a_slow_detector_times_out_and_the_session_stays_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    original = PiiDetector.detect

    def slow(self: PiiDetector, text: str) -> list[PiiSpan]:
        time.sleep(0.3)
        return original(self, text)

    monkeypatch.setattr(PiiDetector, "detect", slow)
    session = _guard(timeout_s=0.05).session()

    async def main() -> None:
        with pytest.raises(GuardError, match="did not finish within"):
            await session.mask_text("hello there")
        with pytest.raises(GuardError):  # a failed session refuses every later call
            await session.mask_text("another")

    asyncio.run(main())


def test_the_same_value_keeps_its_pseudonym_across_calls_of_a_session() -> None:
    inner = FakeChatModel("up", ["a", "b"])
    model = MaskingModel(inner, _guard())

    async def main() -> None:
        CURRENT.set(_guard().session())
        await model.complete([Message("user", f"first {EMAIL}")])
        await model.complete([Message("user", f"again {EMAIL} and bob@example.org")])

    asyncio.run(main())
    first, second = (c.messages[0].content for c in inner.calls)
    assert first == "first <EMAIL_ADDRESS_1>"
    assert second == "again <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2>"


@pytest.mark.parametrize("exempt", [True, False])
def test_local_models_are_exempt_by_spec(tmp_path: Path, exempt: bool) -> None:
    spec = Spec.model_validate(
        {
            "models": {
                "extractive": {"provider": "extractive"},
                "remote": {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
            },
            "routes": {"default": {"models": ["remote", "extractive"]}},
            "guards": {"pii": {"exempt_local": exempt}},
            "base_dir": tmp_path,
        }
    )
    app = build(spec)
    assert isinstance(app.models.model("remote"), MaskingModel)
    assert isinstance(app.models.model("extractive"), MaskingModel) is not exempt
    assert not isinstance(build(Spec(base_dir=tmp_path)).models.model("extractive"), MaskingModel)
