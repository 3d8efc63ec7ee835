"""The child-process probe that keeps a llama.cpp build that crashes on this CPU out of process.

The crash itself is a real child process killed by a real signal; the probe of the packaged
SmolLM2 runs the real native library.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from stanchion.errors import ModelUnavailable
from stanchion.models.llamacpp import LlamaCppModel, packaged_smollm2_path
from stanchion.models.llamacpp_probe import PORTABLE_CMAKE_ARGS, ensure_runs, probe_key

DIES_OF_SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
RAISES = [sys.executable, "-c", "raise SystemExit(3)"]


class TestCrashIsolation:
    def test_a_child_killed_by_sigill_is_a_clear_model_error(self, tmp_path: Path) -> None:
        """SIGILL in the child raises ModelUnavailable naming the signal and the portable install."""
        with pytest.raises(ModelUnavailable) as caught:
            ensure_runs(tmp_path / "m.gguf", command=DIES_OF_SIGILL, cache_dir=tmp_path, model="local")
        message = str(caught.value)
        assert caught.value.model == "local"
        assert "SIGILL" in message and PORTABLE_CMAKE_ARGS in message
        assert not list(tmp_path.glob("*.ok"))  # a crash is never remembered as a pass

    def test_an_ordinary_failure_is_left_to_the_in_process_load(self, tmp_path: Path) -> None:
        """A child that exits with an error (a bad file, say) is not a crash: no error from the probe."""
        ensure_runs(tmp_path / "m.gguf", command=RAISES, cache_dir=tmp_path)

    def test_the_key_follows_the_model_file(self, tmp_path: Path) -> None:
        """A changed model file (size or time) is probed again."""
        model = tmp_path / "m.gguf"
        model.write_bytes(b"GGUF")
        before = probe_key(model)
        model.write_bytes(b"GGUF and more")
        assert probe_key(model) != before


class TestRealBuild:
    @pytest.fixture
    def gguf(self) -> Path:
        pytest.importorskip(
            "llama_cpp", reason="llama-cpp-python is not installed: pip install 'stanchion[local]'"
        )
        try:
            return packaged_smollm2_path()
        except ModelUnavailable as exc:
            pytest.skip(f"packaged SmolLM2 not installed: {exc}")

    def test_the_installed_build_runs_here_and_the_pass_is_remembered(
        self, gguf: Path, tmp_path: Path
    ) -> None:
        """The real library reads a batch and generates in a child; the pass is kept per build, model and CPU."""
        ensure_runs(gguf, cache_dir=tmp_path)
        assert [p.name for p in tmp_path.glob("*.ok")] == [f"{probe_key(gguf)}.ok"]

    def test_the_model_probes_before_loading_in_process(
        self, gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """warm_up runs the probe first (the pass lands in STANCHION_CACHE_DIR) and then loads."""
        monkeypatch.setenv("STANCHION_CACHE_DIR", str(tmp_path))
        model = LlamaCppModel("smollm2", n_ctx=256, n_threads=1)
        model.warm_up()
        model.close()
        assert [p.name for p in (tmp_path / "llamacpp-probe").iterdir()] == [f"{probe_key(gguf)}.ok"]


NEWER_THAN_X86_64 = ("SSE3", "SSSE3", "AVX", "AVX2", "AVX512", "AVX_VNNI", "FMA", "F16C", "BMI2", "AMX_INT8")


@pytest.mark.skipif(
    os.environ.get("STANCHION_REQUIRE_PORTABLE_LLAMA") != "1",
    reason="checks the build .ci/run installs (STANCHION_REQUIRE_PORTABLE_LLAMA=1); a native build is a user's choice",
)
def test_the_ci_build_targets_the_x86_64_baseline() -> None:
    """The installed llama.cpp was compiled with no instruction set newer than x86-64's SSE2."""
    llama_cpp = pytest.importorskip("llama_cpp")
    features = llama_cpp.llama_print_system_info().decode()
    enabled = {name for name in NEWER_THAN_X86_64 if f" {name} = 1 " in f" {features} "}
    assert not enabled, f"llama.cpp was built with {sorted(enabled)}: {features}"
