"""The ``Extractor`` protocol: what the user said -> facts and preferences worth keeping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stanchion.memory.records import Candidate
from stanchion.types import Message


class Extractor(Protocol):
    """One method: the candidates a conversation's turns state about the user (only the user's
    own messages count). ``name`` says which extractor wrote a memory, in logs."""

    name: str

    async def extract(self, messages: Sequence[Message]) -> list[Candidate]: ...
