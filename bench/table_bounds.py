"""Tables and chunking on hostile input: text size, seconds and peak RSS, this code against a baseline.

The red team's cases (tests/test_red_team_dec6.py, at full size): rowspans over empty ``<tr>``
rows (N*N cells from N), a 5 KB ``<th>`` repeated over 2,000 rows, a 1,000-column header over
rows of ``colspan=1000``, and one long line of prose that opens like a table row ("Note: ")
chunked fixed and semantic (its plain twin alongside, so the ratio shows the row test's cost).
Each case runs in a child process of its own with ``--src`` first on ``sys.path``, so its peak
RSS is its own.

    git archive <before> src | tar -x -C /tmp/base   # the baseline: any revision's src
    python bench/table_bounds.py --baseline /tmp/base/src
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ["rowspan_empty_rows", "long_header", "wide_colspan", "note_line_fixed", "note_line_semantic"]


def _html(case: str) -> str:
    if case == "rowspan_empty_rows":
        n = 1500
        cells = "".join(f"<td>c{i}</td>" for i in range(n))
        spans = "".join(f"<td rowspan={n}>value{i}</td>" for i in range(n))
        return f"<html><body><h1>R</h1><table><tr><td></td>{cells}</tr><tr>{spans}</tr>{'<tr></tr>' * (n - 1)}</table></body></html>"
    if case == "long_header":
        head = " ".join(f"word{i}" for i in range(700))
        rows = "<tr><td>1</td><td>2</td></tr>" * 2000
        return f"<html><body><h1>P</h1><table><thead><tr><th>{head}</th><th>{head}x</th></tr></thead>{rows}</table></body></html>"
    head = "".join(f"<th>h{i}</th>" for i in range(1000))
    rows = "".join(f'<tr><td colspan="1000">r{i}</td></tr>' for i in range(2800))
    return f"<html><body><h1>W</h1><table><tr>{head}</tr>{rows}</table></body></html>"


def _run_case(case: str) -> dict[str, float]:
    """In the child: one case, with whatever ``stanchion`` is first on the path."""
    if case.startswith("note_line"):
        import numpy as np

        from stanchion.ingest.chunk import ChunkingOptions, chunk_document
        from stanchion.ingest.tokens import tokenizer_for
        from stanchion.types import Document

        tokenizer = tokenizer_for("all-MiniLM-L6-v2")
        rng = np.random.default_rng(0)

        def embed(texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
            vectors = rng.normal(size=(len(texts), 8)).astype(np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        semantic = case.endswith("semantic")
        body = " ".join(f"This is sentence number {i} of the long line." for i in range(12000))
        body = body[:93_000] if semantic else body
        options = ChunkingOptions(strategy="semantic") if semantic else ChunkingOptions()

        def seconds(text: str) -> float:
            started = time.perf_counter()
            doc = Document(id="s:a.txt", text=text, title="a", source="s")
            chunk_document(doc, options, tokenizer, embed if semantic else None)
            return time.perf_counter() - started

        plain = seconds(body)
        return {"input_kb": len(body) / 1e3, "plain_s": plain, "seconds": seconds("Note: " + body)}
    from stanchion.ingest.loaders.base import LoadContext
    from stanchion.ingest.loaders.html import load_html

    html = _html(case)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page.html"
        path.write_text(html, encoding="utf-8")
        started = time.perf_counter()
        text = "".join(doc.text for doc in load_html(path, LoadContext("s", path.name)))
        elapsed = time.perf_counter() - started
    return {"input_kb": len(html) / 1e3, "output_kb": len(text) / 1e3, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="a baseline checkout's src folder")
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        sys.path.insert(0, args.src)
        result = _run_case(args.case)
        result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        print(json.dumps(result))
        return
    sources = ([("baseline", args.baseline)] if args.baseline else []) + [("ours", args.src)]
    for case in CASES:
        for name, src in sources:
            command = [sys.executable, __file__, "--case", case, "--src", src]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            size = (
                f"{r['input_kb']:.0f} KB -> {r['output_kb']:.0f} KB ({r['output_kb'] / r['input_kb']:.1f}x)"
                if "output_kb" in r
                else f"{r['input_kb']:.0f} KB, plain line {r['plain_s']:.2f} s"
            )
            print(f"{case:20} {name:8} {size:34} {r['seconds']:7.2f} s {r['rss_mb']:6.0f} MB RSS", flush=True)


if __name__ == "__main__":
    main()
