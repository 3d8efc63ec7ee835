"""Which thresholds should answer verification use? A grid over (min cosine, min term overlap).

Verification (``stanchion/answer/verify.py``) calls a cited sentence supported when the cosine
with the source's best-matching window, the share of its content terms found in the source,
and its numbers all pass. This study measures those signals on labelled pairs nobody here wrote:

supported claims
  - MRPC paraphrase pairs (train): claim = sentence 2, source = sentence 1 hidden among three
    unrelated sentences (so the best-matching window has to find it);
  - STS-B dev pairs scored >= 4.0, built the same way.
unsupported claims
  - MRPC non-paraphrase pairs: same topic and many shared words, but different facts;
  - STS-B dev pairs scored <= 1.5;
  - COVID-QA: the sentence holding a gold answer, checked against another ~1,000-character
    passage of the same article (same topic, not the fact).

The score is balanced accuracy: (share of supported claims kept + mean over the three
unsupported families of the share rejected) / 2, so the easy STS negatives cannot dominate.

    python bench/verify_study.py ../shared/data [--pairs 400]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stanchion.answer.verify import MIN_COSINE, MIN_OVERLAP, Support, Verifier
from stanchion.core.embed import SentenceTransformerEmbedder
from stanchion.core.sentences import sentence_spans

Pair = tuple[str, str]  # (claim, source)


def hide(sentence: str, fillers: list[str], rng: random.Random) -> str:
    parts = [sentence, *rng.sample(fillers, 3)]
    rng.shuffle(parts)
    return " ".join(parts)


def mrpc(folder: Path, n: int, rng: random.Random) -> tuple[list[Pair], list[Pair]]:
    rows = []
    with (folder / "msr_paraphrase_train.txt").open(encoding="utf-8-sig") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) == 5 and row[0] in ("0", "1"):
                rows.append((row[0], row[3].replace("<QUOTE>", '"'), row[4].replace("<QUOTE>", '"')))
    fillers = [r[1] for r in rows]
    pos = [(b, hide(a, fillers, rng)) for label, a, b in rows if label == "1"]
    neg = [(b, hide(a, fillers, rng)) for label, a, b in rows if label == "0"]
    return rng.sample(pos, min(n, len(pos))), rng.sample(neg, min(n, len(neg)))


def sts(folder: Path, n: int, rng: random.Random) -> tuple[list[Pair], list[Pair]]:
    rows = []
    with (folder / "sts-dev.csv").open(encoding="utf-8") as handle:
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 7:
                rows.append((float(cols[4]), cols[5], cols[6]))
    fillers = [r[1] for r in rows]
    pos = [(b, hide(a, fillers, rng)) for score, a, b in rows if score >= 4.0]
    neg = [(b, hide(a, fillers, rng)) for score, a, b in rows if score <= 1.5]
    return rng.sample(pos, min(n, len(pos))), rng.sample(neg, min(n, len(neg)))


def covid(file: Path, n: int, rng: random.Random) -> list[Pair]:
    data = json.loads(file.read_text(encoding="utf-8"))["data"]
    out: list[Pair] = []
    for article in data:
        for para in article["paragraphs"]:
            text = para["context"]
            spans = sentence_spans(text)
            for qa in para["qas"]:
                start = qa["answers"][0]["answer_start"]
                holding = next(((a, b) for a, b in spans if a <= start < b), None)
                if holding is None:
                    continue
                a, b = holding
                # another passage of the same article, well away from the answer sentence
                options = [x for x in range(0, max(len(text) - 1000, 1), 500) if x + 1000 < a or x > b]
                if options:
                    at = rng.choice(options)
                    out.append((text[a:b], text[at : at + 1000]))
    return rng.sample(out, min(n, len(out)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path, help="the shared data folder")
    parser.add_argument("--pairs", type=int, default=400, help="pairs per family and label")
    args = parser.parse_args()
    rng = random.Random(13)
    mrpc_pos, mrpc_neg = mrpc(args.data / "mrpc", args.pairs, rng)
    sts_pos, sts_neg = sts(args.data / "sts-benchmark", args.pairs, rng)
    covid_neg = covid(args.data / "covid-qa" / "covidQA_200423.squad.json", args.pairs, rng)
    verifier = Verifier(SentenceTransformerEmbedder())
    families = {
        "supported": mrpc_pos + sts_pos,
        "mrpc-different": mrpc_neg,
        "sts-unrelated": sts_neg,
        "covid-other-passage": covid_neg,
    }
    measured: dict[str, list[Support]] = {
        name: [verifier.support(claim, source) for claim, source in pairs] for name, pairs in families.items()
    }
    print(f"# pairs: {', '.join(f'{k} {len(v)}' for k, v in measured.items())}", file=sys.stderr)

    def rates(cos: float, ov: float) -> dict[str, float]:
        out = {}
        for name, supports in measured.items():
            kept = sum(s.holds(cos, ov) for s in supports) / len(supports)
            out[name] = kept if name == "supported" else 1 - kept
        return out

    grid = []
    for cos in [x / 100 for x in range(30, 91, 5)]:
        for ov in [x / 10 for x in range(0, 10)]:
            r = rates(cos, ov)
            negatives = [v for k, v in r.items() if k != "supported"]
            grid.append(((r["supported"] + sum(negatives) / len(negatives)) / 2, cos, ov, r))
    grid.sort(key=lambda g: -g[0])
    print(
        "balanced_acc  min_cosine  min_overlap  kept_supported  "
        + "  ".join(f"rejected_{k}" for k in families if k != "supported")
    )
    for acc, cos, ov, r in grid[:12]:
        print(
            f"{acc:12.3f}  {cos:10.2f}  {ov:11.1f}  {r['supported']:14.3f}  "
            + "  ".join(f"{r[k]:>{len(k) + 9}.3f}" for k in families if k != "supported")
        )
    print(f"\nat the shipped min_cosine {MIN_COSINE} (shipped min_overlap {MIN_OVERLAP}):")
    for acc, cos, ov, r in sorted((g for g in grid if g[1] == MIN_COSINE), key=lambda g: g[2]):
        print(
            f"{acc:12.3f}  {cos:10.2f}  {ov:11.1f}  {r['supported']:14.3f}  "
            + "  ".join(f"{r[k]:>{len(k) + 9}.3f}" for k in families if k != "supported")
        )
    alone = rates(-1.0, 0.0)
    print(
        "\nnumbers check alone (cosine and overlap off): keeps "
        f"{alone['supported']:.3f} of supported, rejects "
        + ", ".join(f"{alone[k]:.3f} of {k}" for k in families if k != "supported")
    )


if __name__ == "__main__":
    main()
