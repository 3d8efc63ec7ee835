"""What a red-team pass found on the CLI path: numbers no store can hold, from a file's front matter
or from the spec, crashed `stanchion ingest` with a traceback (sqlite3 "malformed JSON")."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from stanchion.cli import app


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _spec(root: Path, source: str) -> str:
    (root / "docs").mkdir(exist_ok=True)
    spec = root / "stanchion.yaml"
    spec.write_text(f"index: {{path: {root / 'index.db'}}}\nsources:\n  - {source}\n", encoding="utf-8")
    return str(spec)


class TestNonFiniteMetadata:
    def test_front_matter_inf_and_nan_are_kept_as_text(self, tmp_path: Path) -> None:
        """A Markdown file whose front matter says `.inf` or `.nan` is ingested, the value as text."""
        spec = _spec(tmp_path, "{name: docs, path: docs}")
        (tmp_path / "docs" / "a.md").write_text(
            "---\nscore: .inf\nratio: .nan\n---\n# Walruses\n\nWalruses haul out on ice floes.\n",
            encoding="utf-8",
        )
        code, out, err = invoke("ingest", "--spec", spec, "--json")
        assert code == 0, err
        assert json.loads(out)["documents"] == 1
        code, out, err = invoke("search", "walruses", "--spec", spec, "--json")
        assert code == 0, err
        [hit] = json.loads(out)["hits"]
        assert (hit["metadata"]["score"], hit["metadata"]["ratio"]) == ("inf", "nan")

    def test_spec_metadata_inf_is_a_spec_error(self, tmp_path: Path) -> None:
        """`metadata: {score: .inf}` on a source is refused when the spec loads (exit 2, naming the
        key), not a traceback once the first document is written."""
        spec = _spec(tmp_path, "{name: docs, path: docs, metadata: {score: .inf}}")
        (tmp_path / "docs" / "a.md").write_text("# A\n\nSome text.\n", encoding="utf-8")
        code, _, err = invoke("ingest", "--spec", spec, "--json")
        assert code == 2, err
        assert "metadata" in err and "score" in err
