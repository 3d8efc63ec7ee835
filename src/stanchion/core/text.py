"""What the index sees of a chunk: its text with the document title and heading path in front.

Prefixing the title and section path (a "contextual chunk header") lets both the keyword index
and the embedding match a chunk on what its document is about, not only on its own words.
"""

from __future__ import annotations

from stanchion.types import Chunk


def index_text(chunk: Chunk) -> str:
    title = str(chunk.metadata.get("title") or "").strip()
    headings = [str(h) for h in chunk.metadata.get("heading_path") or () if str(h).strip()]
    if headings and title and headings[0] == title:
        headings = headings[1:]
    header = " > ".join([title, *headings] if title else headings)
    if not header or chunk.text.strip() == header:
        # A record that is only its title (a BEIR line with no text) is indexed once, not twice.
        return chunk.text
    return f"{header}\n{chunk.text}"
