"""Labelled question pairs for ``stanchion eval cache``: reading the three layouts, and embedding
both sides with a cache keyed by text hash (an eval rerun embeds nothing it has seen).

Layouts (auto-detected from the file's first lines unless named):

- ``mrpc``: Microsoft Research Paraphrase Corpus, TAB-separated with the header
  ``Quality  #1 ID  #2 ID  #1 String  #2 String`` (Quality 1 = paraphrase).
- ``stsb``: STS Benchmark, TAB-separated, no header: genre, file, years, index, score (0-5),
  sentence1, sentence2. Score >= 4 is "same", <= 2 "different"; pairs in between are left out.
  A folder holding ``sts-train.csv`` / ``sts-dev.csv`` reads its dev split.
- ``tsv``: the project's own, TAB-separated with the header ``label  kind  question_a
  question_b`` (label 1 = same meaning), as in the shipped ``cache/adversarial_pairs.tsv``.
"""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stanchion.core.embed import Embedder
from stanchion.errors import SpecError

LAYOUTS = ("mrpc", "stsb", "tsv")
STSB_SAME = 4.0  # STS-B score at or above which a pair means the same
STSB_DIFFERENT = 2.0  # at or below which it does not
ADVERSARIAL = "adversarial"  # --pairs value naming the shipped set


@dataclass(frozen=True, slots=True)
class Pair:
    label: bool  # True: the two ask the same thing (a hit is right)
    a: str
    b: str
    kind: str = ""  # tsv layout: negation, number, date, entity, unit, paraphrase, ...


def adversarial_path() -> Path:
    """The adversarial pair set shipped in the package."""
    return Path(str(files("stanchion.cache").joinpath("adversarial_pairs.tsv")))


def resolve_pairs_path(value: str | Path | None) -> Path:
    """``--pairs``: a file or folder, or ``adversarial`` / nothing for the shipped set."""
    if value is None or str(value) == ADVERSARIAL:
        return adversarial_path()
    return Path(value)


def detect_layout(path: Path) -> str:
    """``mrpc``, ``stsb`` or ``tsv`` from the first line of the file (or the files in a folder)."""
    if path.is_dir():
        if (path / "msr_paraphrase_train.txt").is_file() or (path / "msr_paraphrase_test.txt").is_file():
            return "mrpc"
        if (path / "sts-dev.csv").is_file() or (path / "sts-train.csv").is_file():
            return "stsb"
        raise SpecError(
            f"{path} is a folder with no pair file in it: give an MRPC file (msr_paraphrase_*.txt), "
            "an STS-B file (sts-*.csv) or a TSV with the header label, kind, question_a, question_b"
        )
    if not path.is_file():
        raise SpecError(f"{path} not found: --pairs takes a pair file, a folder of one, or 'adversarial'")
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline().rstrip("\r\n")
    cells = [c.strip().lower() for c in first.split("\t")]
    if cells[:1] == ["quality"] and len(cells) >= 5:
        return "mrpc"
    if cells[:4] == ["label", "kind", "question_a", "question_b"]:
        return "tsv"
    if len(cells) >= 7 and _is_number(cells[4]):
        return "stsb"
    raise SpecError(
        f"{path} is in no known pair layout: its first line should be the MRPC header "
        "('Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String'), an STS-B row "
        "(genre, file, years, index, score, sentence1, sentence2) or the TSV header "
        "'label<TAB>kind<TAB>question_a<TAB>question_b'; or pass --layout"
    )


