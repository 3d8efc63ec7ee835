"""Whose request is being served: one ``RequestContext``, made once at the edge.

The server makes it from the caller's API key (``server/deps.request_context``), the CLI from the
spec's default tenant. It travels explicitly through the request pipeline (``stanchion.pipeline``)
to search, the answerer and every model call (``ChatOptions.context``), so a stage that needs to
know whose request it serves (a tenant's cache, a tenant's guard policy) reads it here. It sits on
the ground floor, below ``models``, so that a model call can carry it.
"""

from __future__ import annotations

from dataclasses import dataclass

# The tenant of the CLI's requests, and of a source that names none (``SourceSpec.tenant``).
DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """``groups`` is None where nothing restricts the caller to groups (the CLI without
    ``--group``); ``deadline`` is a ``time.monotonic()`` instant, None for none; ``budget`` the
    tokens the request was admitted with, None where nothing counts them."""

    tenant: str
    user: str = ""
    groups: frozenset[str] | None = None
    scopes: frozenset[str] = frozenset()
    request_id: str = ""
    route: str = ""
    deadline: float | None = None
    budget: int | None = None
    key_id: str = ""  # the API key the request is counted against; "" outside the server
