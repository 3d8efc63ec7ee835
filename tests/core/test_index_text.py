"""What the index sees of a chunk (``core.text.index_text``): the title and heading path in front,
once."""

from __future__ import annotations

from stanchion.core.text import index_text
from stanchion.types import Chunk


def chunk(text: str, **metadata: object) -> Chunk:
    return Chunk("d#0", "d", text, 0, metadata=dict(metadata))


def test_title_and_headings_lead_the_text() -> None:
    text = index_text(
        chunk("Pallets ship on Tuesdays.", title="Warehouse", heading_path=["Warehouse", "Shipping"])
    )
    assert text == "Warehouse > Shipping\nPallets ship on Tuesdays."


def test_a_chunk_that_is_only_its_title_is_indexed_once() -> None:
    """A BEIR record with a title and no text keeps its title as text: not indexed twice."""
    assert index_text(chunk("Aspirin and stroke", title="Aspirin and stroke")) == "Aspirin and stroke"


def test_without_title_or_headings_the_text_is_unchanged() -> None:
    assert index_text(chunk("Plain text.")) == "Plain text."
