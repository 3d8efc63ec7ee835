"""The speed cost of a portable llama.cpp build: the x86-64 baseline against a native build.

Each build is a llama-cpp-python install: the venv's own (``--portable``, default: the installed
one) and one installed elsewhere with ``pip install --target DIR`` (``--native DIR``), e.g.::

    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install --no-deps --no-cache-dir --target /tmp/llama-native \\
        llama-cpp-python==0.3.36
    python bench/llamacpp_build.py --native /tmp/llama-native [--rounds 5]

A native library cannot share a process with another build of itself, so each round runs one child
per build, alternating, each loading the packaged SmolLM2-135M Q4_1 and timing llama.cpp's own
prompt reading (a ~300-token prompt) and generation (64 tokens, greedy) with one thread. The
script prints tokens per second per build (median and spread over rounds) and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
from llama_cpp import Llama, llama_cpp
llama = Llama(model_path=sys.argv[1], n_ctx=1024, n_threads=1, n_threads_batch=1, seed=0, verbose=False)
prompt = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(25))
tokens = llama.tokenize(prompt.encode())
llama.create_completion(prompt, max_tokens=1, temperature=0.0)  # warm the caches and pages
llama.reset()
t0 = time.perf_counter()
llama.eval(tokens)
t1 = time.perf_counter()
out = llama.create_completion(prompt, max_tokens=64, temperature=0.0)
t2 = time.perf_counter()
generated = out["usage"]["completion_tokens"]
print(json.dumps({
    "library": llama_cpp.__file__,
    "prompt_tps": len(tokens) / (t1 - t0),
    "gen_tps": generated / (t2 - t1),
}))
"""


def run(model: str, path: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    from stanchion.models.llamacpp import packaged_smollm2_path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--native", required=True, help="folder of a llama-cpp-python installed with --target"
    )
    parser.add_argument(
        "--portable", default=None, help="folder of the portable build (default: this venv's)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = str(packaged_smollm2_path())
    builds = {"portable": args.portable, "native": args.native}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, path in builds.items():
            samples[name].append(run(model, path))
    for name in builds:
        print(f"{name}: {samples[name][0]['library']}")
    medians: dict[str, dict[str, float]] = {}
    print(f"\n{'build':<10} {'prompt tok/s (median, min-max)':>32} {'generate tok/s (median, min-max)':>34}")
    for name, rows in samples.items():
        medians[name] = {}
        cells = []
        for key in ("prompt_tps", "gen_tps"):
            values = [r[key] for r in rows]
            medians[name][key] = statistics.median(values)
            cells.append(f"{medians[name][key]:8.1f} ({min(values):.1f}-{max(values):.1f})")
        print(f"{name:<10} {cells[0]:>32} {cells[1]:>34}")
    for key, label in (("prompt_tps", "prompt reading"), ("gen_tps", "generation")):
        ratio = medians["native"][key] / medians["portable"][key]
        print(f"native / portable, {label}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