def load_pairs(path: Path, layout: str | None = None) -> list[Pair]:
    """The labelled pairs of ``path`` (a folder: its test split, else its train/dev one)."""
    chosen = layout or detect_layout(path)
    if chosen not in LAYOUTS:
        raise SpecError(f"unknown layout {chosen!r}; choose one of {', '.join(LAYOUTS)}")
    if path.is_dir():
        names = {
            "mrpc": ("msr_paraphrase_test.txt", "msr_paraphrase_train.txt"),
            "stsb": ("sts-test.csv", "sts-dev.csv", "sts-train.csv"),
            "tsv": ("adversarial_pairs.tsv", "pairs.tsv"),
        }[chosen]
        found = next((path / n for n in names if (path / n).is_file()), None)
        if found is None:
            raise SpecError(f"{path} holds none of {', '.join(names)} for layout {chosen}")
        path = found
    if not path.is_file():
        raise SpecError(f"{path} not found: --pairs takes a pair file, a folder of one, or 'adversarial'")
    reader = {"mrpc": _read_mrpc, "stsb": _read_stsb, "tsv": _read_tsv}[chosen]
    pairs = reader(path)
    if not pairs:
        raise SpecError(f"{path} holds no labelled pairs in the {chosen} layout")
    return pairs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _read_mrpc(path: Path) -> list[Pair]:
    pairs = []
    for number, row in enumerate(_rows(path), 1):
        if not row or row[0].strip().lower() == "quality":
            continue
        if len(row) < 5 or row[0].strip() not in ("0", "1"):
            raise SpecError(
                f"{path}:{number}: an MRPC row is Quality (0/1), #1 ID, #2 ID, #1 String, #2 String"
            )
        pairs.append(Pair(row[0].strip() == "1", row[3], row[4], "mrpc"))
    return pairs


def _read_stsb(path: Path) -> list[Pair]:
    pairs = []
    for number, row in enumerate(_rows(path), 1):
        if not row:
            continue
        if len(row) < 7 or not _is_number(row[4]):
            raise SpecError(f"{path}:{number}: an STS-B row is genre, file, years, index, score, s1, s2")
        score = float(row[4])
        if score >= STSB_SAME or score <= STSB_DIFFERENT:
            pairs.append(Pair(score >= STSB_SAME, row[5], row[6], "stsb"))
    return pairs


def _read_tsv(path: Path) -> list[Pair]:
    pairs = []
    for number, row in enumerate(_rows(path), 1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if number == 1 and row[0].strip().lower() == "label":
            continue
        if len(row) < 4 or row[0].strip() not in ("0", "1"):
            raise SpecError(f"{path}:{number}: a TSV pair row is label (0/1), kind, question_a, question_b")
        pairs.append(Pair(row[0].strip() == "1", row[2].strip(), row[3].strip(), row[1].strip()))
    return pairs


Vectors = npt.NDArray[np.float32]


class EmbeddingCache:
    """Vectors of texts by (model, text hash) in one SQLite file; safe to share between runs."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, hash TEXT, vec BLOB, PRIMARY KEY (model, hash))"
        )

    def embed(
        self, embedder: Embedder, texts: Sequence[str], *, progress: Callable[[int], None] | None = None
    ) -> Vectors:
        """Unit rows for ``texts`` in order; only texts never seen by this model are embedded."""
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        known: dict[str, Vectors] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            for key, blob in self._db.execute(
                f"SELECT hash, vec FROM vectors WHERE model = ? AND hash IN ({marks})",
                (embedder.name, *part),
            ):
                known[key] = np.frombuffer(blob, dtype=np.float32)
        if progress is not None:
            progress(sum(1 for k in keys if k in known))
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in known))
        counts = Counter(texts)
        for start in range(0, len(missing), 256):
            batch = missing[start : start + 256]
            vectors = embedder.embed(batch)
            rows = []
            for text, vec in zip(batch, vectors, strict=True):
                key = hashlib.sha256(text.encode("utf-8")).hexdigest()
                known[key] = np.asarray(vec, dtype=np.float32)
                rows.append((embedder.name, key, known[key].tobytes()))
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
            if progress is not None:
                progress(sum(counts[t] for t in batch))
        dim = len(next(iter(known.values()))) if known else 0
        return np.stack([known[k] for k in keys]) if keys else np.zeros((0, dim), dtype=np.float32)

    def close(self) -> None:
        self._db.close()
