"""Re-running ingestion over unchanged sources: cost relative to the first run (target <= 5%).

Sources: the bundled Kestrel Freight sample (wiki, Slack, mail, PDF, Markdown) plus real data from
../shared/data (Debian handbook HTML, SpamAssassin mail, the Slack export sample). Also reports a
run after editing one file (only that file's new chunks are embedded).

    python bench/rerun_cost.py [--handbook-files 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stanchion.app import build
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.spec import ChunkingSpec, IndexSpec, SourceSpec, Spec

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src/stanchion/sample"
SHARED = ROOT.parent / "shared/data"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--handbook-files", type=int, default=30)
    args = parser.parse_args()
    embedder = SentenceTransformerEmbedder()
    embedder.warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(SAMPLE, work / "sample")
        handbook = work / "handbook"
        handbook.mkdir()
        for page in sorted((SHARED / "docs-debian/debian-handbook-en-html").glob("sect.*.html"))[
            : args.handbook_files
        ]:
            shutil.copy(page, handbook / page.name)
        sources = [
            SourceSpec(name="wiki", type="html", path=str(work / "sample/wiki")),
            SourceSpec(
                name="slack",
                type="slack",
                path=str(work / "sample/slack"),
                chunking=ChunkingSpec(strategy="structure", overlap=0),
            ),
            SourceSpec(name="mail", type="email", path=str(work / "sample/mail")),
            SourceSpec(name="policies", path=str(work / "sample/policies")),
            SourceSpec(name="handbook", type="html", path=str(handbook)),
            SourceSpec(name="spam", type="email", path=str(SHARED / "emails-spamassassin-testcorpus")),
            SourceSpec(name="slack-sample", type="slack", path=str(SHARED / "slack-export-sample/extracted")),
        ]
        spec = Spec(index=IndexSpec(path=str(work / "index.db")), sources=sources)
        app = build(spec, embedder=embedder)

        started = time.perf_counter()
        first = app.pipeline.run()
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        again = app.pipeline.run()
        again_s = time.perf_counter() - started
        edited = work / "sample/wiki/expense-policy.html"
        edited.write_text(edited.read_text().replace("2 business days", "1 business day"))
        started = time.perf_counter()
        changed = app.pipeline.run()
        changed_s = time.perf_counter() - started
        app.close()

    print(
        f"first run:   {first_s:7.2f} s  units {first.units}, documents {first.documents}, chunks embedded {first.embedded}, failed {len(first.failed)}"
    )
    print(f"re-run:      {again_s:7.2f} s  units skipped {again.skipped}, embedded {again.embedded}")
    print(
        f"one edit:    {changed_s:7.2f} s  documents rewritten {changed.documents}, embedded {changed.embedded}, from cache {changed.cached}"
    )
    print(f"re-run cost {100 * again_s / first_s:.2f}% of the first run (target <= 5%)")


if __name__ == "__main__":
    main()
