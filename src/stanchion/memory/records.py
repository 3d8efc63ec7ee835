"""Value types of long-term memory: a stored ``MemoryRecord`` and an extracted ``Candidate``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["fact", "preference"]
KINDS: tuple[Kind, ...] = ("fact", "preference")

_SLOT_PART = re.compile(r"[^a-z0-9]+")


def slot_name(kind: Kind, *parts: str) -> str:
    """The normalised slot of a memory: ``preference:programming_language``, ``fact:home_city``,
    ``fact:allergy:peanuts``. One slot holds one current memory per user."""
    words = [_SLOT_PART.sub("_", p.lower()).strip("_") for p in parts]
    return ":".join([kind, *(w for w in words if w)])


def slot_label(slot: str) -> str:
    """Words of a slot for embedding and keyword search: ``fact:home_city`` -> ``home city``."""
    return " ".join(slot.split(":")[1:]).replace("_", " ")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A fact or preference an extractor found in what the user said, not yet stored.

    ``text`` is the statement as the user made it, trimmed to the clause ("I now prefer Rust");
    ``value`` the thing it is about ("Rust"); ``negated`` marks "I no longer ..." statements,
    which replace the slot's memory like any other change."""

    kind: Kind
    slot: str
    text: str
    value: str = ""
    negated: bool = False


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """A stored memory of one (tenant, user). ``superseded_by`` is the id of the memory that
    replaced it (None while it is current); replaced memories are kept as history."""

    id: str
    tenant: str
    user: str
    kind: Kind
    slot: str
    text: str
    value: str
    created_at: float
    updated_at: float
    source: str = ""
    negated: bool = False
    superseded_by: str | None = None
    superseded_at: float | None = None
    score: float = field(default=0.0, compare=False)

    @property
    def current(self) -> bool:
        return self.superseded_by is None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "memory",
            "kind": self.kind,
            "slot": self.slot,
            "text": self.text,
            "value": self.value,
            "negated": self.negated,
            "source": self.source,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "current": self.current,
            "superseded_by": self.superseded_by,
            "superseded_at": self.superseded_at,
        }
