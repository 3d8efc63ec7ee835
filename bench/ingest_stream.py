"""Streaming ingestion: time to the first searchable document, chunks/s, and peak RSS as the corpus
grows, for this code and a baseline (another checkout's ``src``), with the same script.

The corpus is N copies of the Debian manuals' PDFs (618 pages) and the Debian Handbook's HTML
(127 pages) from ../shared/data/docs-debian, linked into a temporary folder and ingested as one
source (dedupe off, so every copy counts) into a fresh SQLite index. Each measurement runs in a
child process of its own, so its peak RSS is its own: it puts ``--src`` first on ``sys.path``,
ingests, and a watcher thread polls the index file from another connection for the first
committed document. ``--embedder hash`` (a vector from a hash of the text) isolates what the
pipeline holds from the model; ``minilm`` is the packaged model, for time to first searchable and
chunks/s as users see them.

    git archive HEAD~1 src | tar -x -C /tmp/base   # the baseline: any revision's src
    python bench/ingest_stream.py --baseline /tmp/base/src --copies 1 2 4 --embedder hash
    python bench/ingest_stream.py --baseline /tmp/base/src --copies 1 --embedder minilm --until-first

Wall seconds depend on what else the machine runs; CPU seconds of the ingesting process (all its
threads) much less, so both are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STANCHION_SHARED_DATA", ROOT.parent / "shared" / "data")) / "docs-debian"


PARTS = {"pdf": ("pdf", "*.pdf"), "handbook": ("debian-handbook-en-html", "*.html")}


def build_corpus(folder: Path, copies: int, parts: Sequence[str]) -> Path:
    """``copies`` copies of the PDFs and/or the handbook, as symbolic links (no disk used)."""
    for i in range(copies):
        for target in parts:
            sub, pattern = PARTS[target]
            dest = folder / f"copy{i}" / target
            dest.mkdir(parents=True, exist_ok=True)
            for file in sorted((DATA / sub).glob(pattern)):
                (dest / file.name).symlink_to(file)
    return folder


class HashEmbedder:
    """Unit vectors from a hash of each text: no model time, so the pipeline's own costs show."""

    name = "bench-hash"
    dim = 384

    def embed(self, texts: Sequence[str], *, progress: Any = None) -> Any:
        import numpy as np

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        if progress is not None:
            progress(len(texts))
        return out


