"""Restore a streamed answer piece by piece, holding back only what could still be a pseudonym.

``StreamRestorer(vault).feed(piece)`` returns the restored text that is final, whatever comes
next; ``finish()`` returns the rest. The concatenation of everything returned equals
``vault.restore`` of the whole stream, however it was cut ("<PER" + "SON_1>" restores as
"<PERSON_1>" does). What is held back is the shortest tail of the stream that is a proper
prefix of a pseudonym the vault issued: a trailing "<PE" while ``<PERSON_1>`` is issued, "Jane R"
while "Jane Roe" is, and nothing after text that cannot begin one.
"""

from __future__ import annotations

from stanchion.guards.vault import PseudonymVault


class StreamRestorer:
    """One stream's restorer; the vault's pseudonyms are read at every piece, so values masked
    while the stream runs (a tool result in an agent loop) are restored too."""

    def __init__(self, vault: PseudonymVault) -> None:
        self.vault = vault
        self._held = ""
        self._finished = False

    @property
    def held(self) -> str:
        """The raw tail not yet returned (for tests and metrics)."""
        return self._held

    def feed(self, piece: str) -> str:
        if self._finished:
            raise ValueError("this stream restorer is finished: make a new one for another stream")
        text = self._held + piece
        pattern = self.vault.restore_pattern()
        if pattern is None:
            self._held = ""
            return text
        out: list[str] = []
        pos = 0
        while True:
            hold = self.vault.partial_start(text, pos)
            m = pattern.search(text, pos)
            if m is not None and m.start() < hold:
                out.append(text[pos : m.start()])
                out.append(self.vault.original(m.group()) or m.group())
                pos = m.end()
                continue
            out.append(text[pos:hold])
            self._held = text[hold:]
            return "".join(out)

    def finish(self) -> str:
        """The held tail, restored; the restorer takes no more pieces."""
        self._finished = True
        rest, self._held = self._held, ""
        return self.vault.restore(rest)
