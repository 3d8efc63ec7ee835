"""Compare PDF text extractors that fit the Apache-2.0 licence: word boundaries, order, tables, speed.

    python bench/pdf_extractors.py [--every 4] [--data ../shared/data]

Extractors: pypdf (the loader's old one), pdfminer.six, pdfplumber (default ``extract_text``),
pypdfium2 (PDFium's text), and the loader as shipped (PDFium + table rows). Measured on:

- the four real Debian PDFs (``docs-debian/pdf``, 618 pages), every ``--every``-th page, the same
  pages for every extractor;
- PDFs generated here with reportlab (``tests/ingest/pdf_samples.py``): justified lines, two
  columns, a ruled table and an unruled cash-flow statement.

Method, word boundaries: a vocabulary is built from the same manuals' HTML and plain-text
versions (Debian Handbook HTML, Policy HTML and policy.txt; words seen at least twice). A
*run-together word* is an alphabetic token of 6+ letters that is not in the vocabulary but splits
into two or more vocabulary words of 2+ letters (each seen 5+ times): "ofthepackage" is, "dpkg"
is not. CamelCase names that the HTML also writes apart count against every extractor alike.
Reported per 1,000 tokens, and as the share of pages with 10 or more (the issue's measure).

Method, order and fidelity: for debian-policy.pdf, the share of the page's word 4-grams that occur
in policy.txt (same text, rendered by Sphinx as plain text): lost spaces, split words and
scrambled order all lower it.

Tables: on the generated ruled and cash-flow pages, the rows whose cells come out in order on
one line (a row split over lines loses its header in any case); for the loader, the rows that
come out as ``label — column: value`` lines. Then the table finders, the rows each recovers cell
for cell: pdfplumber's ``extract_tables`` (ruling lines, or text alignment) and ours.

Speed: pages per second, each extractor alone over the sampled pages, one process, 2 cores.

``--retrieval``: page hit@1/5/10 of BM25 (the store's analyser and scoring) over every page of
the four PDFs as one document each, for the questions of ``bench/collections/debian-manuals``
whose evidence is a PDF page, all of them and those a table answers.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ingest"))

import pdf_samples  # noqa: E402  (tests/ingest: the generated PDFs the tests use)

from stanchion.ingest.loaders import pdf as loader  # noqa: E402

WORD = re.compile(r"[A-Za-z]+")
PDFS = ("debian-policy.pdf", "debian-reference.en.pdf", "developers-reference.pdf", "fhs-3.0.pdf")

Extract = Callable[[Path, list[int]], list[str]]


def _pypdf(path: Path, pages: list[int]) -> list[str]:
    from pypdf import PdfReader

    reader = PdfReader(path)
    return [reader.pages[i].extract_text() or "" for i in pages]


def _pdfminer(path: Path, pages: list[int]) -> list[str]:
    from pdfminer.high_level import extract_text

    text = extract_text(str(path), page_numbers=pages)
    parts = text.split("\x0c")
    return (parts + [""] * len(pages))[: len(pages)]


def _pdfplumber(path: Path, pages: list[int]) -> list[str]:
    import pdfplumber

    with pdfplumber.open(path) as pdf:
        return [pdf.pages[i].extract_text() or "" for i in pages]


def _pdfium(path: Path, pages: list[int]) -> list[str]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(path)
    try:
        out = []
        for i in pages:
            page = doc[i]
            textpage = page.get_textpage()
            out.append(textpage.get_text_bounded().replace("\x02", ""))
            textpage.close()
            page.close()
        return out
    finally:
        doc.close()


def _loader(path: Path, pages: list[int]) -> list[str]:
    """The loader as shipped: PDFium text with tables as row lines (no header stripping)."""
    with loader._open(path) as doc, loader._PDFIUM:
        read = [loader._read_page(doc, i, tables=True) for i in pages]
    TABLES_FOUND[path.name] = sum(page.tables for page in read)
    return [page.text for page in read]


TABLES_FOUND: dict[str, int] = {}


EXTRACTORS: dict[str, Extract] = {
    "pypdf": _pypdf,
    "pdfminer.six": _pdfminer,
    "pdfplumber": _pdfplumber,
    "pypdfium2": _pdfium,
    "loader (pypdfium2 + tables)": _loader,
}


def vocabulary(data: Path) -> Counter[str]:
    """Word counts from the HTML and plain-text versions of the same manuals."""
    counts: Counter[str] = Counter()
    debian = data / "docs-debian"
    for html in [
        *sorted((debian / "debian-handbook-en-html").glob("*.html")),
        *sorted(debian.glob("debian-policy/**/*.html")),
    ]:
        text = BeautifulSoup(html.read_bytes(), "lxml").get_text(" ")
        counts.update(w.lower() for w in WORD.findall(text))
    policy = debian / "debian-policy" / "policy.txt"
    counts.update(w.lower() for w in WORD.findall(policy.read_text(encoding="utf-8", errors="replace")))
    return counts


class RunTogether:
    """Tokens not in the vocabulary that split into vocabulary words (see the module docstring)."""

    def __init__(self, vocab: Counter[str]) -> None:
        self.known = {w for w, n in vocab.items() if n >= 2}
        self.parts = {w for w, n in vocab.items() if n >= 5 and len(w) >= 2}
        self.split = lru_cache(maxsize=None)(self._split)

    def _split(self, word: str) -> bool:
        """Whether ``word`` is two or more parts (dynamic programming over prefixes)."""
        ok = [False] * (len(word) + 1)
        ok[0] = True
        pieces = [0] * (len(word) + 1)
        for end in range(2, len(word) + 1):
            for begin in range(max(0, end - 20), end - 1):
                if ok[begin] and word[begin:end] in self.parts and (begin > 0 or end < len(word)):
                    ok[end] = True
                    pieces[end] = pieces[begin] + 1
                    break
        return ok[-1] and pieces[-1] >= 2

    def count(self, text: str) -> tuple[int, int]:
        """(run-together tokens, all tokens) in ``text``."""
        tokens = [w.lower() for w in WORD.findall(text)]
        bad = sum(1 for w in tokens if len(w) >= 6 and w not in self.known and self.split(w))
        return bad, len(tokens)


def four_grams(text: str) -> list[tuple[str, ...]]:
    words = [w.lower() for w in WORD.findall(text)]
    return [tuple(words[i : i + 4]) for i in range(len(words) - 3)]


def generated(tmp: Path) -> dict[str, Path]:
    return {
        "justified": pdf_samples.justified(tmp / "justified.pdf"),
        "two_columns": pdf_samples.two_columns(tmp / "two_columns.pdf"),
        "ruled_table": pdf_samples.ruled_table(tmp / "ruled.pdf"),
        "cash_flows": pdf_samples.cash_flows(tmp / "cash.pdf"),
    }


def _rows_on_one_line(text: str, rows: list[list[str]]) -> int:
    lines = text.split("\n")
    hits = 0
    for row in rows:
        cells = [c for c in row if c]
        pattern = re.compile(r"\s*.*?".join(re.escape(c) for c in cells))
        hits += any(pattern.search(line) for line in lines)
    return hits


def _labelled_rows(text: str) -> int:
    return sum(f"{label} \u2014 2018: {a}; 2017: {b}" in text for label, a, b in pdf_samples.CASH_ROWS if a)


def _plumber_tables(path: Path, strategy: str) -> list[list[str]]:
    import pdfplumber

    settings = {"vertical_strategy": strategy, "horizontal_strategy": strategy}
    with pdfplumber.open(path) as pdf:
        return [[c or "" for c in row] for t in pdf.pages[0].extract_tables(settings) for row in t]


def _loader_tables(path: Path) -> list[list[str]]:
    with loader._open(path) as doc, loader._PDFIUM:
        page = doc[0]
        textpage = page.get_textpage()
        found = loader._tables(textpage)
        textpage.close()
        page.close()
    return [row for table in found for row in [table.header, *table.rows]]


def _rows_found(rows: list[list[str]], expected: list[list[str]]) -> int:
    """Expected rows found as a row whose cells match (leaders dropped; a label may gain its group)."""

    def cells(row: list[str]) -> list[str]:
        return [" ".join(re.sub(r"(\s*\.){3,}", " ", c).split()) for c in row if c.strip()]

    got = [cells(row) for row in rows]
    return sum(
        any(len(g) == len(e) and g[0].endswith(e[0]) and g[1:] == e[1:] for g in got)
        for e in (cells(row) for row in expected)
    )


def table_finders(samples: dict[str, Path]) -> list[tuple[str, str, str]]:
    """Rows each table finder recovers cell for cell from the generated ruled and unruled tables."""
    cash = [[label, a, b] for label, a, b in pdf_samples.CASH_ROWS if a]
    finders: dict[str, Callable[[Path], list[list[str]]]] = {
        "pdfplumber extract_tables (lines)": lambda p: _plumber_tables(p, "lines"),
        "pdfplumber extract_tables (text)": lambda p: _plumber_tables(p, "text"),
        "loader (ingest/pdf_tables.py)": _loader_tables,
    }
    return [
        (
            name,
            f"{_rows_found(find(samples['ruled_table']), pdf_samples.RULED_ROWS)}/{len(pdf_samples.RULED_ROWS)}",
            f"{_rows_found(find(samples['cash_flows']), cash)}/{len(cash)}",
        )
        for name, find in finders.items()
    ]


def page_retrieval(pdf_dir: Path, names: list[str]) -> list[tuple[str, str, int, dict[int, float]]]:
    """Page hit@k of BM25 (the store's analyser and scoring) with one document per page of the
    four PDFs, for the questions of ``bench/collections/debian-manuals`` whose evidence is a page
    of them: all, and those answered by a table."""
    import json

    from stanchion.core.analyze import query_terms, terms
    from stanchion.index.bm25 import BM25Index

    folder = ROOT / "bench" / "collections" / "debian-manuals"
    queries = {q["_id"]: q for q in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())}
    evidence: dict[str, set[tuple[str, int]]] = {}
    for line in (folder / "qrels.tsv").read_text().splitlines()[1:]:
        qid, doc, passage, _ = line.split("\t")
        if doc.endswith(".pdf") and passage.startswith("page:"):
            evidence.setdefault(qid, set()).add((Path(doc).name, int(passage[5:])))
    import pypdfium2 as pdfium

    pages = {}
    for name in PDFS:
        doc = pdfium.PdfDocument(pdf_dir / name)
        pages[name] = list(range(len(doc)))
        doc.close()
    out = []
    for label in names:
        ids: list[tuple[str, int]] = []
        texts: list[str] = []
        for name in PDFS:
            for number, text in zip(pages[name], EXTRACTORS[label](pdf_dir / name, pages[name]), strict=True):
                ids.append((name, number + 1))
                texts.append(" ".join(terms(text)))
        index = BM25Index(enumerate(texts))
        for tag in ("all", "table"):
            chosen = [q for q in evidence if tag == "all" or tag in queries[q].get("tags", ())]
            hits = dict.fromkeys((1, 5, 10), 0.0)
            for q in chosen:
                top = [ids[row] for row, _ in index.search(query_terms(queries[q]["text"]), 10)]
                for k in hits:
                    hits[k] += any(t in evidence[q] for t in top[:k]) / len(chosen)
            out.append((label, tag, len(chosen), hits))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--every", type=int, default=4, help="sample every Nth page of the real PDFs")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--retrieval",
        action="store_true",
        help="also page hit@k of BM25 on every page (pypdf, pypdfium2, loader)",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # pdfminer and pypdf warn about odd fonts on every page
    warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # the Handbook is XHTML; lxml reads it fine
    pdf_dir = args.data / "docs-debian" / "pdf"
    if not pdf_dir.is_dir():
        sys.exit(f"no Debian PDFs at {pdf_dir}: pass --data (the shared data folder)")

    import pypdfium2 as pdfium

    sample: dict[str, list[int]] = {}
    for name in PDFS:
        doc = pdfium.PdfDocument(pdf_dir / name)
        sample[name] = list(range(0, len(doc), args.every))
        doc.close()
    n_pages = sum(len(p) for p in sample.values())
    vocab = vocabulary(args.data)
    judge = RunTogether(vocab)
    policy_grams = set(
        four_grams((args.data / "docs-debian/debian-policy/policy.txt").read_text(encoding="utf-8"))
    )

    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        samples = generated(Path(tmp_name))
        for label, extract in EXTRACTORS.items():
            texts: dict[str, list[str]] = {}
            started = time.perf_counter()
            for name in PDFS:
                texts[name] = extract(pdf_dir / name, sample[name])
            seconds = time.perf_counter() - started
            bad = tokens = bad_pages = 0
            for pages in texts.values():
                for text in pages:
                    b, t = judge.count(text)
                    bad += b
                    tokens += t
                    bad_pages += b >= 10
            grams = [g for text in texts["debian-policy.pdf"] for g in four_grams(text)]
            fidelity = sum(g in policy_grams for g in grams) / max(len(grams), 1)

            gen = {key: extract(path, [0])[0] for key, path in samples.items()}
            justified_words = WORD.findall(pdf_samples.JUSTIFIED)
            found = Counter(w.lower() for w in WORD.findall(gen["justified"]))
            need = Counter(w.lower() for w in justified_words)
            justified_recall = sum(min(found[w], n) for w, n in need.items()) / sum(need.values())
            flat = " ".join(gen["two_columns"].split())
            left, right = (
                " ".join(pdf_samples.LEFT_COLUMN.split()),
                " ".join(pdf_samples.RIGHT_COLUMN.split()),
            )
            order_ok = left in flat and right in flat and flat.index(left) < flat.index(right)
            ruled = _rows_on_one_line(gen["ruled_table"], pdf_samples.RULED_ROWS)
            cash_rows = [[label, a, b] for label, a, b in pdf_samples.CASH_ROWS if a]
            cash = _rows_on_one_line(gen["cash_flows"], cash_rows)
            results.append(
                (
                    label,
                    1000 * bad / max(tokens, 1),
                    bad_pages / n_pages,
                    fidelity,
                    justified_recall,
                    order_ok,
                    f"{ruled}/{len(pdf_samples.RULED_ROWS)}",
                    f"{cash}/{len(cash_rows)} ({_labelled_rows(gen['cash_flows'])} labelled)",
                    n_pages / seconds,
                )
            )
            print(f"  {label}: {seconds:.1f} s", file=sys.stderr)
        finders = table_finders(samples)

    print(
        f"Real PDFs: {n_pages} pages (every {args.every}th of {', '.join(PDFS)}); vocabulary {len(judge.known):,} words"
    )
    print()
    print(
        "| extractor | run-together / 1k tokens | pages with >= 10 | policy 4-grams found in policy.txt "
        "| justified words (generated) | two columns in order | ruled table rows on one line "
        "| cash-flow rows on one line | pages/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, per_k, share, fidelity, recall, order, ruled, cash, speed in results:
        print(
            f"| {label} | {per_k:.2f} | {share:.1%} | {fidelity:.3f} | {recall:.2f} | {'yes' if order else 'no'} "
            f"| {ruled} | {cash} | {speed:.1f} |"
        )
    print()
    print(
        f"Tables the loader found on those pages: {sum(TABLES_FOUND[name] for name in PDFS)} ({TABLES_FOUND})"
    )
    print()
    print("| table finder | ruled table rows, cell for cell | unruled cash-flow rows, cell for cell |")
    print("|---|---|---|")
    for name, ruled, cash in finders:
        print(f"| {name} | {ruled} | {cash} |")
    if args.retrieval:
        print()
        print("| page text from | questions | page hit@1 | hit@5 | hit@10 |")
        print("|---|---|---|---|---|")
        for label, tag, n, hits in page_retrieval(
            pdf_dir, ["pypdf", "pypdfium2", "loader (pypdfium2 + tables)"]
        ):
            print(f"| {label} | {tag} ({n}) | {hits[1]:.3f} | {hits[5]:.3f} | {hits[10]:.3f} |")
    base = next(r for r in results if r[0] == "pypdf")[-1]
    print()
    print("speed vs pypdf: " + ", ".join(f"{r[0]} {r[-1] / base:.2f}x" for r in results if r[0] != "pypdf"))


if __name__ == "__main__":
    main()
