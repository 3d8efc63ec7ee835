"""A new user's path through the CLI: nothing succeeds silently, nothing finds nothing without saying why."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from stanchion.cli import app
from stanchion.server.app import create_app
from stanchion.spec import load_spec
from stanchion.testing.live_server import LiveServer

PAGE = """<!doctype html><html><head><title>Expense policy</title></head><body>
<h1>Expense policy</h1><p>The CFO approves every expense above 5,000 euros.</p></body></html>"""


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _spec(root: Path, sources: str) -> str:
    spec = root / "stanchion.yaml"
    spec.write_text(f"index: {{path: {root / 'index.db'}}}\nsources:\n{sources}", encoding="utf-8")
    return str(spec)


def _docs(root: Path, name: str, text: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(f"# {name}\n\n{text}\n", encoding="utf-8")
    return folder


class TestIngestPaths:
    """`ingest PATH` ingests the spec's sources and the PATHs, as its help says."""

    def test_paths_come_besides_the_spec_sources(self, tmp_path: Path) -> None:
        _docs(tmp_path, "docs", "Winter tyres go on every truck by November 15.")
        extra = _docs(tmp_path / "elsewhere", "extra", "Invoices are paid within thirty days.")
        spec = _spec(tmp_path, "  - {name: docs, path: docs}\n")
        code, out, _ = invoke("ingest", str(extra), "--spec", spec, "--json")
        assert code == 0 and json.loads(out)["documents"] == 2

    def test_paths_only(self, tmp_path: Path) -> None:
        _docs(tmp_path, "docs", "Winter tyres go on every truck by November 15.")
        extra = _docs(tmp_path / "elsewhere", "extra", "Invoices are paid within thirty days.")
        spec = _spec(tmp_path, "  - {name: docs, path: docs}\n")
        code, out, _ = invoke("ingest", str(extra), "--paths-only", "--spec", spec, "--json")
        assert code == 0 and json.loads(out)["documents"] == 1
        code, _, err = invoke("ingest", "--paths-only", "--spec", spec)
        assert code == 2 and "PATH" in err

    def test_a_path_named_like_a_spec_source_never_replaces_it(self, tmp_path: Path) -> None:
        """An ad-hoc folder called `docs` and the spec's `docs` source keep each other's documents."""
        _docs(tmp_path, "docs", "Winter tyres go on every truck by November 15.")
        other = _docs(tmp_path / "elsewhere", "docs", "Invoices are paid within thirty days.")
        spec = _spec(tmp_path, "  - {name: docs, path: docs}\n")
        code, out, _ = invoke("ingest", str(other), "--spec", spec, "--json")
        assert code == 0 and json.loads(out)["documents"] == 2
        code, out, _ = invoke("ingest", "--spec", spec, "--json")
        assert code == 0 and json.loads(out)["deleted"] == 0
        code, out, _ = invoke("search", "invoices paid", "--mode", "bm25", "--spec", spec, "--json")
        assert "thirty days" in json.loads(out)["hits"][0]["text"]

    def test_the_spec_sources_own_folder_uses_its_settings(self, tmp_path: Path) -> None:
        """Naming a spec source's folder as a PATH ingests that source once, with its metadata."""
        docs = _docs(tmp_path, "docs", "Winter tyres go on every truck by November 15.")
        spec = _spec(tmp_path, "  - {name: docs, path: docs, metadata: {team: fleet}}\n")
        code, out, _ = invoke("ingest", str(docs), "--spec", spec, "--json")
        assert code == 0 and json.loads(out)["documents"] == 1
        code, out, _ = invoke(
            "search", "tyres", "--mode", "bm25", "--filter", "team=fleet", "--spec", spec, "--json"
        )
        assert len(json.loads(out)["hits"]) == 1


