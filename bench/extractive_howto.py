"""How-to questions over the Debian Administrator's Handbook, answered by the extractive model.

Each question of ``bench/collections/debian-howto/questions.jsonl`` names the key facts a full
answer must hold (a command, a file, an option; each fact a list of accepted spellings). The
handbook's HTML is ingested once into an index under the eval cache (``~/.cache/stanchion/eval``,
or ``$STANCHION_CACHE_DIR``), keyed by the pages' content and the chunking, and reused as it is
(delete the file to rebuild it: about 40 minutes on 2 busy cores); then every
question goes through the whole answer pipeline (retrieve, pack, the extractive model, verify)
with the default spec, and is scored:

- ``full``: the answer holds every key fact; ``partial``: some but not all; ``none``: none;
- ``abstained``: the answer abstained;
- ``top_hit_holds``: the best retrieved source alone holds every key fact (the answer was there
  to be quoted), ``sources_hold``: some packed source does.

Facts are matched case-insensitively with whitespace collapsed, in the answer text without its
citation markers.

``--baseline DIR`` runs the same script again in a child process with ``DIR/src`` first on
``PYTHONPATH`` (a git worktree of an earlier commit: ``git worktree add --detach DIR HEAD``), over
the same index, and prints both side by side::

    python bench/extractive_howto.py --baseline /tmp/base         # before vs after
    python bench/extractive_howto.py --show                       # every answer, with its score
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANDBOOK = ROOT.parent / "shared" / "data" / "docs-debian" / "debian-handbook-en-html"
QUESTIONS = ROOT / "bench" / "collections" / "debian-howto" / "questions.jsonl"


def load_questions(path: Path) -> list[dict[str, object]]:
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for item in items:
        if not item.get("question") or not item.get("facts"):
            raise SystemExit(f"{path}: every line needs 'question' and 'facts' ({item.get('id')!r} has not)")
    return items


def _flat(text: str) -> str:
    return " ".join(text.casefold().split())


def holds(text: str, fact: list[str]) -> bool:
    """Whether ``text`` states ``fact`` in one of its accepted spellings."""
    flat = _flat(text)
    return any(_flat(spelling) in flat for spelling in fact)


def index_path(handbook: Path) -> Path:
    from stanchion.evals.retrieval import eval_cache_dir
    from stanchion.spec import ChunkingSpec

    digest = hashlib.sha256(ChunkingSpec().model_dump_json().encode())
    for page in sorted(handbook.glob("*.html")):
        digest.update(page.name.encode())
        digest.update(page.read_bytes())
    return eval_cache_dir() / f"debian-handbook-{digest.hexdigest()[:16]}.db"


def run(handbook: Path, questions: list[dict[str, object]], show: bool) -> dict[str, object]:
    from stanchion.answer.prompt import strip_citations
    from stanchion.app import build
    from stanchion.core.embed import warm_for_serving
    from stanchion.spec import IndexSpec, SourceSpec, Spec

    spec = Spec(
        index=IndexSpec(path=str(index_path(handbook))),
        sources=[SourceSpec(name="handbook", type="html", path=str(handbook), glob="*.html")],
        base_dir=handbook,
    )
    fresh = not Path(spec.index.path).exists()
    app = build(spec)
    try:
        started = time.perf_counter()
        if fresh:  # an index already built is reused as it is: before and after answer from the same one
            summary = app.pipeline.run()
            if summary.failed:
                raise SystemExit(f"cannot index the handbook: {summary.failed[0].reason}")
        build_s = time.perf_counter() - started
        warm_for_serving(app.embedder)
        answerer = app.answerer()

        async def ask_all() -> list[object]:
            return [await answerer.answer(str(q["question"])) for q in questions]

        started = time.perf_counter()
        answers = asyncio.run(ask_all())
        answer_s = time.perf_counter() - started
    finally:
        app.close()
    counts = {"full": 0, "partial": 0, "none": 0, "abstained": 0, "top_hit_holds": 0, "sources_hold": 0}
    words: list[int] = []
    rows = []
    for item, answer in zip(questions, answers, strict=True):
        facts = [list(f) for f in item["facts"]]  # type: ignore[attr-defined]
        text = strip_citations(answer.text)  # type: ignore[attr-defined]
        sources = answer.sources  # type: ignore[attr-defined]
        found = sum(holds(text, f) for f in facts)
        grade = "full" if found == len(facts) else "partial" if found else "none"
        counts[grade] += 1
        counts["abstained"] += bool(answer.abstained)  # type: ignore[attr-defined]
        top = sources[0].hit.chunk.text if sources else ""
        counts["top_hit_holds"] += all(holds(top, f) for f in facts)
        counts["sources_hold"] += any(all(holds(s.hit.chunk.text, f) for f in facts) for s in sources)
        if not answer.abstained:  # type: ignore[attr-defined]
            words.append(len(text.split()))
        rows.append({"id": item["id"], "grade": grade, "facts": f"{found}/{len(facts)}", "answer": text})
        if show:
            print(f"\n[{grade} {found}/{len(facts)}] {item['question']}\n{answer.text}", file=sys.stderr)  # type: ignore[attr-defined]
    n = len(questions)
    return {
        "questions": n,
        **counts,
        "mean_words": round(sum(words) / len(words), 1) if words else 0.0,
        "index_seconds": round(build_s, 1),
        "answer_ms_mean": round(1000 * answer_s / max(n, 1), 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handbook", type=Path, default=HANDBOOK)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--baseline", type=Path, help="a worktree of the code to compare with")
    parser.add_argument("--show", action="store_true", help="print every question and answer to stderr")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object on stdout (what --baseline reads)"
    )
    args = parser.parse_args()
    if not args.handbook.is_dir():
        raise SystemExit(f"{args.handbook} not found: give --handbook, the debian-handbook-en-html folder")
    questions = load_questions(args.questions)
    ours = run(args.handbook, questions, args.show)
    if args.json:
        print(json.dumps(ours))
        return
    results = {"ours": ours}
    if args.baseline is not None:
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve() / "src")}
        command = [sys.executable, __file__, "--json", "--handbook", str(args.handbook)]
        command += ["--questions", str(args.questions)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        results = {"baseline": json.loads(done.stdout), "ours": ours}
    keys = ["full", "partial", "none", "abstained", "top_hit_holds", "sources_hold", "mean_words"]
    print(f"{len(questions)} how-to questions over {args.handbook.name}")
    print(f"{'':<10}" + "".join(f"{k:>15}" for k in keys))
    for name, result in results.items():
        print(f"{name:<10}" + "".join(f"{result[k]!s:>15}" for k in keys))
    if "baseline" in results:
        print("\nper question (baseline -> ours):")
        for before, after in zip(results["baseline"]["rows"], ours["rows"], strict=True):  # type: ignore[call-overload]
            print(f"  {before['id']:<28} {before['facts']:>5} -> {after['facts']:<5}")


if __name__ == "__main__":
    main()
