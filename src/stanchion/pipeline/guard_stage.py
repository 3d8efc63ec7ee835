"""The guards as pipeline stages: ``InputGuard`` at ``check_input``, ``OutputGuard`` at
``check_output``, and the session's end at ``account``.

Input, for a call whose endpoint gave it ``inputs`` (the caller's messages):

1. Prompt injection (``guards.injection``): each user message under the ``input`` policy, each
   tool result (``role: tool``) under ``tool_results``: ``flag`` records it, ``strip`` cuts the
   attacking sentences out (a user message whose attack cannot be cut out is refused; a tool
   result is withheld), ``block`` refuses the request with a 400 ``prompt_injection`` before any
   model or tool sees it. Verdicts are remembered by text, so a conversation's history is not
   checked again each turn.
2. PII (``guards.pii``): the call's ``PiiSession`` is opened and made current, so every remote
   model call the request makes masks through it (``guards/masking_model.py``); the input is
   checked at once, so a detector that fails or times out refuses the request before anything is
   retrieved or sent (503 ``guard_unavailable``). The audit log's copy of the question
   (``call.query``) is masked.

Output, after a call that succeeded: an answer that holds restored PII is marked (the cache never
stores it); the output checks (``guards.output``) run on it; what the guards found goes in the
response (``stanchion.guards``) and the audit record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stanchion.answer.answerer import Retrieved
from stanchion.errors import GuardError, InputBlocked
from stanchion.guards.injection_check import WITHHELD_TOOL_RESULT
from stanchion.guards.output_checks import redact, system_prompt_leak, unexplained_pii
from stanchion.guards.pii import PiiDetector, PiiSpan
from stanchion.guards.session import CURRENT, PiiGuard, PiiSession, message_strings
from stanchion.guards.vault import VaultScope
from stanchion.guards.vault_store import VaultStore
from stanchion.pipeline.core import Call
from stanchion.spec import InjectionAction, OutputGuardSpec
from stanchion.types import Message

if TYPE_CHECKING:
    from stanchion.app import App

log = logging.getLogger("stanchion.guards")

WITHHELD = "The answer was withheld by this server's output checks."


class InputGuard:
    def __init__(self, app: App) -> None:
        self.injection = app.injection_check
        self.pii: PiiGuard | None = app.pii_guard
        self._app = app

    def vaults(self) -> VaultStore:
        return self._app.vault_store

    async def __call__(self, call: Call) -> None:
        # The two checks run side by side (each in a worker thread): the injection classifier
        # embeds the text while the PII detector runs its NER. PII is detected on the input as
        # sent; a stripped message is detected again when a model is called with it.
        injection = self.injection is not None and bool(call.inputs)
        # A search sends nothing to a model, but its query goes in the audit log, masked.
        pii = self.pii is not None and (bool(call.inputs) or call.action == "search")
        checked, session = await asyncio.gather(
            asyncio.to_thread(self._check_injection, call) if injection else _nothing(),
            self._detect_input(call) if pii else _nothing(),
            return_exceptions=True,
        )
        for result in (checked, session):  # an injection refusal first: it is the caller's to fix
            if isinstance(result, BaseException):
                raise result
        if isinstance(checked, tuple):
            call.inputs = checked
        if isinstance(session, PiiSession):
            # Made current here, in the request's own context (not the task gather ran it in), so
            # every model call of the request finds it.
            call.pii = session
            CURRENT.set(session)
            if call.query:
                call.query = await session.mask_text(call.query)

    def _check_injection(self, call: Call) -> tuple[Message, ...]:
        assert self.injection is not None
        spec = self.injection.spec
        checked: list[Message] = []
        for i, message in enumerate(call.inputs):
            action: InjectionAction = (
                spec.input
                if message.role == "user"
                else spec.tool_results
                if message.role == "tool"
                else "off"
            )
            if action == "off" or not message.content.strip():
                checked.append(message)
                continue
            verdict = self.injection.check(message.content)
            if not verdict.flagged:
                checked.append(message)
                continue
            finding: dict[str, Any] = {
                "guard": "injection",
                "message": i,
                "role": message.role,
                "score": round(verdict.score, 3),
                "reasons": list(verdict.reasons),
            }
            content = message.content
            if action == "strip":
                stripped = self.injection.strip(content)
                if stripped is None and message.role == "user":
                    action = "block"  # nothing of it can be kept: refused, as under block
                content = stripped if stripped is not None else WITHHELD_TOOL_RESULT
            if action == "block":
                log.warning("guard.injection_blocked", extra={"reasons": ",".join(verdict.reasons)})
                raise InputBlocked(
                    f"messages[{i}]: refused as a prompt injection ({', '.join(verdict.reasons)}); "
                    "ask without instructions aimed at the assistant's rules",
                    reasons=verdict.reasons,
                )
            finding["action"] = "stripped" if action == "strip" else "flagged"
            call.guards.append(finding)
            checked.append(replace(message, content=content) if content != message.content else message)
        return tuple(checked)

    async def _detect_input(self, call: Call) -> PiiSession:
        """The call's session, its input detected once: a detector that cannot check refuses
        here, before anything is retrieved or sent."""
        assert self.pii is not None
        context = call.context
        if call.conversation:  # the conversation's pseudonyms, kept between its calls
            scope = VaultScope(context.tenant, call.conversation, context.user)
            session = self.pii.session(vault=await self.vaults().vault(scope))
        else:
            scope = VaultScope(context.tenant, context.request_id or "req-" + uuid.uuid4().hex, context.user)
            session = self.pii.session(scope)
        texts = message_strings(call.inputs)
        if call.query:
            texts.append(call.query)
        await session.detect(texts)
        return session


async def _nothing() -> None:
    return None


class OutputGuard:
    """``check_output``: an answer holding restored PII is marked (never cached); the output
    checks of ``guards.output`` run on it; what the guards found goes in ``outcome.detail``.

    A streamed answer has been sent when its stream ends, which is when this runs: its findings
    are recorded (audit), never acted on. A one-piece answer is acted on: ``redact`` replaces
    each unexplained PII value by ``[REDACTED <TYPE>]``; ``block`` withholds the answer (its text
    becomes ``WITHHELD``, citations dropped, finish reason ``content_filter`` as OpenAI's filter
    reports it)."""

    def __init__(self, app: App) -> None:
        self.spec = app.spec.guards.output
        self.abstain_text = app.spec.answer.abstain_text
        pii = app.pii_guard
        self._detector = pii.detector if pii is not None else None
        self._timeout_s = pii.timeout_s if pii is not None else 2.0

    async def __call__(self, call: Call) -> None:
        if call.pii is not None and call.pii.masked_any:
            call.pii_restored = True
            call.guards.append({"guard": "pii", "action": "masked", "values": len(call.pii.vault)})
        if isinstance(call.retrieved, Retrieved) and call.retrieved.flagged:  # guards.injection.sources
            chunks = list(call.retrieved.flagged)
            call.guards.append({"guard": "injection", "where": "sources", "chunks": chunks})
        if self.spec is not None and call.outcome.text and not call.served:
            await self._check(call, self.spec)
        if call.guards:
            call.outcome.detail["guards"] = list(call.guards)

    async def _check(self, call: Call, spec: OutputGuardSpec) -> None:
        outcome = call.outcome
        prompts, canaries, allowed = _prompt_parts(call)
        if spec.system_prompt != "off":
            leak = system_prompt_leak(outcome.text, prompts, canaries=canaries, quotable=(self.abstain_text,))
            if leak is not None:
                self._act(
                    call,
                    spec.system_prompt,
                    {"guard": "output", "check": "system_prompt", "reason": leak.reason},
                )
                if spec.system_prompt == "block" and not call.stream:
                    return
        if spec.pii != "off":
            spans = await self._detect(outcome.text)
            unexplained = unexplained_pii(spans, allowed)
            if unexplained:
                finding = {
                    "guard": "output",
                    "check": "pii",
                    "entities": sorted({s.entity for s in unexplained}),
                    "values": len(unexplained),
                }
                if spec.pii == "redact" and not call.stream:
                    outcome.text = redact(outcome.text, unexplained)
                    call.guards.append({**finding, "action": "redacted"})
                else:
                    self._act(call, spec.pii, finding)

    def _act(self, call: Call, policy: str, finding: dict[str, Any]) -> None:
        if policy == "block" and not call.stream:
            call.outcome.text = WITHHELD
            call.outcome.finish = "content_filter"
            call.outcome.tool_calls = ()
            call.outcome.detail.pop("citations", None)
            call.guards.append({**finding, "action": "blocked"})
            log.warning("guard.output_blocked", extra={"check": finding.get("check", "")})
        else:
            call.guards.append({**finding, "action": "flagged"})

    async def _detect(self, text: str) -> list[PiiSpan]:
        if self._detector is None:
            self._detector = PiiDetector()
        detector = self._detector
        try:
            return await asyncio.wait_for(asyncio.to_thread(detector.detect, text), self._timeout_s)
        except TimeoutError:
            raise GuardError(
                f"the answer could not be checked for PII within {self._timeout_s:g} s; it was withheld"
            ) from None


def _prompt_parts(call: Call) -> tuple[list[str], list[str], list[str]]:
    """(system prompts, canaries, texts that explain PII) of a call: the caller's system
    messages, and a grounded answer's own prompt with its nonce; the caller's input and the
    prompt's sources (what the caller may read)."""
    prompts = [m.content for m in call.inputs if m.role == "system" and m.content]
    allowed = [m.content for m in call.inputs if m.content] + call.evidence
    allowed += [
        a for m in call.inputs for c in m.tool_calls for a in (c.raw_arguments, json.dumps(dict(c.arguments)))
    ]
    canaries: list[str] = []
    if isinstance(call.retrieved, Retrieved):
        packed = call.retrieved.packed
        prompts += [m.content for m in packed.messages if m.role == "system"]
        allowed += [m.content for m in packed.messages if m.role != "system"]
        if packed.nonce:
            canaries.append(packed.nonce)
    return prompts, canaries, allowed


class SessionEnd:
    """``account``: a conversation's vault is saved for its next call (an error is logged: the
    answer has been given, and the next call masks its history again), and the call's session is
    no longer current."""

    def __init__(self, app: App) -> None:
        self._app = app

    async def __call__(self, call: Call) -> None:
        if call.pii is None:
            return
        CURRENT.set(None)
        if call.conversation and call.pii.masked_any:
            try:
                await self._app.vault_store.save(call.pii.vault)
            except GuardError as exc:
                log.warning("guard.vault_save_failed", extra={"error": str(exc)})
