"""Which requests may share a cached response: the partition, the exact key, the question.

Two requests share an answer only inside one tenant and one *partition*: the same route, the same
model parameters, the same earlier turns, the same filters (and the same user when the route's
cache is per user). Within it the exact tier matches the normalised last message; the semantic
tier compares the question (a grounded route's question, a gateway's last user message).

What a grounded entry may be served to is not part of any key: the caller's right to read the
chunks behind it is checked against the index at lookup (``pipeline/cache_stage.py``). Keys copy
no group list, so a caller who loses a group loses the hit at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stanchion.cache.codec import TENANT_PATTERN
from stanchion.core.filters import SearchFilter
from stanchion.spec import CacheSpec, Spec
from stanchion.types import Message

_SPACE = re.compile(r"\s+")
SEMANTIC_MAX_WORDS = 64  # longer questions are looked up in the exact tier only


def cache_tenant(tenant: str) -> str:
    """The tenant as the backends key it: the name itself when it is a plain name (letters,
    digits, ``_``, ``-``), else a hash of it. Tenants come from API keys, which allow any name;
    the backends allow only those characters, so that no name can forge another's keys."""
    if TENANT_PATTERN.fullmatch(tenant) and not tenant.startswith("_"):
        return tenant
    # Hashed names start with "_", so a plain name that does too is hashed as well: else the
    # tenant "_<those 40 hex digits>" would hold the keys of the odd name they hash.
    return "_" + hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:40]


def normalise(text: str) -> str:
    """NFC, whitespace collapsed, ends trimmed: what two typings of one question share. Case and
    punctuation are kept ("US" is not "us"; "3.5" is not "35"); so are compatibility characters,
    which NFKC would fold ("10²" is not "102")."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def exact_text(text: str) -> str:
    """What the exact tier compares: ``normalise`` within each line, but line breaks and each
    line's indentation kept (in code, YAML or a table they change what is asked)."""
    lines = unicodedata.normalize("NFC", text).splitlines()
    kept = [line[: len(line) - len(line.lstrip(" \t"))] + _SPACE.sub(" ", line).strip() for line in lines]
    return "\n".join(line for line in kept if line.strip()).strip()


def semantic_question(text: str) -> str:
    """The question the semantic tier compares by meaning, or "" (exact tier only): a prompt of
    several lines (code, a table, a pasted document) or of more than ``SEMANTIC_MAX_WORDS`` words is
    not a question a paraphrase can stand for, and its embedding and the near-miss check see
    mostly the text it shares with another prompt, not what it asks."""
    if len(text.strip().splitlines()) > 1:
        return ""
    question = normalise(text)
    return question if len(question.split(" ")) <= SEMANTIC_MAX_WORDS else ""


def _digest(value: object) -> str:
    encoded = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def message_json(message: Message) -> dict[str, Any]:
    """A message as the keys see it: its role, normalised text, tool calls and their ids."""
    return {
        "role": message.role,
        "content": exact_text(message.content),
        "tool_calls": [
            [c.id, c.name, c.raw_arguments or json.dumps(dict(c.arguments), sort_keys=True)]
            for c in message.tool_calls
        ],
        "tool_call_id": message.tool_call_id,
        "name": message.name,
    }


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """One request's identity in the cache, made by its endpoint when its input is checked.

    ``question`` is what the semantic tier compares ("" keeps the request to the exact tier);
    ``where`` (grounded routes) is what the caller may read: every chunk behind an entry must pass
    it. ``bypass``: the caller asked for a fresh answer (it is still stored); ``store=False``: the
    caller asked that nothing of this request be kept (``Cache-Control: no-store``)."""

    route: str
    tenant: str
    partition: str
    exact_key: str
    question: str
    settings: CacheSpec
    grounded: bool
    where: SearchFilter | None = None
    bypass: bool = False
    store: bool = True


def route_config(spec: Spec, route: str) -> str:
    """The digest of what a route's answers depend on besides the request: the route, its
    models' settings (a new model or prompt setting must not be served the old one's answers)
    and, for a grounded route, the answer, retrieval and embedding settings. It goes into every
    partition, so a changed spec starts from an empty cache instead of serving stale answers."""
    chosen = spec.routes[route]
    names = [*chosen.models, *(n for chain in chosen.tiers.values() for n in chain)]
    config: dict[str, Any] = {
        "route": chosen.model_dump(mode="json", exclude={"cache"}),
        "models": {n: spec.models[n].model_dump(mode="json") for n in names if n in spec.models},
    }
    if chosen.grounded:
        config["answer"] = spec.answer.model_dump(mode="json")
        config["retrieval"] = spec.retrieval.model_dump(mode="json")
        config["embedding"] = spec.embedding.model_dump(mode="json", include={"provider", "model"})
    return _digest(config)


def grounded_request(
    *,
    route: str,
    config: str,
    settings: CacheSpec,
    tenant: str,
    user: str,
    question: str,
    history: Sequence[Message],
    params: Mapping[str, Any],
    where: SearchFilter,
    bypass: bool = False,
    store: bool = True,
) -> CacheRequest:
    """A grounded route's request: ``params`` holds what changes retrieval or generation besides
    the question (k, the caller's own filters); the caller's tenant and groups are in ``where``."""
    partition = _digest(
        {
            "kind": "grounded",
            "route": route,
            "config": config,
            "user": user if settings.scope == "user" else None,
            "history": [message_json(m) for m in history],
            "params": params,
        }
    )
    return CacheRequest(
        route,
        cache_tenant(tenant),
        partition,
        _digest([partition, exact_text(question)]),
        semantic_question(question) if settings.semantic is not False else "",
        settings,
        True,
        where,
        bypass,
        store,
    )


def gateway_request(
    *,
    route: str,
    config: str,
    settings: CacheSpec,
    tenant: str,
    user: str,
    messages: Sequence[Message],
    params: Mapping[str, Any],
    bypass: bool = False,
    store: bool = True,
) -> CacheRequest:
    """A gateway route's request: every turn before the last is part of the partition, with the
    model parameters (``params``: temperature, limits, stop, tools); the last turn is the key.
    Only a last user message, with no tools offered, is compared in the semantic tier: a tool
    call's arguments name things a paraphrase may not."""
    *earlier, last = messages
    partition = _digest(
        {
            "kind": "gateway",
            "route": route,
            "config": config,
            "user": user if settings.scope == "user" else None,
            "earlier": [message_json(m) for m in earlier],
            "params": params,
        }
    )
    # Off unless the route asks for it: a gateway miss would embed the question before asking the
    # model (~15 ms of CPU), where a grounded route's retrieval embeds it anyway.
    semantic = (
        settings.semantic is True and last.role == "user" and not params.get("tools") and not last.tool_calls
    )
    question = semantic_question(last.content) if semantic else ""
    exact_key = _digest([partition, message_json(last)])
    return CacheRequest(
        route, cache_tenant(tenant), partition, exact_key, question, settings, False, None, bypass, store
    )
