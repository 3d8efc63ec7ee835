"""Query parameters several endpoints share, declared once so they read and validate alike."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

# Unix seconds, as OpenAI's usage API takes them (`date -d 2026-11-01 +%s`).
Since = Annotated[float | None, Query(ge=0, le=1e11, description="only records at or after this Unix time")]
Until = Annotated[float | None, Query(ge=0, le=1e11, description="only records before this Unix time")]
# How many items a list page holds; one more is read to tell whether another page follows.
PageLimit = Annotated[int, Query(ge=1, le=1000)]
