"""Every import in the ``stanchion`` package points down (DESIGN.md, "Dependency rule").

The package is cut into units (a subpackage, or a module at the package root) and the units into
layers, in the order written down in ``LAYERS`` below. A module may import its own unit and any
unit of a lower layer; units that share a layer are siblings and import neither each other nor
anything above. Every import counts: at module level, inside functions, and under
``TYPE_CHECKING`` (an annotation that names a higher layer is the same knot, only hidden).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import stanchion

PACKAGE = Path(stanchion.__file__).parent

# Lowest first. Read it as the flow of the system: shared ground, configuration, the model layer
# (which knows nothing of storage, retrieval or prompts), storage, the stages that use storage,
# grounded answers, the composition root, the request pipeline, the fakes shipped for tests, and
# at the top the edges (HTTP server, evals, benchmarks, CLI) and the package's public face.
LAYERS: list[list[str]] = [
    ["errors"],
    ["types", "logs", "tracing", "request_context", "migrations", "redis_client"],
    ["core"],  # shared vocabulary: filters, text analysis, sentences, embedders, packaged models
    ["spec"],
    ["models"],
    ["index", "state", "cache", "guards"],  # storage (index, state, response cache); guards (PII, injection)
    ["ingest", "retrieve", "memory"],  # memory: a user's facts and preferences, on the state database
    ["answer", "tools"],  # grounded answers; the tools a model may call (search, SQL, HTTP, ...)
    ["agents"],  # a model that calls tools until it answers, checks its drafts, remembers users
    ["app"],  # the composition root: build(spec) -> App
    ["pipeline"],
    ["testing"],
    ["server", "evals", "bench"],
    ["cli"],
    ["stanchion"],  # the package's __init__: the public API, re-exported
]

# Modules at the package root that belong to a unit of another name.
UNIT_OF: dict[str, str] = {
    "__init__": "stanchion",
    "__main__": "cli",
    "demo": "cli",
}

LAYER_OF: dict[str, int] = {unit: n for n, units in enumerate(LAYERS) for unit in units}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    line: int
    target: str  # the imported module (or name), dotted


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "stanchion"
    return UNIT_OF.get(parts[1], parts[1])


def imports(path: Path) -> Iterator[Import]:
    """Every ``stanchion`` import in one file, wherever it stands (functions and TYPE_CHECKING too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(module, package, path.read_text(encoding="utf-8"))


def imports_in(module: str, package: str, text: str) -> Iterator[Import]:
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "stanchion":
                    yield Import(module, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] != "stanchion":
                continue
            if source == "stanchion":  # ``from stanchion import errors`` names a submodule
                for alias in node.names:
                    sub = PACKAGE / alias.name
                    named = sub.is_dir() or sub.with_suffix(".py").exists()
                    yield Import(module, node.lineno, f"stanchion.{alias.name}" if named else source)
            else:
                yield Import(module, node.lineno, source)


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports(path)]


def upward(imp: Import) -> bool:
    here, there = unit_of(imp.module), unit_of(imp.target)
    return here != there and LAYER_OF[there] >= LAYER_OF[here]


class TestLayers:
    def test_every_unit_has_a_layer(self) -> None:
        """A new subpackage or root module is placed in LAYERS (or UNIT_OF) before it is used."""
        units = {unit_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
        assert units - LAYER_OF.keys() == set()

    def test_each_unit_is_in_one_layer(self) -> None:
        """The table is an order: no unit stands in two layers."""
        names = [unit for units in LAYERS for unit in units]
        assert len(names) == len(set(names))

    def test_every_import_points_down(self) -> None:
        """No module imports a unit of its own layer or a higher one (its own unit aside)."""
        found = all_imports()
        assert len(found) > 300  # the walk sees the package, not an empty folder
        wrong = [
            f"{imp.module}:{imp.line} imports {imp.target} "
            f"({unit_of(imp.module)}, layer {LAYER_OF[unit_of(imp.module)]} -> "
            f"{unit_of(imp.target)}, layer {LAYER_OF[unit_of(imp.target)]})"
            for imp in found
            if upward(imp)
        ]
        assert wrong == []


class TestTheWalk:
    """The walker itself: it sees the imports that hide."""

    def test_sees_imports_in_functions_and_type_checking(self) -> None:
        """An import inside a function or under TYPE_CHECKING is found like one at the top."""
        text = (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from stanchion.index.store import Store\n"
            "def f():\n    from ..retrieve import search\n    import stanchion.app\n"
        )
        found = list(imports_in("stanchion.models.probe", "stanchion.models", text))
        assert [i.target for i in found] == [
            "stanchion.index.store",
            "stanchion.retrieve",
            "stanchion.app",
        ]
        assert all(upward(i) for i in found)

    @pytest.mark.parametrize(
        ("module", "unit"),
        [
            ("stanchion", "stanchion"),
            ("stanchion.answer.prompt", "answer"),
            ("stanchion.core.filters", "core"),
            ("stanchion.cli.server", "cli"),
            ("stanchion.server.routes_chat", "server"),
        ],
    )
    def test_maps_modules_to_units(self, module: str, unit: str) -> None:
        """A module belongs to its subpackage, or to the unit UNIT_OF names for a root module."""
        assert unit_of(module) == unit
