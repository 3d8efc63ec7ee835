"""``InjectionCheck``: the injection detector as the request pipeline and the agents use it, with
the policy for a text a caller or a tool sent.

The detector runs on the app's query embedder (a question's vector is then shared with retrieval
and the response cache). Verdicts are remembered by text, so a conversation's history and a tool's
repeated result are not checked again. ``screen_tool_result`` applies ``tool_results`` to a tool's
output before a model reads it: ``strip`` cuts the attacking sentences (a result with nothing left
is withheld), ``block`` withholds it, ``flag`` passes it on; each with a finding to record.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from stanchion.core.embed import Embedder
from stanchion.guards.injection import InjectionDetector, InjectionVerdict
from stanchion.spec import InjectionAction, InjectionGuardSpec

__all__ = ["WITHHELD_TOOL_RESULT", "InjectionCheck"]

log = logging.getLogger("stanchion.guards")

_VERDICTS = 4096  # verdicts remembered by text
WITHHELD_TOOL_RESULT = "[tool result withheld: it was flagged as a prompt injection]"
_ONE_WINDOW = 1000  # a text this short is one embedding window: its query vector serves


class InjectionCheck:
    def __init__(self, spec: InjectionGuardSpec, embedder: Callable[[], Embedder]) -> None:
        self.spec = spec
        self._embedder = embedder
        self._detector: InjectionDetector | None = None
        self._verdicts: OrderedDict[str, InjectionVerdict] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def detector(self) -> InjectionDetector:
        if self._detector is None:
            embedder = self._embedder()
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
        # The question's vector, shared with retrieval; the rules alone need none (and a remote
        # embedder, which the classifier was not fit on, is then never asked).
        short = detector.uses_classifier and len(text) <= _ONE_WINDOW
        vector = self._embedder().embed([text])[0] if short else None
        verdict = detector.check(text, vector=vector)
        with self._lock:
            self._verdicts[text] = verdict
            while len(self._verdicts) > _VERDICTS:
                self._verdicts.popitem(last=False)
        return verdict

    def strip(self, text: str) -> str | None:
        return self.detector.strip_attacks(text)

    def screen_tool_result(self, tool: str, text: str) -> tuple[str, dict[str, Any] | None]:
        """What a model may read of a tool's result under ``tool_results``, and the finding (None
        when nothing was flagged). Blocking one result does not stop a run: it is withheld."""
        action: InjectionAction = self.spec.tool_results
        if action == "off" or not text.strip():
            return text, None
        verdict = self.check(text)
        if not verdict.flagged:
            return text, None
        finding: dict[str, Any] = {
            "guard": "injection",
            "where": "tool_result",
            "tool": tool,
            "score": round(verdict.score, 3),
            "reasons": list(verdict.reasons),
        }
        if action == "flag":
            return text, {**finding, "action": "flagged"}
        stripped = self.strip(text) if action == "strip" else None
        if stripped is None:
            return WITHHELD_TOOL_RESULT, {**finding, "action": "withheld"}
        return stripped, {**finding, "action": "stripped"}
