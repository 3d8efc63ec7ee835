"""Tools a model may call: found by entry point (``stanchion.tools``) like providers, offered with a
JSON schema, run as their caller (tenant and access groups), and refusing bad arguments in words a
model can act on.

The index is real (a SQLite file ingested through the CLI); a tool from another package is
installed for real, as pip would lay it out, in a temporary folder on ``sys.path``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.plugin_packages import installed_package
from typer.testing import CliRunner

from stanchion.app import App, build
from stanchion.cli import app as cli
from stanchion.core import plugins
from stanchion.errors import SearchError, SpecError, ToolError
from stanchion.request_context import RequestContext
from stanchion.spec import load_spec, parse_spec
from stanchion.tools import Tool

runner = CliRunner()

SPEC = """\
sources:
  - name: handbook
    path: handbook
  - name: payroll
    path: payroll
    access_groups: [finance]
  - name: acme
    path: acme
    tenant: acme
"""


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three sources: public to the default tenant, the finance group's, and another tenant's."""
    root = tmp_path_factory.mktemp("tools")
    texts = {
        "handbook/leave.md": "# Leave\n\nAnnual leave is booked in the HR portal two weeks ahead.\n",
        "payroll/salaries.md": "# Salaries\n\nSalaries are paid on the 25th; the payroll leave ledger is private.\n",
        "acme/leave.md": "# Acme leave\n\nAcme staff book leave by email to their manager.\n",
    }
    for name, text in texts.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "stanchion.yaml").write_text(SPEC, encoding="utf-8")
    result = runner.invoke(cli, ["ingest", "--spec", str(root / "stanchion.yaml"), "--json"])
    assert result.exit_code == 0, result.stdout
    return root


@pytest.fixture
def stanchion(indexed: Path) -> Iterator[App]:
    app = build(load_spec(indexed / "stanchion.yaml"))
    yield app
    app.close()


def documents(app: App, context: RequestContext, query: str = "leave") -> list[str]:
    result = app.tools.call("search", {"query": query, "k": 10, "mode": "bm25"}, context)
    return sorted({p["chunk_id"].split("#")[0] for p in result.data["passages"]})


class TestSearchTool:
    def test_it_is_offered_with_the_json_schema_of_its_arguments(self, stanchion: App) -> None:
        (spec,) = stanchion.tools.specs()
        assert spec.name == "search" and spec.description
        assert spec.parameters["required"] == ["query"]
        assert spec.parameters["additionalProperties"] is False
        assert spec.parameters["properties"]["k"]["maximum"] == 20

    def test_a_caller_finds_only_what_its_tenant_and_groups_may_see(self, stanchion: App) -> None:
        """The same call, made for three callers, returns three different sets of documents."""
        staff = RequestContext("default", "ann", frozenset({"staff"}))
        finance = RequestContext("default", "bob", frozenset({"finance"}))
        other = RequestContext("acme", "eve", frozenset({"finance"}))
        assert documents(stanchion, staff) == ["handbook:leave.md"]
        assert documents(stanchion, finance) == ["handbook:leave.md", "payroll:salaries.md"]
        assert documents(stanchion, other) == ["acme:leave.md"]
        admin = RequestContext("default", "root", frozenset(), frozenset({"admin"}))
        assert documents(stanchion, admin) == ["handbook:leave.md", "payroll:salaries.md"]

    def test_the_result_reads_as_numbered_passages_with_their_chunk_ids(self, stanchion: App) -> None:
        result = stanchion.tools.call("search", {"query": "HR portal"}, RequestContext("default"))
        assert result.content.startswith("[1] ")
        assert "HR portal" in result.content
        assert result.sources and result.sources[0] == result.data["passages"][0]["chunk_id"]

    def test_a_filter_narrows_and_a_bad_one_is_a_search_error(self, stanchion: App) -> None:
        everyone = RequestContext("default")
        found = stanchion.tools.call("search", {"query": "leave", "filters": ["source=payroll"]}, everyone)
        assert {p["chunk_id"].split(":")[0] for p in found.data["passages"]} == {"payroll"}
        with pytest.raises(SearchError, match="cannot parse filter"):
            stanchion.tools.call("search", {"query": "leave", "filters": ["source"]}, everyone)

    @pytest.mark.parametrize(
        ("arguments", "says"),
        [
            ({}, "query: required"),
            ({"query": "x", "k": 100}, "k: Input should be less than or equal to 20"),
            ({"query": "x", "limit": 3}, "limit: unknown argument"),
            ({"query": "x", "mode": "fast"}, "mode: Input should be 'bm25', 'dense' or 'hybrid'"),
            ([1, 2], "arguments must be a JSON object, got list"),
        ],
    )
    def test_bad_arguments_are_refused_by_name(self, stanchion: App, arguments: object, says: str) -> None:
        with pytest.raises(ToolError) as info:
            stanchion.tools.call("search", arguments, RequestContext("default"))  # type: ignore[arg-type]
        assert info.value.tool == "search"
        assert says in str(info.value)

    def test_an_unknown_tool_names_the_tools_there_are(self, stanchion: App) -> None:
        with pytest.raises(ToolError, match="no such tool; tools: search"):
            stanchion.tools.call("sql", {}, RequestContext("default"))


