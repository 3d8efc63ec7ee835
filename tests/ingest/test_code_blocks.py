"""Code blocks keep their indentation and spacing from the file to the chunk and the citation snippet."""

from __future__ import annotations

from pathlib import Path

import pytest

from stanchion.answer.prompt import CitedSentence, Source
from stanchion.answer.verify import Assembly, SentenceCheck, Verifier
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.ingest.chunk import ChunkingOptions, chunk_document
from stanchion.ingest.loaders.base import LoadContext
from stanchion.ingest.loaders.html import load_html
from stanchion.ingest.loaders.text import load_markdown
from stanchion.ingest.normalize import normalize_code
from stanchion.ingest.tokens import Tokenizer, tokenizer_for
from stanchion.types import Chunk, Document, Hit

CODE = """def route(shipment):
    if shipment.weight > 500:
        return "freight"   # heavy goes by truck
    return "parcel\""""

HTML = f"""<!doctype html><html><head><title>Routing</title></head><body>
<h1>Routing</h1>
<p>The   router   picks a mode:</p>
<pre>
{CODE}
</pre>
<p>Then it books the carrier.</p>
</body></html>"""

MARKDOWN = f"""# Routing

The   router   picks a mode:

```python
{CODE}
```

An indented block:

    for leg in legs:
        book(leg)

- a list item

    continues in the list, not code

Then it books the carrier.
"""


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return tokenizer_for("all-MiniLM-L6-v2")


def _html(tmp_path: Path) -> Document:
    path = tmp_path / "routing.html"
    path.write_text(HTML, encoding="utf-8")
    [doc] = load_html(path, LoadContext(source="wiki", relpath="routing.html"))
    return doc


def _markdown(tmp_path: Path) -> Document:
    path = tmp_path / "routing.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    [doc] = load_markdown(path, LoadContext(source="docs", relpath="routing.md"))
    return doc


class TestLoaders:
    def test_html_pre_keeps_indentation(self, tmp_path: Path) -> None:
        """A <pre> block comes through line for line, indentation and inner spaces included."""
        doc = _html(tmp_path)
        assert CODE in doc.text
        assert CODE in "\n\n".join(s.text for s in doc.sections)
        assert "The router picks a mode:" in doc.text  # prose is still normalised

    def test_markdown_fenced_block_keeps_indentation(self, tmp_path: Path) -> None:
        doc = _markdown(tmp_path)
        assert f"```python\n{CODE}\n```" in doc.text
        assert "The router picks a mode:" in doc.text

    def test_markdown_indented_block_keeps_relative_indentation(self, tmp_path: Path) -> None:
        """The four columns that mark an indented block go; the code's own indentation stays."""
        doc = _markdown(tmp_path)
        assert "for leg in legs:\n    book(leg)" in doc.text
        assert "continues in the list, not code" in doc.text  # a list's continuation is prose

    def test_normalize_code_drops_only_noise(self) -> None:
        raw = "\n\n  a = 1\u200b   \r\n\tb  =  2\n\n\n\n  c\n\n"
        assert normalize_code(raw) == "  a = 1\n\tb  =  2\n\n  c"


class TestChunks:
    @pytest.mark.parametrize("load", [_html, _markdown])
    def test_chunks_keep_indentation(self, load: object, tmp_path: Path, tokenizer: Tokenizer) -> None:
        doc = load(tmp_path)  # type: ignore[operator]
        chunks = chunk_document(doc, ChunkingOptions(size=256, overlap=32), tokenizer)
        assert any(CODE in c.text for c in chunks)

    def test_a_chunk_starting_a_code_line_keeps_its_indentation(
        self, tmp_path: Path, tokenizer: Tokenizer
    ) -> None:
        """A code block cut into several chunks: each chunk that starts a line starts at its indent."""
        body = "\n".join(f"    step_{i} = compute(step_{i - 1}, factor={i})" for i in range(1, 80))
        path = tmp_path / "long.html"
        path.write_text(f"<html><body><h1>Long</h1><pre>def run():\n{body}\n</pre></body></html>")
        [doc] = load_html(path, LoadContext(source="wiki", relpath="long.html"))
        chunks = chunk_document(doc, ChunkingOptions(size=64, overlap=0, min_size=0), tokenizer)
        assert len(chunks) > 3
        for chunk in chunks[1:]:
            first_line = chunk.text.split("\n", 1)[0]
            assert first_line.startswith("    step_"), first_line
            assert tokenizer.count(chunk.text) <= 64
        assert all(line.startswith("    ") for c in chunks for line in c.text.split("\n")[1:])


SOURCE = (
    "To deploy the routing service, run the deploy script:\n\n"
    "./deploy.sh --region eu-west \\\n    --replicas 3 \\\n    --canary\n\n"
    "The canary gets ten percent of traffic for one hour."
)


class TestQuotes:
    """What an answer shows of a source it cites: code keeps its lines and indentation."""

    def test_evidence_window_is_the_sources_own_text(self, embedder: SentenceTransformerEmbedder) -> None:
        support = Verifier(embedder).support("Deploy it with three replicas and a canary.", SOURCE)
        assert "    --replicas 3 \\" in support.evidence.split("\n")
        assert support.evidence in SOURCE

    def test_citation_snippet_keeps_code_layout(self) -> None:
        chunk = Chunk(id="docs:deploy.md#0", document_id="docs:deploy.md", text=SOURCE, position=0)
        sources = {1: Source(1, Hit(chunk=chunk, score=1.0, rank=1), SOURCE)}
        assembly = Assembly(sources, hold_uncited=False)
        evidence = "./deploy.sh --region eu-west \\\n    --replicas 3 \\\n    --canary"
        sentence = CitedSentence("Run the script. [1]", "Run the script.", (1,))
        assembly.add(SentenceCheck(sentence, supported=True, evidence={1: evidence}))
        [citation] = assembly.citations()
        assert citation.snippet == evidence

    def test_a_long_code_snippet_is_cut_at_a_line_end(self) -> None:
        code = "\n".join(f"    step_{i} = run({i})" for i in range(60))
        chunk = Chunk(id="c#0", document_id="c", text=code, position=0)
        assembly = Assembly({1: Source(1, Hit(chunk=chunk, score=1.0, rank=1), code)}, hold_uncited=False)
        assembly.add(SentenceCheck(CitedSentence("x [1]", "x", (1,)), supported=True, evidence={1: code}))
        snippet = assembly.citations()[0].snippet
        assert snippet.endswith("\n...") and len(snippet) <= 305
        assert all(line.startswith("    step_") for line in snippet.split("\n")[:-1])

    def test_prose_snippets_stay_on_one_line(self) -> None:
        prose = "The canary gets ten percent\nof traffic for one hour."
        chunk = Chunk(id="p#0", document_id="p", text=prose, position=0)
        assembly = Assembly({1: Source(1, Hit(chunk=chunk, score=1.0, rank=1), prose)}, hold_uncited=False)
        assembly.add(SentenceCheck(CitedSentence("x [1]", "x", (1,)), supported=True, evidence={1: prose}))
        assert assembly.citations()[0].snippet == "The canary gets ten percent of traffic for one hour."
