"""What the cache did for one request: the response's ``cache`` field, header and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Status = Literal["hit", "miss", "bypass", "unavailable"]
Tier = Literal["exact", "semantic", ""]
HEADER = "X-Stanchion-Cache"


@dataclass(frozen=True, slots=True)
class CacheResult:
    """``status``: served from the cache (``hit``, with its ``tier``), not found (``miss``), not
    looked up at the caller's request (``bypass``), or the cache's backend failed and the request
    went on without it (``unavailable``). ``near_misses`` names each similar entry the matcher
    refused and why; ``stale`` counts entries refused because a chunk behind them changed, went
    away or is not the caller's to read."""

    status: Status
    tier: Tier = ""
    similarity: float | None = None
    near_misses: tuple[str, ...] = ()
    stale: int = 0
    tokens_saved: int = 0
    cost_saved_usd: float = 0.0
    # A miss's question vector, kept for storing the fresh answer (not part of any response).
    vector: npt.NDArray[np.float32] | None = field(default=None, compare=False, repr=False)

    @property
    def header(self) -> str:
        """The ``X-Stanchion-Cache`` value: ``hit-exact``, ``hit-semantic``, ``miss``, ``bypass``,
        ``unavailable``."""
        return f"hit-{self.tier}" if self.status == "hit" else self.status

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"hit": self.status == "hit", "status": self.status}
        if self.status == "hit":
            out["tier"] = self.tier
            out["tokens_saved"] = self.tokens_saved
            out["cost_saved_usd"] = self.cost_saved_usd
            if self.similarity is not None:
                out["similarity"] = round(self.similarity, 4)
        # Not on a miss: the nearest entry may be one the caller may not read, and its cosine
        # would say that someone outside the caller's groups asked this and was answered.
        return out