class TestTheCommandLine:
    def test_list_and_call_as_json(self, indexed: Path) -> None:
        spec = str(indexed / "stanchion.yaml")
        listed = runner.invoke(cli, ["tools", "list", "--spec", spec, "--json"])
        assert listed.exit_code == 0, listed.stderr
        assert [t["name"] for t in json.loads(listed.stdout)["tools"]] == ["search"]
        query = '{"query": "salaries", "mode": "bm25"}'
        called = runner.invoke(cli, ["tools", "call", "search", query, "--spec", spec, "--json"])
        assert called.exit_code == 0, called.stderr
        # The operator, like `stanchion search` without --group, sees every group of the tenant.
        assert json.loads(called.stdout)["sources"][0].startswith("payroll:salaries.md")
        called = runner.invoke(
            cli, ["tools", "call", "search", query, "-g", "staff", "--spec", spec, "--json"]
        )
        body = json.loads(called.stdout)
        assert body["sources"] == [] and "No passage matches" in body["content"]

    def test_bad_json_and_bad_arguments_exit_2_with_what_to_fix(self, indexed: Path) -> None:
        spec = str(indexed / "stanchion.yaml")
        result = runner.invoke(cli, ["tools", "call", "search", "{query", "--spec", spec])
        assert result.exit_code == 2 and "arguments are not JSON" in result.stderr
        result = runner.invoke(cli, ["tools", "call", "search", '{"q": "x"}', "--spec", spec])
        assert result.exit_code == 2 and "tool search: query: required; q: unknown argument" in result.stderr


TOOL_MODULE = """
from stanchion.tools import ToolResult
from stanchion.types import ToolSpec


class Clock:
    def __init__(self, name, zone):
        self.spec = ToolSpec(name, "the time in a zone", {"type": "object", "properties": {}})
        self.zone = zone

    def call(self, arguments, context):
        return ToolResult(f"noon in {self.zone} for {context.user}")


def build(name, options, *, retriever):
    return Clock(name, options.get("zone", "UTC"))


def broken(name, options, *, retriever):
    return object()
"""


@pytest.fixture
def clock_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed package ``stanchion-clock`` registering the tools ``clock`` and ``broken``."""
    entry_points = (
        "[stanchion.tools]\nclock = stanchion_clock_tool:build\nbroken = stanchion_clock_tool:broken\n"
    )
    with installed_package(
        tmp_path / "site-packages",
        monkeypatch,
        name="stanchion-clock",
        module="stanchion_clock_tool",
        source=TOOL_MODULE,
        entry_points=entry_points,
    ) as site:
        yield site


class TestToolsFromOtherPackages:
    def test_the_built_in_search_is_registered_by_entry_point(self) -> None:
        assert "search" in plugins.names(plugins.TOOLS)
        assert "clock" not in plugins.names(plugins.TOOLS)

    def test_a_spec_offers_a_tool_another_package_registers(
        self, clock_package: Path, tmp_path: Path
    ) -> None:
        spec = parse_spec(
            {"tools": {"clock": {"tool": "clock", "options": {"zone": "CET"}}}}, base_dir=tmp_path
        )
        app = build(spec)
        tool = app.tools.get("clock")
        assert isinstance(tool, Tool) and app.tools.names == ["clock"]
        assert app.tools.call("clock", {}, RequestContext("default", "ann")).content == "noon in CET for ann"

    def test_a_factory_that_builds_no_tool_is_a_spec_error(self, clock_package: Path, tmp_path: Path) -> None:
        app = build(parse_spec({"tools": {"bad": {"tool": "broken"}}}, base_dir=tmp_path))
        with pytest.raises(SpecError, match="'broken' built object, which is not a Tool") as info:
            app.tools.get("bad")
        assert info.value.key_path == "tools.bad.tool"


class TestTheSpec:
    def test_an_unknown_tool_lists_the_registered_ones(self) -> None:
        with pytest.raises(SpecError) as info:
            parse_spec({"tools": {"lookup": {"tool": "serach"}}})
        assert info.value.key_path == "tools.lookup.tool"
        assert "unknown tool 'serach' (registered: " in str(info.value)
        assert "search" in str(info.value).split("registered: ", 1)[1]

    def test_a_name_no_model_api_accepts_is_refused(self) -> None:
        with pytest.raises(SpecError, match="tool name 'look up': use 1-64 letters, digits, _ or -"):
            parse_spec({"tools": {"look up": {"tool": "search"}}})

    def test_an_unknown_option_names_its_key(self, tmp_path: Path) -> None:
        app = build(
            parse_spec({"tools": {"find": {"tool": "search", "options": {"depth": 3}}}}, base_dir=tmp_path)
        )
        with pytest.raises(SpecError, match=r"tools.find.options: depth: Extra inputs are not permitted"):
            app.tools.get("find")

    def test_a_spec_may_rename_search_and_offer_no_tools(self, tmp_path: Path) -> None:
        app = build(
            parse_spec(
                {"tools": {"find_docs": {"tool": "search", "options": {"mode": "bm25"}}}}, base_dir=tmp_path
            )
        )
        assert [s.name for s in app.tools.specs()] == ["find_docs"]
        assert build(parse_spec({"tools": {}}, base_dir=tmp_path)).tools.names == []
