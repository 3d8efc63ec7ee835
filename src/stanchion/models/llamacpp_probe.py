"""Run llama.cpp once in a child process before this process loads it.

A llama.cpp build compiled for another CPU, or for instructions that a VM advertises but does not
let a process use (AMX on some hypervisors), dies with SIGILL on its first matrix product. In
process that kills the server worker, or the whole test run, with no error anyone can act on.
So before ``LlamaCppModel`` loads a model, a child process loads it and reads a prompt long
enough to take the batched matrix path, then generates a few tokens. A child killed by a signal
becomes a ``ModelUnavailable`` that says how to install a portable build; any other failure is
left to the in-process load, which reports it precisely.

A pass is remembered in a file keyed by the native library, the model file and the CPU, so each
machine pays the probe (about a second for a small model) once per build and model.

Run as ``python -m stanchion.models.llamacpp_probe MODEL.gguf``: exit 0 means it ran.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from stanchion.core.packaged import package_dir
from stanchion.errors import ModelUnavailable

__all__ = ["PORTABLE_CMAKE_ARGS", "PORTABLE_INSTALL", "ensure_runs", "probe_key"]

log = logging.getLogger(__name__)

# The x86-64 baseline: no instruction newer than SSE2, so the build runs on any x86-64 CPU.
PORTABLE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF "
    "-DGGML_F16C=OFF -DGGML_BMI2=OFF"
)
PORTABLE_INSTALL = (
    f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-cache-dir '
    "--no-deps llama-cpp-python==0.3.36"
)
PROBE_TIMEOUT_S = 300.0
# ~150 tokens: enough for llama.cpp to multiply a batch of rows, where the AMX and AVX-512
# kernels that crashed live, not just the one-row kernels of generation.
_PROMPT = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(12))


def ensure_runs(
    model_path: Path,
    *,
    command: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
    model: str = "",
) -> None:
    """Raise ``ModelUnavailable`` if llama.cpp crashes on this machine with ``model_path``.

    ``command`` replaces the child's command line (tests give one that dies by a signal).
    """
    marker = (cache_dir or _cache_dir()) / f"{probe_key(model_path)}.ok"
    if command is None and marker.is_file():
        return
    argv = list(command or [sys.executable, "-m", __name__, str(model_path)])
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelUnavailable(
            f"llama.cpp did not finish a short test generation with {model_path} in {timeout_s:.0f} s",
            model=model,
        ) from exc
    if done.returncode < 0:
        name = _signal_name(-done.returncode)
        log.error(
            "llamacpp.probe_crashed",
            extra={
                "signal": name,
                "model": str(model_path),
                "stderr": done.stderr[-2000:].decode(errors="replace"),
            },
        )
        raise ModelUnavailable(
            f"llama.cpp crashed ({name}) on this machine while running {model_path.name}: the installed "
            "llama-cpp-python was built for CPU instructions this machine cannot run. Install a "
            f"portable build: {PORTABLE_INSTALL}",
            model=model,
        )
    if done.returncode == 0 and command is None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{model_path}\n", encoding="utf-8")
    # A non-zero exit without a signal is a Python error (a bad file, say); the in-process load
    # raises it with its own, better message.


def probe_key(model_path: Path) -> str:
    """What a pass depends on: the native library build, the model file and the CPU's features."""
    parts = [str(model_path), *_stat(model_path), _cpu_flags()]
    lib_root = package_dir("llama_cpp")
    if lib_root is not None:
        for lib in sorted((lib_root / "lib").glob("*.so*")):
            parts += [lib.name, *_stat(lib)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _stat(path: Path) -> list[str]:
    try:
        st = path.stat()
    except OSError:
        return ["missing"]
    return [str(st.st_size), str(st.st_mtime_ns)]


def _cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return os.uname().machine
    return next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")


def _cache_dir() -> Path:
    root = os.environ.get("STANCHION_CACHE_DIR", Path.home() / ".cache" / "stanchion")
    return Path(root) / "llamacpp-probe"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _main(path: str) -> int:
    from llama_cpp import Llama

    llama = Llama(model_path=path, n_ctx=512, n_threads=1, n_threads_batch=1, seed=0, verbose=False)
    try:
        llama.create_completion(_PROMPT, max_tokens=4, temperature=0.0)
    finally:
        llama.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