class TestNothingIsSilent:
    def test_an_empty_source_folder_is_a_warning(self, tmp_path: Path) -> None:
        (tmp_path / "docs").mkdir()
        spec = _spec(tmp_path, "  - {name: docs, path: docs}\n")
        code, out, _ = invoke("ingest", "--spec", spec, "--json")
        summary = json.loads(out)
        assert code == 0 and summary["documents"] == 0
        [warning] = summary["warnings"]
        assert "'docs'" in warning and "empty" in warning
        code, out, _ = invoke("ingest", "--spec", spec)
        assert "warning:" in out and "is empty" in out

    def test_a_glob_that_matches_nothing_is_a_warning(self, tmp_path: Path) -> None:
        _docs(tmp_path, "docs", "Winter tyres go on every truck by November 15.")
        spec = _spec(tmp_path, "  - {name: docs, path: docs, glob: '*.html'}\n")
        code, out, _ = invoke("ingest", "--spec", spec, "--json")
        [warning] = json.loads(out)["warnings"]
        assert code == 0 and "'*.html'" in warning

    def test_searching_an_empty_index_suggests_ingest(self, tmp_path: Path) -> None:
        spec = _spec(tmp_path, "  - {name: docs, path: docs}\n")
        code, out, _ = invoke("search", "tyres", "--spec", spec)
        assert code == 0 and "no results" in out and "stanchion ingest" in out
        code, out, _ = invoke("search", "tyres", "--spec", spec, "--json")
        result = json.loads(out)
        assert result["hits"] == [] and "stanchion ingest" in result["hint"]

    def test_asking_an_empty_index_suggests_ingest(self, tmp_path: Path) -> None:
        spec = _spec(tmp_path, "  - {name: docs, path: docs}\n")
        code, out, _ = invoke("ask", "who approves expenses?", "--spec", spec, "--json")
        assert code == 0 and "stanchion ingest" in json.loads(out)["hint"]
        code, _, err = invoke("ask", "who approves expenses?", "--spec", spec)
        assert code == 0 and "stanchion ingest" in err

    def test_no_hint_when_the_index_has_documents(self, tmp_path: Path) -> None:
        _docs(tmp_path, "docs", "Winter tyres go on every truck by November 15.")
        spec = _spec(tmp_path, "  - {name: docs, path: docs}\n")
        invoke("ingest", "--spec", spec)
        code, out, _ = invoke(
            "search", "tyres", "--mode", "bm25", "--filter", "team=none", "--spec", spec, "--json"
        )
        assert (
            code == 0 and json.loads(out) == {**json.loads(out), "hits": []} and "hint" not in json.loads(out)
        )


class TestKeysForTheInitSpec:
    """`stanchion init`, ingest, then the README's `keys create`: the key finds the documents."""

    @pytest.fixture
    def project(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.chdir(tmp_path)
        assert invoke("init")[0] == 0
        wiki = tmp_path / "docs" / "wiki"
        wiki.mkdir(parents=True)
        (wiki / "expenses.html").write_text(PAGE, encoding="utf-8")
        code, out, _ = invoke("ingest", "--json")
        assert code == 0 and json.loads(out)["documents"] == 1, out
        return tmp_path

    def test_a_key_for_a_tenant_without_documents_warns(self, project: Path) -> None:
        code, out, err = invoke("keys", "create", "--tenant", "acme", "--user", "ana", "--json")
        assert code == 0 and json.loads(out)["tenant"] == "acme"
        assert "warning" in err and "'acme' has no documents" in err and "'default'" in err

    def test_the_readme_key_finds_the_documents_over_http(self, project: Path) -> None:
        readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
        [line] = [ln for ln in readme.splitlines() if ln.startswith("stanchion keys create ")]
        code, out, err = invoke(*line.split()[1:])
        assert code == 0 and "warning" not in err, err
        key = json.loads(out)["key"]
        with LiveServer(create_app(load_spec(None))) as url:
            reply = httpx.post(
                f"{url}/v1/search",
                json={"query": "who approves expenses above 5000", "mode": "bm25"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )
        assert reply.status_code == 200, reply.text
        assert "CFO approves" in reply.json()["hits"][0]["text"]
