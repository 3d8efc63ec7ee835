"""Stanchion: spec-driven RAG over private data, with hybrid retrieval that is measured.

The public API: load a spec, build the app, ingest, search::

    from stanchion import build, load_spec
    app = build(load_spec())
    app.pipeline.run()
    hits = app.retriever.search("who approves expenses above $5,000?", k=5).hits
"""

import os as _os

# Before numpy loads: OpenBLAS's spinning threads fight torch's for the cores, which tripled query
# embedding time at p95 on 2 cores (DESIGN.md, offline notes). Users may still override it.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from stanchion.app import App, build
from stanchion.core.embed import Embedder, SentenceTransformerEmbedder
from stanchion.core.filters import Condition, SearchFilter, build_filter
from stanchion.errors import (
    EmbeddingError,
    IngestError,
    SearchError,
    SpecError,
    StanchionError,
    StoreError,
)
from stanchion.index.sqlite import SQLiteStore
from stanchion.index.store import Store
from stanchion.retrieve.search import Retriever, SearchResult
from stanchion.spec import Spec, load_spec, parse_spec
from stanchion.types import Chunk, Document, Hit, Section

__all__ = [
    "App",
    "Chunk",
    "Condition",
    "Document",
    "Embedder",
    "EmbeddingError",
    "Hit",
    "IngestError",
    "Retriever",
    "SQLiteStore",
    "SearchError",
    "SearchFilter",
    "SearchResult",
    "Section",
    "SentenceTransformerEmbedder",
    "Spec",
    "SpecError",
    "StanchionError",
    "Store",
    "StoreError",
    "build",
    "build_filter",
    "load_spec",
    "parse_spec",
]
