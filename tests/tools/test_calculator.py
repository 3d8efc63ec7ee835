"""The ``calculator`` tool: arithmetic by an allow-listed walk of the syntax tree, never ``eval``;
every bad or too costly expression is a ToolError the model can read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stanchion.cli import app as cli
from stanchion.errors import ToolError
from stanchion.request_context import RequestContext
from stanchion.tools.calculator import CalculatorTool, build, evaluate

runner = CliRunner()
ANYONE = RequestContext("default")


class TestArithmetic:
    @pytest.mark.parametrize(
        ("expression", "value"),
        [
            ("1 + 2 * 3", 7),
            ("(1 + 2) * 3", 9),
            ("7 / 2", 3.5),
            ("7 // 2", 3),
            ("-7 // 2", -4),
            ("7 % 3", 1),
            ("2 ** 10", 1024),
            ("2 ** -1", 0.5),
            ("-2 ** 2", -4),
            ("--3", 3),
            ("+3", 3),
            ("1.5e3 + .5", 1500.5),
            ("2 ** 3 ** 2", 512),
            ("sqrt(16)", 4.0),
            ("round(2.675, 2)", 2.67),
            ("round(1234, -2)", 1200),
            ("round(2.5)", 2),
            ("abs(-4.5)", 4.5),
            ("min(3, 1, 2)", 1),
            ("max(3, 1, 2)", 3),
            ("log(e)", 1.0),
            ("log(8, 2)", 3.0),
            ("log10(1000)", 3.0),
            ("exp(0)", 1.0),
            ("floor(-1.5)", -2),
            ("ceil(1.2)", 2),
            ("2 * pi", math.tau),
            ("2 ** 4000 // 2 ** 3999", 2),
        ],
    )
    def test_it_evaluates(self, expression: str, value: float) -> None:
        assert evaluate(expression) == pytest.approx(value)

    def test_the_result_reads_as_an_equation_with_the_value_as_data(self) -> None:
        result = CalculatorTool().call({"expression": "0.1 + 0.2"}, ANYONE)
        assert result.content == "0.1 + 0.2 = 0.3"
        assert result.data == {"value": pytest.approx(0.3)}
        assert (
            CalculatorTool().call({"expression": "10 ** 20"}, ANYONE).content
            == "10 ** 20 = " + "1" + "0" * 20
        )


class TestRefusals:
    @pytest.mark.parametrize(
        ("expression", "says"),
        [
            ("1 / 0", "division by zero"),
            ("1 // 0", "division by zero"),
            ("5 % 0", "division by zero"),
            ("0 ** -1", "division by zero"),
            ("9 ** 9 ** 9", "more than 4096 bits"),
            ("2 ** 2 ** 2 ** 99", "more than 4096 bits"),
            ("10 ** 2000 * 10 ** 2000", "more than 4096 bits"),
            ("10.0 ** 400", "too large"),
            ("exp(1000)", "too large"),
            ("2 ** 4000 / 3", "too large"),
            ("1e308 * 10", "not a finite number"),
            ("sqrt(-1)", "sqrt() is not defined for -1"),
            ("log(0)", "log() is not defined for 0"),
            ("(-8) ** (1 / 3)", "negative number to a fractional power"),
            ("__import__('os').system('true')", "unknown function"),
            ("().__class__", "not allowed"),
            ("x + 1", "unknown name 'x'"),
            ("'a' * 3", "'a' is not a number"),
            ("True + 1", "True is not a number"),
            ("1j * 2", "1j is not a number"),
            ("2 ^ 10", "^ is not a power here: write **"),
            ("1,000 + 1", "a comma outside a function call"),
            ("round(2.5, ndigits=1)", "round() takes its arguments by position only"),
            ("round(2.5, 1.5)", "whole number of digits"),
            ("min(1)", "min() takes 2 to 20 arguments, got 1"),
            ("sqrt(1, 2)", "sqrt() takes 1 arguments, got 2"),
            ("1 +", "not an arithmetic expression"),
            ("lambda: 1", "Lambda is not allowed"),
            ("[1, 2]", "List is not allowed"),
            ("1 if 1 else 2", "IfExp is not allowed"),
            ("1 < 2", "Compare is not allowed"),
            ("(" * 41 + "1" + ")" * 41, "nests deeper than 40 levels"),
            ("-" * 60 + "1", "nests deeper than 40 levels"),
        ],
    )
    def test_each_is_a_tool_error_saying_why(self, expression: str, says: str) -> None:
        with pytest.raises(ToolError) as info:
            CalculatorTool().call({"expression": expression}, ANYONE)
        assert info.value.tool == "calculator"
        assert says in str(info.value)

    def test_a_long_expression_is_refused_by_the_schema(self) -> None:
        with pytest.raises(ToolError, match="expression: String should have at most 500 characters"):
            CalculatorTool().call({"expression": "1+" * 300 + "1"}, ANYONE)


class TestRegistration:
    def test_options_and_the_cli(self, tmp_path: Path) -> None:
        built = build("math", {"description": "Exact arithmetic."}, retriever=lambda: None)  # type: ignore[arg-type,return-value]
        assert built.spec.name == "math" and built.spec.description == "Exact arithmetic."
        assert built.spec.parameters["required"] == ["expression"]
        spec = tmp_path / "stanchion.yaml"
        spec.write_text("tools:\n  calculator:\n    tool: calculator\n", encoding="utf-8")
        called = runner.invoke(
            cli,
            [
                "tools",
                "call",
                "calculator",
                '{"expression": "(1200 - 150) * 0.25"}',
                "--spec",
                str(spec),
                "--json",
            ],
        )
        assert called.exit_code == 0, called.stderr
        assert json.loads(called.stdout)["data"] == {"value": 262.5}
        refused = runner.invoke(
            cli, ["tools", "call", "calculator", '{"expression": "1/0"}', "--spec", str(spec)]
        )
        assert refused.exit_code == 2 and "tool calculator: division by zero" in refused.stderr
