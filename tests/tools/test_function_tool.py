"""The ``function`` tool: a plain Python function named in the spec, offered with the JSON schema of
its signature (or the spec's), called as its caller, its failures returned to the model."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.cli import app as cli
from stanchion.errors import SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.tools.function import FunctionTool, build

runner = CliRunner()
ANN = RequestContext("acme", "ann")

MODULE = '''
from __future__ import annotations

from typing import Literal

from stanchion.errors import ToolError
from stanchion.request_context import RequestContext
from stanchion.tools import ToolResult


def shipping_quote(weight_kg: float, service: Literal["standard", "express"] = "standard") -> dict:
    """Quote the price of a shipment.

    Not part of the description.
    """
    rate = 2.0 if service == "standard" else 3.5
    return {"price_usd": round(weight_kg * rate, 2), "service": service}


def whoami(context: RequestContext) -> str:
    return f"{context.user}@{context.tenant}"


def divide(a: int, b: int) -> float:
    return a / b


def refuse(reason: str) -> str:
    raise ToolError(f"refused: {reason}", tool="refuse")


def rich(n: int) -> ToolResult:
    return ToolResult(f"{n} items", {"n": n}, ("doc:1",))


def nothing() -> None:
    return None


def loose(**anything):
    return anything


async def later() -> str:
    return "x"
'''


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module ``kestrel_tools_<n>`` with the functions above."""
    name = f"kestrel_tools_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def tool(module: str, function: str, **options: object) -> FunctionTool:
    return build(function, {"function": f"{module}:{function}", **options}, retriever=lambda: None)  # type: ignore[arg-type,return-value]


class TestFromTheSignature:
    def test_the_schema_and_description_come_from_the_function(self, module: str) -> None:
        quote = tool(module, "shipping_quote")
        assert quote.spec.description == "Quote the price of a shipment."
        parameters = quote.spec.parameters
        assert parameters["required"] == ["weight_kg"] and parameters["additionalProperties"] is False
        assert parameters["properties"]["service"]["enum"] == ["standard", "express"]

    def test_a_call_returns_json_the_model_reads_and_data(self, module: str) -> None:
        result = tool(module, "shipping_quote").call({"weight_kg": 10, "service": "express"}, ANN)
        assert result.data == {"price_usd": 35.0, "service": "express"}
        assert json.loads(result.content) == result.data

    @pytest.mark.parametrize(
        ("arguments", "says"),
        [
            ({}, "weight_kg: required"),
            ({"weight_kg": "heavy"}, "weight_kg: Input should be a valid number"),
            ({"weight_kg": 1, "service": "overnight"}, "service: Input should be 'standard' or 'express'"),
            ({"weight_kg": 1, "rush": True}, "rush: unknown argument"),
        ],
    )
    def test_bad_arguments_are_refused_before_the_call(
        self, module: str, arguments: dict[str, object], says: str
    ) -> None:
        with pytest.raises(ToolError, match=says):
            tool(module, "shipping_quote").call(arguments, ANN)

    def test_a_context_parameter_gets_the_caller_and_is_not_offered(self, module: str) -> None:
        whoami = tool(module, "whoami")
        assert whoami.spec.parameters.get("properties", {}) == {}
        assert whoami.call({}, ANN).content == "ann@acme"
        with pytest.raises(ToolError, match="context: unknown argument"):
            whoami.call({"context": {"tenant": "globex"}}, ANN)


class TestResultsAndFailures:
    def test_tool_results_and_none_pass_through(self, module: str) -> None:
        result = tool(module, "rich").call({"n": 3}, ANN)
        assert (result.content, result.data, result.sources) == ("3 items", {"n": 3}, ("doc:1",))
        assert tool(module, "nothing").call({}, ANN).content == "done"

    def test_an_exception_is_a_tool_error_naming_it(self, module: str) -> None:
        with pytest.raises(ToolError, match="the function failed: ZeroDivisionError: division by zero"):
            tool(module, "divide").call({"a": 1, "b": 0}, ANN)

    def test_a_tool_error_from_the_function_is_passed_on(self, module: str) -> None:
        with pytest.raises(ToolError, match="refused: too late"):
            tool(module, "refuse").call({"reason": "too late"}, ANN)


class TestSchemaFromTheSpec:
    def test_parameters_in_the_spec_check_the_arguments(self, module: str) -> None:
        schema = {
            "type": "object",
            "properties": {"sku": {"type": "string", "pattern": "^KF-[0-9]+$"}},
            "required": ["sku"],
            "additionalProperties": False,
        }
        loose = tool(module, "loose", parameters=schema, description="Anything by SKU.")
        assert loose.spec.parameters == schema and loose.spec.description == "Anything by SKU."
        assert loose.call({"sku": "KF-12"}, ANN).data == {"sku": "KF-12"}
        with pytest.raises(ToolError, match="sku: 'X' does not match"):
            loose.call({"sku": "X"}, ANN)
        with pytest.raises(ToolError, match="arguments: 'sku' is a required property"):
            loose.call({}, ANN)


class TestBadOptions:
    @pytest.mark.parametrize(
        ("options", "says", "key"),
        [
            ({"function": "no_such_module_xyz:f"}, "cannot import no_such_module_xyz:f", "function"),
            ({"function": "{module}:missing"}, "cannot import", "function"),
            ({"function": "{module}:later"}, "is not a plain function", "function"),
            ({"function": "{module}:ToolResult"}, "is not a plain function", "function"),
            (
                {"function": "{module}:loose"},
                "give the arguments names and types, or write parameters:",
                "function",
            ),
            (
                {"function": "{module}:loose", "parameters": {"type": "wrong"}},
                "not a valid JSON schema",
                "parameters",
            ),
            (
                {"function": "{module}:loose", "parameters": {"type": "array"}},
                "must be of type object",
                "parameters",
            ),
        ],
    )
    def test_each_is_a_spec_error_naming_the_key(
        self, module: str, options: dict[str, object], says: str, key: str
    ) -> None:
        options = {k: v.format(module=module) if isinstance(v, str) else v for k, v in options.items()}
        with pytest.raises(SpecError, match=says) as info:
            build("f", options, retriever=lambda: None)  # type: ignore[arg-type,return-value]
        assert info.value.key_path == f"tools.f.options.{key}"


class TestThroughTheSpec:
    def test_the_cli_lists_and_calls_it(self, module: str, tmp_path: Path) -> None:
        spec = tmp_path / "stanchion.yaml"
        spec.write_text(
            f"tools:\n  quote:\n    tool: function\n    options: {{function: '{module}:shipping_quote'}}\n",
            encoding="utf-8",
        )
        listed = runner.invoke(cli, ["tools", "list", "--spec", str(spec), "--json"])
        assert listed.exit_code == 0, listed.stderr
        assert json.loads(listed.stdout)["tools"][0]["name"] == "quote"
        called = runner.invoke(
            cli, ["tools", "call", "quote", '{"weight_kg": 4}', "--spec", str(spec), "--json"]
        )
        assert called.exit_code == 0, called.stderr
        assert json.loads(called.stdout)["data"] == {"price_usd": 8.0, "service": "standard"}
