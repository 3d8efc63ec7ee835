"""How a validation failure is worded: the field at fault first, union members folded into one."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from stanchion.server.errors import APIError, invalid_request


class _Message(BaseModel):
    role: str
    content: str


class _Body(BaseModel):
    metadata: dict[str, str | int | float | bool] = {}
    messages: list[_Message] = []
    k: int = 5


def _error(body: Any) -> APIError:
    with pytest.raises(ValidationError) as caught:
        _Body.model_validate_json(body) if isinstance(body, str) else _Body.model_validate(body)
    return invalid_request(caught.value.errors())


@pytest.mark.parametrize("body", [{"metadata": {"team": ["a"]}}, '{"metadata": {"team": ["a"]}}'])
def test_a_value_no_union_member_takes_is_one_problem_named_by_its_field(body: Any) -> None:
    error = _error(body)
    assert error.param == "metadata.team"
    assert error.message.startswith("metadata.team: Input should be a valid string or ")
    assert "more problem" not in error.message


def test_two_missing_siblings_stay_two_problems() -> None:
    error = _error({"messages": [{}]})
    assert error.param == "messages.0.role"
    assert error.message == "messages.0.role: Field required (and 1 more problem)"


def test_a_union_and_another_field_count_as_two() -> None:
    error = _error({"metadata": {"team": None}, "k": "many"})
    assert error.param == "metadata.team"
    assert error.message.endswith("(and 1 more problem)")


def test_no_errors_still_answers_422() -> None:
    error = invalid_request([])
    assert error.status == 422 and error.param is None


@pytest.mark.parametrize("model", ["AnswerRequest", "SearchRequest"])
def test_k_takes_a_whole_number_as_json_schema_does_but_not_a_boolean(model: str) -> None:
    """49.0 is the integer 49 in JSON Schema (a schema-driven client may send it); true is not 1."""
    from pydantic import ValidationError

    from stanchion.server import schemas

    cls = getattr(schemas, model)
    field = "question" if model == "AnswerRequest" else "query"
    assert cls.model_validate({field: "refunds", "k": 49.0}).k == 49
    for bad in (True, 2.5, "3"):
        with pytest.raises(ValidationError):
            cls.model_validate({field: "refunds", "k": bad})
