"""Loaders by source type. Each module is imported only when a unit of its type is loaded."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

from stanchion.errors import IngestError
from stanchion.ingest.loaders.base import LoadContext, Loader
from stanchion.types import Document

# type -> (module, function)
LOADERS: dict[str, tuple[str, str]] = {
    "text": ("text", "load_text"),
    "markdown": ("text", "load_markdown"),
    "html": ("html", "load_html"),
    "pdf": ("pdf", "load_pdf"),
    "beir": ("beir", "load_beir"),
    "slack": ("slack", "load_slack"),
    "email": ("email", "load_email"),
    "irc": ("irc", "load_irc"),
}


def loader_for(kind: str) -> Loader:
    try:
        module, function = LOADERS[kind]
    except KeyError:
        raise IngestError(kind, f"no loader for type {kind!r} (known: {', '.join(LOADERS)})") from None
    loader: Loader = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return loader


def load_unit(kind: str, path: Path, ctx: LoadContext) -> Iterator[Document]:
    return loader_for(kind)(path, ctx)


__all__ = ["LOADERS", "LoadContext", "Loader", "load_unit", "loader_for"]
