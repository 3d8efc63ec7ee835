"""Wall time of one-shot CLI commands on the demo index: a baseline source tree against this one.

Each run is a fresh process (`python -m stanchion ...`), as a user typing the command gets. The
baseline and ours run alternately, so load from anything else on the machine falls on both. The
index is the bundled sample corpus, ingested once by this tree into a temporary folder.

    python bench/cli_startup.py --baseline-rev HEAD~3 --runs 10
    python bench/cli_startup.py --baseline-src /tmp/base/src --commands search ask --breakdown

``--breakdown`` also times, each in its own process, what a search could pay for: the interpreter,
importing the CLI, importing torch, importing sentence-transformers and loading MiniLM through
it, and loading the numpy encoder of the same weights.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src/stanchion/sample"
COMMANDS = {
    "search": ["search", "who approves expenses above 5000", "--k", "5"],
    "search-bm25": ["search", "who approves expenses above 5000", "--k", "5", "--mode", "bm25"],
    "ask": ["ask", "Who approves expenses above $5,000?", "--json"],
}
BREAKDOWN = {
    "python -c pass": "pass",
    "import stanchion.cli": "import stanchion.cli",
    "import torch": "import torch",
    "import sentence_transformers": "import sentence_transformers",
    "MiniLM via sentence-transformers (import + load)": (
        "from stanchion.core.embed import SentenceTransformerEmbedder as E; E().warm_up()"
    ),
    "MiniLM via numpy_bert (import + load + 1 query)": (
        "from stanchion.core.numpy_bert import NumpyBert; from stanchion.core.packaged import minilm_dir;"
        " NumpyBert(minilm_dir()).embed(['who approves expenses above 5000'])"
    ),
}


def _env(src: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(src),
        "OPENBLAS_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def _timed(argv: list[str], src: Path, cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; a failing command stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=_env(src), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _row(name: str, walls: list[float], cpus: list[float]) -> str:
    return (
        f"{name:<44} {min(walls):7.2f} {statistics.median(walls):7.2f} {_percentile(walls, 0.9):7.2f} "
        f"{max(walls):7.2f} {statistics.median(cpus):7.2f}"
    )


def _header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'':<44} {'min':>7} {'p50':>7} {'p90':>7} {'max':>7} {'cpu p50':>7}  (seconds)")


def _baseline(args: argparse.Namespace, tmp: Path) -> Path | None:
    if args.baseline_src:
        return Path(args.baseline_src).resolve()
    if not args.baseline_rev:
        return None
    target = tmp / "baseline"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", args.baseline_rev, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--commands", nargs="+", choices=sorted(COMMANDS), default=["search"])
    parser.add_argument("--baseline-src", help="the src/ folder of another checkout")
    parser.add_argument(
        "--baseline-rev", help="a git revision of this repository, extracted with git archive"
    )
    parser.add_argument("--breakdown", action="store_true", help="also time imports and model loads")
    args = parser.parse_args()
    ours = ROOT / "src"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        baseline = _baseline(args, tmp)
        demo = tmp / "demo"
        shutil.copytree(SAMPLE, demo)
        print(f"ingesting the sample corpus into {demo} ...", flush=True)
        _timed([sys.executable, "-m", "stanchion", "ingest", "--json"], ours, demo)
        variants = [("ours", ours)] + ([("baseline", baseline)] if baseline else [])
        for command in args.commands:
            argv = [sys.executable, "-m", "stanchion", *COMMANDS[command]]
            results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _ in variants}
            for _, src in variants:
                _timed(argv, src, demo)  # warm the page cache
            for _ in range(args.runs):
                for name, src in variants:
                    wall, cpu = _timed(argv, src, demo)
                    results[name][0].append(wall)
                    results[name][1].append(cpu)
            _header(f"stanchion {' '.join(COMMANDS[command])!s}  ({args.runs} runs each)")
            for name, (walls, cpus) in results.items():
                print(_row(name, walls, cpus))
        if args.breakdown:
            _header("what a one-shot command can spend its time on (3 runs each, this tree)")
            for name, code in BREAKDOWN.items():
                walls, cpus = [], []
                for _ in range(3):
                    wall, cpu = _timed([sys.executable, "-c", code], ours, demo)
                    walls.append(wall)
                    cpus.append(cpu)
                print(_row(name, walls, cpus))
    print(f"\n{os.cpu_count()} CPUs; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
