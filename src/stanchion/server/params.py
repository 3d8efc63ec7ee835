"""Parameters several endpoints share, and the rule for text, declared once so they read and
validate alike.

Text from outside follows one rule, ``types.unstorable``: no NUL character (PostgreSQL text cannot
hold one) and no lone surrogate. A parameter declares it with ``Storable`` after its
``Query``/``Path``/``Field``, which also puts it in the schema; a model's validator calls
``storable``. A request that breaks it is a 422 naming the field, on every backend alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Query
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from stanchion.server.errors import APIError
from stanchion.types import unstorable

# The rule in the schema, for clients and fuzzers (a JSON Schema string cannot hold a lone
# surrogate to begin with, so only NUL needs saying).
NUL_FREE: dict[str, Any] = {"pattern": "^[^\\u0000]*$"}


def storable(text: str) -> str:
    """``text``, or the validation error (a 422 naming the field) that says why no store holds it."""
    if problem := unstorable(text):
        raise PydanticCustomError("unstorable_text", "{problem}", {"problem": problem})
    return text


class _Storable:
    """Annotation metadata: ``storable`` as an after-validator, and ``NUL_FREE`` in the schema
    unless the field has a pattern of its own (which then excludes NUL itself)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_storable_or_none, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        found = handler(schema)
        return found if "pattern" in found else {**found, **NUL_FREE}


def _storable_or_none(text: str | None) -> str | None:
    return None if text is None else storable(text)


Storable = _Storable()

# Unix seconds, as OpenAI's usage API takes them (`date -d 2026-11-01 +%s`).
Since = Annotated[float | None, Query(ge=0, le=1e11, description="only records at or after this Unix time")]
Until = Annotated[float | None, Query(ge=0, le=1e11, description="only records before this Unix time")]
# How many items a list page holds; one more is read to tell whether another page follows.
PageLimit = Annotated[int, Query(ge=1, le=1000)]


CONVERSATION_HEADER = "X-Stanchion-Conversation"
_CONVERSATION = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def conversation_id(headers: Mapping[str, str]) -> str:
    """The conversation a request names (``X-Stanchion-Conversation``), "" for none; a 422 for
    an id that is not 1-128 letters, digits, ``.``, ``_``, ``:`` or ``-``. Read from the headers,
    not declared as a parameter: the gateway's fast stream path calls the endpoint directly."""
    value = headers.get(CONVERSATION_HEADER.lower())
    if value is None:
        return ""
    if not _CONVERSATION.fullmatch(value):
        raise APIError(
            422,
            "invalid_request",
            f"{CONVERSATION_HEADER}: give 1-128 letters, digits, '.', '_', ':' or '-'",
            param=CONVERSATION_HEADER,
        )
    return value
