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
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stanchion.errors import InputBlocked
from stanchion.guards.injection import InjectionDetector, InjectionVerdict
from stanchion.guards.session import CURRENT, PiiGuard, PiiSession, message_strings
from stanchion.guards.vault import VaultScope
from stanchion.pipeline.core import Call
from stanchion.spec import InjectionAction, InjectionGuardSpec
from stanchion.types import Message

if TYPE_CHECKING:
    from stanchion.app import App

log = logging.getLogger("stanchion.guards")

_VERDICTS = 4096  # injection verdicts remembered by text
WITHHELD_TOOL_RESULT = "[tool result withheld: it was flagged as a prompt injection]"


class InjectionCheck:
    """The injection detector on the app's query embedder (a question's vector is then shared
    with retrieval and the cache), with verdicts remembered by text."""

    def __init__(self, app: App, spec: InjectionGuardSpec) -> None:
        self.spec = spec
        self._app = app
        self._detector: InjectionDetector | None = None
        self._verdicts: OrderedDict[str, InjectionVerdict] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def detector(self) -> InjectionDetector:
        if self._detector is None:
            embedder = self._app.query_embedder
            try:
                self._detector = InjectionDetector(embedder, threshold=self.spec.threshold)
            except Exception:  # an embedder the classifier was not fit on: the rules alone
                log.warning("guard.injection_rules_only", extra={"embedder": embedder.name})
                self._detector = InjectionDetector(threshold=self.spec.threshold, classifier=False)
        return self._detector

    def check(self, text: str) -> InjectionVerdict:
        with self._lock:
            known = self._verdicts.get(text)
        if known is not None:
            return known
        detector = self.detector
        vector = self._app.query_embedder.embed([text])[0] if len(text) <= 1000 else None
        verdict = detector.check(text, vector=vector)
        with self._lock:
            self._verdicts[text] = verdict
            while len(self._verdicts) > _VERDICTS:
                self._verdicts.popitem(last=False)
        return verdict

    def strip(self, text: str) -> str | None:
        return self.detector.strip_attacks(text)


class InputGuard:
    def __init__(self, app: App) -> None:
        guards = app.spec.guards
        self.injection = InjectionCheck(app, guards.injection) if guards.injection is not None else None
        self.pii: PiiGuard | None = app.pii_guard

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
    """Marks answers holding restored PII, and records what the guards found."""

    async def __call__(self, call: Call) -> None:
        if call.pii is not None and call.pii.masked_any:
            call.pii_restored = True
            call.guards.append({"guard": "pii", "action": "masked", "values": len(call.pii.vault)})
        if call.guards:
            call.outcome.detail["guards"] = list(call.guards)


async def end_session(call: Call) -> None:
    """``account``: the call's PII session is no longer current (its vault is dropped with it)."""
    if call.pii is not None:
        CURRENT.set(None)