def first_only(wall: float, cpu: float) -> dict[str, Any]:
    return {
        "first_searchable_s": round(wall, 1),
        "first_searchable_cpu_s": round(cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(args.src).resolve()))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import stanchion
    from stanchion.app import build
    from stanchion.ingest import pipeline
    from stanchion.spec import CleaningSpec, IndexSpec, SourceSpec, Spec

    assert Path(stanchion.__file__).is_relative_to(Path(args.src).resolve()), stanchion.__file__
    if args.read_ahead is not None and hasattr(pipeline, "READ_AHEAD"):
        pipeline.READ_AHEAD = args.read_ahead
    embedder: Any
    if args.embedder == "minilm":
        from stanchion.core.embed import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
        embedder.warm_up()
        embedder.embed(["warm up"] * 64)  # past the numpy budget: torch from the first batch
    else:
        embedder = HashEmbedder()
    with tempfile.TemporaryDirectory(prefix="ingest-stream-") as tmp:
        index = Path(tmp) / "index.db"
        spec = Spec(
            index=IndexSpec(path=str(index)),
            sources=[SourceSpec(name="debian", path=args.corpus, cleaning=CleaningSpec(dedupe=False))],
        )
        app = build(spec, embedder=embedder)
        first: list[float] = []
        first_cpu: list[float] = []
        errors: list[str] = []
        done = threading.Event()
        started, cpu_started = time.perf_counter(), time.process_time()

        def watch() -> None:
            while not done.wait(0.2):
                try:  # a fresh read-only connection per look: nothing of the writer's is shared
                    with closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True)) as conn:
                        if conn.execute("SELECT count(*) FROM documents").fetchone()[0] > 0:
                            first.append(time.perf_counter() - started)
                            first_cpu.append(time.process_time() - cpu_started)
                            if args.until_first:  # stop here: the rest of the run is not measured
                                print(json.dumps(first_only(first[0], first_cpu[0])), flush=True)
                                os._exit(0)
                            return
                except sqlite3.Error as exc:  # the schema is still being created, or a lock
                    errors.append(str(exc))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        summary = app.pipeline.run()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        done.set()
        watcher.join()
        app.close()
    print(
        json.dumps(
            {
                "documents": summary.documents,
                "chunks": summary.chunks,
                "embedded": summary.embedded,
                "seconds": round(seconds, 1),
                "first_searchable_s": round(first[0], 1) if first else round(seconds, 1),
                "chunks_per_s": round(summary.chunks / seconds, 1),
                # CPU seconds of this process (all threads): on a shared machine, wall time
                # measures the neighbours too.
                "cpu_s": round(cpu, 1),
                "first_searchable_cpu_s": round(first_cpu[0], 1) if first_cpu else round(cpu, 1),
                "chunks_per_cpu_s": round(summary.chunks / cpu, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "failed": len(summary.failed),
                "watch_errors": sorted(set(errors))[:3],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, help="a baseline checkout's src folder")
    parser.add_argument("--ours", type=Path, default=ROOT / "src", help="the src folder measured as ours")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--embedder", choices=["hash", "minilm"], default="hash")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=["pdf", "handbook"])
    parser.add_argument("--read-ahead", type=int, default=None, help="override pipeline.READ_AHEAD (ours)")
    parser.add_argument(
        "--until-first",
        action="store_true",
        help="stop each run at its first commit (time to first searchable only)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", default=str(ROOT / "src"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not DATA.is_dir():
        sys.exit(f"needs {DATA} (set STANCHION_SHARED_DATA)")
    versions = [("ours", args.ours)]
    if args.baseline:
        versions.insert(0, ("baseline", args.baseline))
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ingest-stream-corpus-") as tmp:
        for copies in args.copies:
            corpus = build_corpus(Path(tmp) / f"x{copies}", copies, args.parts)
            for name, src in versions:
                command = [sys.executable, __file__, "--child", "--src", str(src), "--corpus", str(corpus)]
                command += ["--embedder", args.embedder] + (["--until-first"] if args.until_first else [])
                if args.read_ahead is not None and name == "ours":
                    command += ["--read-ahead", str(args.read_ahead)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"{name} x{copies} failed:\n{done.stderr[-3000:]}")
                rows[name, copies] = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{name:<9} x{copies}: {rows[name, copies]}", flush=True)
    what = {"pdf": "4 PDFs (618 pages)", "handbook": "127 HTML pages"}
    print(f"\nembedder {args.embedder}; corpus: copies of " + " + ".join(what[p] for p in args.parts))
    print("wall seconds, and CPU seconds of the ingesting process (steadier on a shared machine)")
    head = (
        "version",
        "copies",
        "chunks",
        "first s",
        "first cpu",
        "total s",
        "total cpu",
        "chunks/cpu s",
        "RSS MB",
    )
    print(("{:<9}" + " {:>12}" * 8).format(*head))
    for (name, copies), r in rows.items():
        cells = [r.get("chunks", "-"), r["first_searchable_s"], r.get("first_searchable_cpu_s", "-")]
        cells += [
            r.get("seconds", "-"),
            r.get("cpu_s", "-"),
            r.get("chunks_per_cpu_s", "-"),
            r["peak_rss_mb"],
        ]
        print(("{:<9}" + " {:>12}" * 8).format(name, copies, *cells))
    if args.baseline:
        for copies in args.copies:
            base, ours = rows["baseline", copies], rows["ours", copies]
            line = (
                f"x{copies}: first searchable after {ours['first_searchable_cpu_s']} s of CPU instead of "
                f"{base['first_searchable_cpu_s']}"
            )
            if not args.until_first:
                line += (
                    f"; chunks per CPU second x{ours['chunks_per_cpu_s'] / base['chunks_per_cpu_s']:.2f}; "
                    f"peak RSS {ours['peak_rss_mb'] - base['peak_rss_mb']:+d} MB"
                )
            print(line)


if __name__ == "__main__":
    main()
