"""Chunking: exact token budgets, overlap, structure, semantic cuts, sentences and metadata."""

from __future__ import annotations

import itertools
import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from stanchion.core.sentences import sentence_spans, split_sentences
from stanchion.errors import IngestError
from stanchion.ingest.chunk import ChunkingOptions, Strategy, chunk_document
from stanchion.ingest.tokens import Tokenizer, tokenizer_for
from stanchion.types import Chunk, Document, Section, content_hash

Vectors = npt.NDArray[np.float32]

VOCABULARY = """
the a of retrieval index chunk model token embedding search query answer document section
hyperparameterisation Kubernetes naïve café 3.14 42 e.g. i.e. Dr. U.S. https://example.com/a?b=1
don't state-of-the-art (see) [1] Σ-algebra 東京 résumé x86_64 pre-training bread pod ship
"""
WORDS = tuple(VOCABULARY.split())
STRATEGIES: tuple[Strategy, ...] = ("recursive", "structure", "semantic")

BREAD = [
    "Good bread starts with flour, water, salt and yeast.",
    "Knead the dough for ten minutes until it becomes smooth and elastic.",
    "Let the dough rise in a warm place until it doubles in size.",
    "Shape the loaf gently so that you keep the trapped gas inside.",
    "Bake it in a hot oven, ideally on a preheated stone, until the crust is deep brown.",
    "Let the bread cool on a rack before slicing so the crumb can set.",
]
KUBERNETES = [
    "Every Kubernetes pod gets its own IP address inside the cluster network.",
    "A CNI plugin such as Calico or Cilium wires pod interfaces into that network.",
    "Services give a stable virtual IP in front of a changing set of pods.",
    "The kube-proxy component programs iptables or IPVS rules to route service traffic.",
    "Network policies restrict which pods may talk to each other.",
    "An ingress controller exposes HTTP services outside the cluster.",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return tokenizer_for("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def minilm() -> Any:
    """The packaged all-MiniLM-L6-v2, loaded once for the semantic tests."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from stanchion.core.packaged import minilm_dir

    return SentenceTransformer(str(minilm_dir()), device="cpu")


def minilm_embed(model: Any) -> Callable[[Sequence[str]], Vectors]:
    def embed(texts: Sequence[str]) -> Vectors:
        return np.asarray(model.encode(list(texts), normalize_embeddings=True), dtype=np.float32)

    return embed


def topic_embed(texts: Sequence[str]) -> Vectors:
    """A fake embedder: one axis per topic word, so similarities are known exactly."""
    topics = ("bread", "pod", "ship")
    rows = np.array([[1.0 if t in text.lower() else 0.0 for t in topics] + [0.1] for text in texts])
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


class _Inflated(Tokenizer):
    """The real tokenizer, except that text counted on its own gets ``extra`` more tokens."""

    def __init__(self, inner: Tokenizer, extra: int) -> None:
        self._inner, self._extra = inner, extra

    def count(self, text: str) -> int:
        return self._inner.count(text) + self._extra

    def count_many(self, texts: list[str]) -> list[int]:
        return [n + self._extra for n in self._inner.count_many(texts)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self._inner.offsets(text)


def random_text(rng: random.Random) -> str:
    """Paragraphs of sentences, some list lines, now and then a very long 'word'."""
    paragraphs = []
    for _ in range(rng.randint(1, 8)):
        sentences = []
        for _ in range(rng.randint(1, 10)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 30))]
            if rng.random() < 0.03:
                words.append("".join(rng.choice("abcdefghij0123456789") for _ in range(rng.randint(50, 900))))
            sentences.append(" ".join(words).capitalize() + rng.choice(".!?"))
        sep = "\n- " if rng.random() < 0.2 else " "
        paragraphs.append(sep.join(sentences))
    return "\n\n".join(paragraphs)


def doc_of(*sections: Section, **kwargs: Any) -> Document:
    text = "\n\n".join(s.text for s in sections)
    return Document(id=kwargs.pop("id", "src:doc.md"), text=text, sections=tuple(sections), **kwargs)


def locate(text: str, chunks: list[Chunk]) -> Iterator[tuple[Chunk, int, int]]:
    """Each chunk's span in ``text``, asserting chunks are in order and leave no text out."""
    at, end = 0, 0
    for chunk in chunks:
        start = text.find(chunk.text, at)
        assert start >= 0, chunk.text
        assert text[end:start].strip() == "", "text between chunks was dropped"
        at, end = start + 1, start + len(chunk.text)
        yield chunk, start, end
    assert text[end:].strip() == ""


class TestBudgets:
    """Every chunk fits ``size`` by the tokenizer's own count, overlap included."""

    @pytest.mark.parametrize("strategy", STRATEGIES)
    def test_random_texts_fit_and_lose_nothing(self, tok: Tokenizer, strategy: Strategy) -> None:
        """Generated texts at many sizes: no chunk over budget, none empty, no text dropped."""
        rng = random.Random(1234)
        for case in range(60):
            size = rng.choice([16, 24, 48, 100, 256])
            overlap = rng.choice([0, 1, 4, size // 4, size // 2])
            options = ChunkingOptions(
                strategy=strategy, size=size, overlap=overlap, min_size=rng.choice([0, 8])
            )
            text = random_text(rng)
            doc = Document(id=f"gen:{case}", text=text)
            chunks = chunk_document(doc, options, tok, embed=topic_embed)
            counts = tok.count_many([c.text for c in chunks])
            assert chunks, text
            assert max(counts) <= size, (case, size, overlap)
            assert all(c.text.strip() == c.text and c.text for c in chunks)
            list(locate(text, chunks))

    def test_single_giant_word_is_cut_between_tokens(self, tok: Tokenizer) -> None:
        """A word longer than the budget (a hash, base64) is still cut to size."""
        rng = random.Random(7)
        # BERT reads a >100-character word as one [UNK]; slashes keep this one many tokens long.
        word = "/".join("".join(rng.choice("abcdef0123456789") for _ in range(8)) for _ in range(300))
        chunks = chunk_document(Document(id="d", text=word), ChunkingOptions(size=64, overlap=8), tok)
        assert len(chunks) > 1
        assert max(tok.count_many([c.text for c in chunks])) <= 64
        assert "".join(c.text for c in chunks) == word  # no word start inside it, so no overlap

    def test_budget_holds_for_a_tokenizer_that_counts_slices_higher(self, tok: Tokenizer) -> None:
        """If a slice alone counts more than in context, the run is redone with a smaller budget."""
        higher = _Inflated(tok, extra=3)
        text = random_text(random.Random(21))
        chunks = chunk_document(Document(id="d", text=text), ChunkingOptions(size=48, overlap=8), higher)
        assert max(higher.count_many([c.text for c in chunks])) <= 48
        list(locate(text, chunks))

    def test_impossible_budget_is_an_ingest_error(self, tok: Tokenizer) -> None:
        """A tokenizer whose counts can never be met fails the document with a reason."""
        with pytest.raises(IngestError, match="counts slices inconsistently"):
            chunk_document(
                Document(id="d", text="Some text here."),
                ChunkingOptions(size=16, overlap=0),
                _Inflated(tok, extra=99),
            )

    def test_whitespace_only_document_has_no_chunks(self, tok: Tokenizer) -> None:
        """Blank documents and blank sections produce nothing."""
        assert chunk_document(Document(id="d", text=" \n\n\t "), ChunkingOptions(), tok) == []
        doc = doc_of(Section("  "), Section("Real text here."), Section("\n"))
        assert [c.text for c in chunk_document(doc, ChunkingOptions(), tok)] == ["Real text here."]


class TestOverlap:
    """Consecutive chunks of one section share up to ``overlap`` tokens, cut at a word start."""

    def test_overlap_is_a_suffix_of_the_previous_chunk(self, tok: Tokenizer) -> None:
        """The repeated text ends the earlier chunk, starts the later one, and fits the allowance."""
        rng = random.Random(99)
        text = " ".join(f"{' '.join(rng.choice(WORDS[:16]) for _ in range(12))}." for _ in range(80))
        options = ChunkingOptions(size=64, overlap=16, min_size=0)
        chunks = chunk_document(Document(id="d", text=text), options, tok)
        assert len(chunks) > 5
        longest_word = max(tok.count_many([*WORDS[:16], "."]))
        spans = list(locate(text, chunks))
        for (prev, _, prev_end), (nxt, start, _) in itertools.pairwise(spans):
            shared = text[start:prev_end]
            assert prev.text.endswith(shared) and nxt.text.startswith(shared)
            # Cutting at a word start gives up less than one word's worth of the allowance.
            assert 16 - longest_word < tok.count(shared) <= 16
            assert start == 0 or text[start - 1] == " "

    def test_no_overlap_across_sections(self, tok: Tokenizer) -> None:
        """The first chunk of a section starts with that section's own text."""
        a = Section(" ".join(["alpha beta gamma."] * 40), heading_path=("A",))
        b = Section(" ".join(["delta epsilon zeta."] * 40), heading_path=("B",))
        chunks = chunk_document(doc_of(a, b), ChunkingOptions(size=64, overlap=16), tok)
        first_b = next(c for c in chunks if c.metadata["heading_path"] == ["B"])
        assert first_b.text.startswith("delta")

    def test_zero_overlap_partitions_the_text(self, tok: Tokenizer) -> None:
        """With overlap 0 the chunks tile the text exactly."""
        text = " ".join(f"Sentence number {i} talks about retrieval." for i in range(100))
        chunks = chunk_document(Document(id="d", text=text), ChunkingOptions(size=50, overlap=0), tok)
        assert " ".join(c.text for c in chunks) == text

    def test_small_tail_is_rebalanced(self, tok: Tokenizer) -> None:
        """A last chunk under min_size takes pieces from the one before instead of being a scrap."""
        text = " ".join(["apple"] * 260)
        assert tok.count(text) == 260
        chunks = chunk_document(Document(id="d", text=text), ChunkingOptions(size=256, overlap=0), tok)
        assert [tok.count(c.text) for c in chunks] == [228, 32]


class TestStructure:
    """Sections are never mixed: heading paths and pages stay exact."""

    def test_headings_never_mixed(self, tok: Tokenizer) -> None:
        """Each chunk lies inside one section and carries that section's heading path."""
        rng = random.Random(5)
        sections = [Section(random_text(rng), heading_path=("Guide", f"Part {i}")) for i in range(6)] + [
            Section("Tiny.", heading_path=("Guide",))
        ]
        for strategy in STRATEGIES:
            options = ChunkingOptions(strategy=strategy, size=64, overlap=8)
            chunks = chunk_document(doc_of(*sections), options, tok, embed=topic_embed)
            for chunk in chunks:
                owners = [s for s in sections if chunk.text in s.text]
                assert owners, chunk.text
                assert chunk.metadata["heading_path"] == list(owners[0].heading_path)

    def test_pages_are_carried(self, tok: Tokenizer) -> None:
        """A PDF's page sections give every chunk its exact page number."""
        pages = [Section(f"Page {n} says {'something specific ' * 30}end {n}.", page=n) for n in (1, 2, 3)]
        for strategy in STRATEGIES[:2]:
            options = ChunkingOptions(strategy=strategy, size=48, overlap=8)
            chunks = chunk_document(doc_of(*pages), options, tok)
            assert {c.metadata["page"] for c in chunks} == {1, 2, 3}
            for chunk in chunks:
                assert chunk.text in pages[chunk.metadata["page"] - 1].text

    def test_same_heading_sections_merge(self, tok: Tokenizer) -> None:
        """Consecutive small sections under the same heading become one chunk in recursive mode."""
        doc = doc_of(
            Section("First paragraph.", heading_path=("H",), metadata={"lang": "en", "n": 1}),
            Section("Second paragraph.", heading_path=("H",), metadata={"lang": "en", "n": 2}),
        )
        [chunk] = chunk_document(doc, ChunkingOptions(), tok)
        assert chunk.text == "First paragraph.\n\nSecond paragraph."
        assert chunk.metadata["lang"] == "en" and "n" not in chunk.metadata

    def test_structure_is_one_chunk_per_section(self, tok: Tokenizer) -> None:
        """Wiki sections stay apart even when several would fit in one chunk."""
        body = "This section explains one topic in enough words to stand alone as a chunk. " * 3
        doc = doc_of(*(Section(body + str(i), heading_path=("Wiki",)) for i in range(3)))
        chunks = chunk_document(doc, ChunkingOptions(strategy="structure", size=256), tok)
        assert len(chunks) == 3

    def test_tiny_section_joins_its_neighbour(self, tok: Tokenizer) -> None:
        """Under structure, a section below min_size merges with a same-heading neighbour."""
        body = "This section explains one topic in enough words to stand alone as a chunk. " * 3
        doc = doc_of(Section("Note:", heading_path=("W",)), Section(body, heading_path=("W",)))
        [chunk] = chunk_document(doc, ChunkingOptions(strategy="structure"), tok)
        assert chunk.text.startswith("Note:\n\nThis section")

    def test_short_thread_is_one_chunk(self, tok: Tokenizer) -> None:
        """A Slack thread of short messages is one chunk, with authors and first/last times."""
        messages = [
            Section(f"{who}: {text}", metadata={"author": who, "ts": f"2024-05-0{i + 1}T10:00:00"})
            for i, (who, text) in enumerate(
                [("ana", "Deploy is red again."), ("bo", "Looking."), ("ana", "Thanks!"), ("bo", "Fixed.")]
            )
        ]
        doc = doc_of(*messages, metadata={"channel": "ops", "participants": ["ana", "bo"]})
        [chunk] = chunk_document(doc, ChunkingOptions(strategy="structure"), tok)
        assert chunk.text == "\n".join(m.text for m in messages)
        assert chunk.metadata["channel"] == "ops"
        assert chunk.metadata["authors"] == ["ana", "bo"]
        assert "author" not in chunk.metadata
        assert chunk.metadata["created_at"] == "2024-05-01T10:00:00"
        assert chunk.metadata["updated_at"] == "2024-05-04T10:00:00"

    def test_long_thread_splits_at_message_boundaries(self, tok: Tokenizer) -> None:
        """Messages are packed whole; only a message bigger than size is itself split."""
        rng = random.Random(3)
        texts = [
            f"user{i % 3}: " + " ".join(rng.choice(WORDS[:16]) for _ in range(rng.randint(3, 25)))
            for i in range(40)
        ]
        texts[20] = "user9: " + " ".join(["incident details follow"] * 80)  # ~240 tokens
        messages = [Section(t, metadata={"author": t.split(":")[0]}) for t in texts]
        chunks = chunk_document(
            doc_of(*messages), ChunkingOptions(strategy="structure", size=64, overlap=8), tok
        )
        assert max(tok.count_many([c.text for c in chunks])) <= 64
        whole = [c for c in chunks if "incident" not in c.text]
        for chunk in whole:
            assert all(line in texts for line in chunk.text.split("\n"))
        assert sum("incident" in c.text for c in chunks) >= 4
        assert sum(len(c.text.split("\n")) for c in whole) == 39


class TestSemantic:
    """Cuts at topic changes, from the real MiniLM model and from a fake with known similarities."""

    def test_topic_boundary_is_a_cut(self, tok: Tokenizer, minilm: Any) -> None:
        """Six sentences on bread then six on Kubernetes networking: two chunks, cut between them."""
        text = " ".join(BREAD + KUBERNETES)
        chunks = chunk_document(
            Document(id="d", text=text), ChunkingOptions(strategy="semantic"), tok, embed=minilm_embed(minilm)
        )
        assert [c.text for c in chunks] == [" ".join(BREAD), " ".join(KUBERNETES)]

    def test_one_topic_stays_together(self, tok: Tokenizer, minilm: Any) -> None:
        """A single-topic text that fits in size is one chunk."""
        chunks = chunk_document(
            Document(id="d", text=" ".join(BREAD)),
            ChunkingOptions(strategy="semantic"),
            tok,
            embed=minilm_embed(minilm),
        )
        assert len(chunks) == 1

    def test_fixed_threshold_and_small_groups(self, tok: Tokenizer) -> None:
        """A fixed threshold cuts every topic change; a group under min_size joins a neighbour."""
        text = "The bread rose well. Bread needs salt. The pod crashed. A pod restarts. Ship it. Bread again."
        options = ChunkingOptions(strategy="semantic", semantic_threshold=0.5, min_size=0)
        assert len(chunk_document(Document(id="d", text=text), options, tok, embed=topic_embed)) == 4
        merged = ChunkingOptions(strategy="semantic", semantic_threshold=0.5, min_size=6)
        texts = [c.text for c in chunk_document(Document(id="d", text=text), merged, tok, embed=topic_embed)]
        assert all(tok.count(t) >= 6 for t in texts) and len(texts) < 4

    def test_oversized_topic_is_split_to_size(self, tok: Tokenizer) -> None:
        """A long single-topic run is still cut to the budget, with overlap inside it."""
        text = " ".join(f"Bread recipe step {i} mixes flour and water." for i in range(60))
        options = ChunkingOptions(strategy="semantic", size=48, overlap=8)
        chunks = chunk_document(Document(id="d", text=text), options, tok, embed=topic_embed)
        assert len(chunks) > 3 and max(tok.count_many([c.text for c in chunks])) <= 48

    def test_needs_an_embedder(self, tok: Tokenizer) -> None:
        """Without an embedder the error says what to pass."""
        with pytest.raises(ValueError, match="needs a sentence embedder"):
            chunk_document(Document(id="d", text="x"), ChunkingOptions(strategy="semantic"), tok)


class TestSentences:
    """The regex splitter on abbreviations, numbers, URLs, ellipses and lists."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "Dr. Smith paid $3.50 for e.g. apples. Then he left.",
                ["Dr. Smith paid $3.50 for e.g. apples.", "Then he left."],
            ),
            ("The U.S. Army grew. In 2019 it shrank.", ["The U.S. Army grew.", "In 2019 it shrank."]),
            (
                "See https://example.com/a.b for more. Fig. 3 shows it.",
                ["See https://example.com/a.b for more.", "Fig. 3 shows it."],
            ),
            ("Wait... then what? Nothing... Really!", ["Wait... then what?", "Nothing...", "Really!"]),
            (
                'Smith et al. (2019) agree. He said "Stop." Then left.',
                ["Smith et al. (2019) agree.", 'He said "Stop."', "Then left."],
            ),
            (
                "Steps:\n1. Install it.\n2. Run it.\n- done",
                ["Steps:", "1. Install it.", "2. Run it.", "- done"],
            ),
            ("A wrapped line\ncontinues here. Next one.", ["A wrapped line\ncontinues here.", "Next one."]),
            (
                "Services route to endpoints. kube-proxy does it.",
                ["Services route to endpoints.", "kube-proxy does it."],
            ),
            ("他来了。她走了。", ["他来了。", "她走了。"]),
        ],
    )
    def test_splits(self, text: str, expected: list[str]) -> None:
        """Each case splits exactly as written."""
        assert split_sentences(text) == expected

    def test_spans_cover_every_character(self) -> None:
        """On random text every non-space character lies in exactly one sentence span."""
        rng = random.Random(11)
        for _ in range(50):
            text = random_text(rng)
            covered = [False] * len(text)
            for a, b in sentence_spans(text):
                assert text[a:b] == text[a:b].strip() and a < b
                for i in range(a, b):
                    assert not covered[i]
                    covered[i] = True
            assert all(covered[i] or text[i].isspace() for i in range(len(text)))


class TestMetadata:
    """Ids, positions and metadata that stores, filters and citations rely on."""

    def test_fields(self, tok: Tokenizer) -> None:
        """Document fields, section keys, chunker keys; reserved keys cannot be overwritten."""
        doc = doc_of(
            Section(
                "Install the agent. " * 60, heading_path=("Setup", "Linux"), page=4, metadata={"lang": "en"}
            ),
            id="wiki:setup.md",
            title="Setup",
            source="wiki",
            path="docs/setup.md",
            access_groups=("eng",),
            metadata={"author": "ana", "updated_at": "2024-01-01", "tags": ("a", "b"), "page": 99},
        )
        chunks = chunk_document(doc, ChunkingOptions(size=64), tok)
        assert [c.position for c in chunks] == list(range(len(chunks)))
        for chunk in chunks:
            assert chunk.id == f"wiki:setup.md#{chunk.position}"
            assert chunk.document_id == "wiki:setup.md" and chunk.access_groups == ("eng",)
            meta = dict(chunk.metadata)
            assert json.loads(json.dumps(meta)) == meta
            assert meta == {
                "source": "wiki",
                "document_id": "wiki:setup.md",
                "title": "Setup",
                "path": "docs/setup.md",
                "heading_path": ["Setup", "Linux"],
                "page": 4,
                "position": chunk.position,
                "content_hash": content_hash(chunk.text),
                "author": "ana",
                "updated_at": "2024-01-01",
                "tags": ["a", "b"],
                "lang": "en",
            }

    def test_ids_stable_across_runs(self, tok: Tokenizer) -> None:
        """Chunking the same document twice gives identical chunks."""
        doc = Document(id="d", text=random_text(random.Random(8)))
        assert chunk_document(doc, ChunkingOptions(size=48), tok) == chunk_document(
            doc, ChunkingOptions(size=48), tok
        )

    def test_title_is_not_prepended(self, tok: Tokenizer) -> None:
        """Chunk text is the document's text only."""
        [chunk] = chunk_document(Document(id="d", text="Body.", title="Title"), ChunkingOptions(), tok)
        assert chunk.text == "Body."


class TestOptions:
    """Options are checked with the same bounds as the spec."""

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"size": 0},
            {"overlap": -1},
            {"size": 64, "overlap": 64},
            {"min_size": -1},
            {"semantic_threshold": 1.5},
            {"strategy": "x"},
        ],
    )
    def test_rejects(self, kwargs: dict[str, Any]) -> None:
        """Out-of-range values raise ValueError."""
        with pytest.raises(ValueError):
            ChunkingOptions(**kwargs)
