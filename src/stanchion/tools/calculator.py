"""``calculator``: arithmetic a model should not do in its head, evaluated without running code.

The expression is parsed by Python's ``ast`` (``mode="eval"``, never ``eval``), and only an
allow-list of nodes is walked: numbers, ``+ - * / // % **``, unary minus and plus, parentheses,
the constants ``pi``, ``e`` and ``tau``, and a few functions (``sqrt``, ``round``, ``abs``, ``min``,
``max``, ``log``, ``log10``, ``exp``, ``floor``, ``ceil``). Limits keep one call cheap: the length
of the expression, its nesting, and the size of any integer it builds (``9**9**9`` or
``2**2**2**99`` is refused before it is computed). Every failure (division by zero, a name that is
not allowed, a result too large) is a ToolError the model can read.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stanchion.errors import ToolError
from stanchion.request_context import RequestContext
from stanchion.retrieve.search import Retriever
from stanchion.tools.base import ToolResult, parse_arguments
from stanchion.types import ToolSpec

__all__ = ["CalculatorTool", "build", "evaluate"]

MAX_CHARS = 500
MAX_DEPTH = 40  # nested operations and parentheses
MAX_INT_BITS = 4096  # about 1,233 decimal digits

Number = int | float

_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
_FUNCTIONS: dict[str, tuple[int, int]] = {  # name: (fewest, most) arguments
    "sqrt": (1, 1),
    "round": (1, 2),
    "abs": (1, 1),
    "min": (2, 20),
    "max": (2, 20),
    "log": (1, 2),
    "log10": (1, 1),
    "exp": (1, 1),
    "floor": (1, 1),
    "ceil": (1, 1),
}
_OPERATORS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}


class CalculatorError(Exception):
    """Why an expression cannot be evaluated, in words for the model."""


class CalculatorArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(
        min_length=1,
        max_length=MAX_CHARS,
        description="arithmetic such as (1200 - 150) * 0.25 or sqrt(2) / 3: + - * / // % **, "
        f"parentheses, {', '.join(_CONSTANTS)}, {', '.join(f'{f}()' for f in _FUNCTIONS)}",
    )


def evaluate(expression: str) -> Number:
    """The value of ``expression``, or CalculatorError saying what is wrong."""
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_CHARS} characters")
    if _paren_depth(expression) > MAX_DEPTH:
        raise CalculatorError(f"the expression nests deeper than {MAX_DEPTH} levels")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalculatorError(
            "not an arithmetic expression (write e.g. (3 + 4) * 2; use ** for powers, no thousands commas)"
        ) from None
    if _depth(tree) > MAX_DEPTH:
        raise CalculatorError(f"the expression nests deeper than {MAX_DEPTH} levels")
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is not a finite number")
    return value


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"{node.value!r} is not a number")
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            raise CalculatorError(f"unknown name {node.id!r} (constants: {', '.join(_CONSTANTS)})")
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval(node.operand)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _binary(node.op, _eval(node.left), _eval(node.right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise CalculatorError("^ is not a power here: write ** (2 ** 10)")
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Tuple):
        raise CalculatorError("a comma outside a function call: write 1000, not 1,000")
    raise CalculatorError(
        f"{type(node).__name__} is not allowed: only numbers, + - * / // % **, and functions"
    )


def _binary(op: ast.operator, left: Number, right: Number) -> Number:
    if isinstance(op, ast.Pow):
        return _power(left, right)
    if isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length())
    result: Number
    if isinstance(op, ast.Add):
        result = left + right
    elif isinstance(op, ast.Sub):
        result = left - right
    elif isinstance(op, ast.Mult):
        result = left * right
    elif isinstance(op, ast.Div):
        result = left / right
    elif isinstance(op, ast.FloorDiv):
        result = left // right
    else:
        result = left % right
    return result


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        # bits of the result, bounded before it is computed (9**9**9 has 1.2 billion bits)
        _check_bits(math.ceil(exponent * math.log2(abs(base))))
    if isinstance(base, int | float) and isinstance(exponent, int | float):
        if base == 0 and exponent < 0:
            raise ZeroDivisionError
        if base < 0 and isinstance(exponent, float) and not exponent.is_integer():
            raise CalculatorError("a negative number to a fractional power is not a real number")
    result = base**exponent
    if isinstance(result, complex):  # pragma: no cover - refused above
        raise CalculatorError("the result is not a real number")
    return result


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise CalculatorError(f"the result would have more than {MAX_INT_BITS} bits (about 1,200 digits)")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise CalculatorError(f"unknown function {name!r} (functions: {', '.join(_FUNCTIONS)})")
    name = node.func.id
    if node.keywords:
        raise CalculatorError(f"{name}() takes its arguments by position only")
    fewest, most = _FUNCTIONS[name]
    if not fewest <= len(node.args) <= most:
        wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
        raise CalculatorError(f"{name}() takes {wanted} arguments, got {len(node.args)}")
    args = [_eval(a) for a in node.args]
    try:
        return _apply(name, args)
    except ValueError:
        raise CalculatorError(f"{name}() is not defined for {', '.join(_text(a) for a in args)}") from None


def _apply(name: str, args: list[Number]) -> Number:
    x = args[0]
    if name == "sqrt":
        return math.sqrt(x)
    if name == "abs":
        return abs(x)
    if name == "min":
        return min(args)
    if name == "max":
        return max(args)
    if name == "exp":
        return math.exp(x)
    if name == "floor":
        return math.floor(x)
    if name == "ceil":
        return math.ceil(x)
    if name == "log10":
        return math.log10(x)
    if name == "log":
        return math.log(x) if len(args) == 1 else math.log(x, args[1])
    # round
    if len(args) == 1:
        return round(x)
    digits = args[1]
    if not isinstance(digits, int) or not -20 <= digits <= 20:
        raise CalculatorError("round()'s second argument is a whole number of digits from -20 to 20")
    return round(x, digits)


def _paren_depth(text: str) -> int:
    depth = deepest = 0
    for c in text:
        if c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
    return deepest


def _depth(tree: ast.AST) -> int:
    """How deep the tree nests, walked without recursion (a long chain of unary minus is deep)."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _text(value: Number) -> str:
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


class CalculatorTool:
    """Evaluates one arithmetic expression; the result reads ``expression = value``."""

    def __init__(self, name: str = "calculator", description: str = "") -> None:
        self.spec = ToolSpec(
            name,
            description
            or "Evaluate an arithmetic expression exactly, instead of doing the arithmetic yourself.",
            CalculatorArguments.model_json_schema(),
        )

    def call(self, arguments: Mapping[str, Any], context: RequestContext) -> ToolResult:
        args = parse_arguments(self.spec.name, CalculatorArguments, arguments)
        try:
            value = evaluate(args.expression)
        except CalculatorError as exc:
            raise ToolError(str(exc), tool=self.spec.name) from None
        return ToolResult(f"{args.expression.strip()} = {_text(value)}", {"value": value})


class CalculatorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="what the model is told the tool does (default: a generic one)")


def build(name: str, options: Mapping[str, Any], *, retriever: Callable[[], Retriever]) -> CalculatorTool:
    """The ``stanchion.tools`` entry point (option: ``description``)."""
    chosen = CalculatorOptions.model_validate(dict(options))
    return CalculatorTool(name, chosen.description)
