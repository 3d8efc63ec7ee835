"""The BEIR corpus loader, on SciFact and on small hand-written JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.beir import load_beir
from stanchion.types import Document

CTX = LoadContext(source="scifact", relpath="corpus.jsonl", access_groups=("public",))


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _record(doc_id: str | int, text: str = "Some abstract text.", **extra: object) -> str:
    return json.dumps({"_id": doc_id, "title": f"Title {doc_id}", "text": text, **extra})


class TestSciFact:
    """The real 5,183-document SciFact corpus."""

    def test_loads_every_document(self, shared_data: Path) -> None:
        """Every line becomes a Document with an id scoped to its source and file."""
        docs = list(load_beir(shared_data / "beir-scifact" / "corpus.jsonl", CTX))
        assert len(docs) == 5183
        first = docs[0]
        assert first.id == "scifact:corpus.jsonl:4983"
        assert first.metadata["beir_id"] == "4983"
        assert first.title.startswith("Microstructural development of human newborn cerebral white matter")
        assert first.text.startswith("Alterations of the architecture of cerebral white matter")
        assert first.access_groups == ("public",)
        assert len({d.id for d in docs}) == len(docs)


class TestRecords:
    """How individual records map to Documents."""

    def test_metadata_and_integer_ids(self, tmp_path: Path) -> None:
        """A record's metadata dict is kept (JSON-friendly); integer _ids become strings."""
        path = _write(
            tmp_path, [_record(7, metadata={"url": "https://x.org/7", "year": 2020, "tags": ["a"]})]
        )
        [doc] = list(load_beir(path, CTX))
        assert doc.id == "scifact:corpus.jsonl:7"
        assert doc.metadata["beir_id"] == "7"
        assert doc.metadata["url"] == "https://x.org/7"
        assert doc.metadata["year"] == 2020
        assert doc.metadata["tags"] == ["a"]

    def test_empty_text_uses_title(self, tmp_path: Path) -> None:
        """A title-only record stays searchable; a record with neither is skipped."""
        lines = [_record("a", text=""), json.dumps({"_id": "b", "title": "", "text": " "}), _record("c")]
        docs = list(load_beir(_write(tmp_path, lines), CTX))
        assert [d.id for d in docs] == ["scifact:corpus.jsonl:a", "scifact:corpus.jsonl:c"]
        assert docs[0].text == "Title a"


class TestMalformedLines:
    """Up to 1% of bad lines is tolerated; more, or nothing valid, fails naming the first bad line."""

    def test_few_bad_lines_are_skipped(self, tmp_path: Path) -> None:
        """One broken line in 200 (0.5%) is skipped; blank lines do not count."""
        lines = [_record(i) for i in range(199)]
        lines.insert(50, '{"_id": "broken", "text": ')
        lines.insert(10, "")
        docs = list(load_beir(_write(tmp_path, lines), CTX))
        assert len(docs) == 199

    def test_too_many_bad_lines(self, tmp_path: Path) -> None:
        """Three bad lines in 100 is over the limit; the error names the first one and why."""
        lines = [_record(i) for i in range(97)]
        lines[20:20] = ["not json at all", json.dumps({"title": "no id", "text": "x"}), _record(5)]
        with pytest.raises(IngestError, match=r"3 of 100 lines malformed; first at line 21: invalid JSON"):
            list(load_beir(_write(tmp_path, lines), CTX))

    def test_duplicate_and_wrong_types(self, tmp_path: Path) -> None:
        """Repeated ids, non-string text and non-object metadata are malformed."""
        lines = [
            _record("x"),
            _record("x"),
            json.dumps({"_id": "y", "text": 42}),
            _record("z", metadata=[1]),
        ]
        with pytest.raises(IngestError, match="first at line 2: duplicate _id 'x'"):
            list(load_beir(_write(tmp_path, lines), CTX))

    def test_no_valid_line(self, tmp_path: Path) -> None:
        """A file of JSON arrays is not a BEIR corpus."""
        with pytest.raises(IngestError, match="first at line 1: not a JSON object"):
            list(load_beir(_write(tmp_path, ["[1, 2]", "[3]"]), CTX))

    def test_empty_file(self, tmp_path: Path) -> None:
        """No records at all is an error, not an empty success."""
        path = tmp_path / "corpus.jsonl"
        path.write_text("\n\n")
        with pytest.raises(IngestError, match="no records"):
            list(load_beir(path, CTX))

    def test_invalid_utf8_line(self, tmp_path: Path) -> None:
        """A line that is not UTF-8 is one malformed line, not a crash of the whole file."""
        path = tmp_path / "corpus.jsonl"
        good = b"".join(_record(i).encode() + b"\n" for i in range(150))
        path.write_bytes(good + b'{"_id": "bad", "text": "caf\xe9"}\n')
        docs: list[Document] = list(load_beir(path, CTX))
        assert len(docs) == 150
