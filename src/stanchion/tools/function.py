"""``function``: a plain Python function offered as a tool, named in the spec.

The other way to add a tool, for code that is not a package of its own (an entry point, see
``tools/registry.py``, is the way for one)::

    tools:
      shipping_quote:
        tool: function
        options:
          function: my_company.tools:shipping_quote    # module:attribute, importable
          description: Quote the price of a shipment.  # default: the docstring's first paragraph

The arguments' JSON schema comes from the function's signature (type hints and defaults, checked
by pydantic), or from ``parameters`` in the options (a JSON Schema, checked by ``jsonschema``). A
parameter named ``context`` is not offered to the model: it receives the caller's
``RequestContext``, so the function can act as its caller. The function returns a string (what
the model reads), a ``ToolResult``, or anything JSON can hold (shown as JSON, kept as ``data``).
It raises ``ToolError`` for a refusal the model should read; any other exception is logged with
its traceback and returned to the model as a ToolError naming it, never a crash of the run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, create_model

from stanchion.errors import SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.tools.base import ToolResult, parse_arguments
from stanchion.types import ToolSpec

__all__ = ["FunctionTool", "build"]

log = logging.getLogger(__name__)

_CONTEXT = "context"


class FunctionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    function: str = Field(pattern=r"^[\w.]+:[\w.]+$", description="module:attribute of a Python function")
    description: str = Field("", description="what the model is told (default: the docstring)")
    parameters: dict[str, Any] | None = Field(
        None, description="JSON Schema of the arguments (default: from the signature)"
    )


class FunctionTool:
    """Calls ``function`` with the model's arguments, checked first."""

    def __init__(
        self,
        name: str,
        function: Callable[..., Any],
        *,
        description: str = "",
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self._function = function
        signature = inspect.signature(function, eval_str=True)  # hints written as strings, resolved
        self._wants_context = _CONTEXT in signature.parameters
        self._model = None if parameters is not None else _arguments_model(name, signature)
        schema = parameters if parameters is not None else self._model.model_json_schema()  # type: ignore[union-attr]
        self._validator = jsonschema.Draft202012Validator(parameters) if parameters is not None else None
        text = description or _first_paragraph(inspect.getdoc(function)) or f"Call {name}."
        self.spec = ToolSpec(name, text, schema)

    def call(self, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        kwargs = self._checked(arguments)
        if self._wants_context:
            kwargs[_CONTEXT] = context
        try:
            value = self._function(**kwargs)
        except ToolError:
            raise
        except Exception as exc:  # the user's code: the model reads what failed, the log has why
            log.exception("tool.function_failed", extra={"tool": self.spec.name})
            raise ToolError(f"the function failed: {type(exc).__name__}: {exc}", tool=self.spec.name) from exc
        return _result(value)

    def _checked(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        if self._model is not None:
            parsed = parse_arguments(self.spec.name, self._model, arguments)
            return {field: getattr(parsed, field) for field in type(parsed).model_fields}
        if not isinstance(arguments, Mapping):
            raise ToolError(
                f"arguments must be a JSON object, got {type(arguments).__name__}", tool=self.spec.name
            )
        assert self._validator is not None
        errors = sorted(self._validator.iter_errors(dict(arguments)), key=lambda e: list(e.path))
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in errors[:5]
            )
            raise ToolError(problems, tool=self.spec.name)
        return dict(arguments)


def _arguments_model(name: str, signature: inspect.Signature) -> type[BaseModel]:
    """A pydantic model of the signature's parameters (``context`` left out), unknown keys refused."""
    fields: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.name == _CONTEXT:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"*{parameter.name}: give the arguments names and types, or write parameters:")
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"{parameter.name} is positional-only; the model passes arguments by name")
        annotation = Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model: type[BaseModel] = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def _result(value: Any) -> ToolResult:
    if isinstance(value, ToolResult):
        return value
    if isinstance(value, str):
        return ToolResult(value)
    if value is None:
        return ToolResult("done")
    try:
        return ToolResult(json.dumps(value, ensure_ascii=False, allow_nan=False), value)
    except (TypeError, ValueError):
        return ToolResult(str(value))


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").split("\n\n")[0].split())


def build(name: str, options: Mapping[str, Any], *, retriever: Callable[[], Retriever]) -> FunctionTool:
    """The ``stanchion.tools`` entry point: imports ``options.function`` (a SpecError naming the
    key when it cannot be imported, is not a plain function, or its signature cannot be offered)."""
    chosen = FunctionOptions.model_validate(dict(options))
    key = f"tools.{name}.options"
    module_name, _, attribute = chosen.function.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SpecError(
            f"{key}.function: cannot import {chosen.function} ({exc})", key_path=f"{key}.function"
        ) from None
    if not callable(target) or inspect.iscoroutinefunction(target) or inspect.isclass(target):
        raise SpecError(
            f"{key}.function: {chosen.function} is not a plain function (a class, coroutine or value); "
            "a tool calls a synchronous function",
            key_path=f"{key}.function",
        )
    if chosen.parameters is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(chosen.parameters)
        except jsonschema.SchemaError as exc:
            raise SpecError(
                f"{key}.parameters: not a valid JSON schema: {exc.message}", key_path=f"{key}.parameters"
            ) from None
        if chosen.parameters.get("type") != "object":
            raise SpecError(
                f"{key}.parameters: the schema must be of type object", key_path=f"{key}.parameters"
            )
    try:
        return FunctionTool(name, target, description=chosen.description, parameters=chosen.parameters)
    except (TypeError, ValueError, NameError) as exc:
        raise SpecError(f"{key}.function: {chosen.function}: {exc}", key_path=f"{key}.function") from None
