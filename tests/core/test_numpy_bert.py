"""The numpy BERT encoder gives sentence-transformers' vectors, so a query needs no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stanchion.core.embed import NUMPY_TOKEN_BUDGET, SentenceTransformerEmbedder, warm_for_serving
from stanchion.core.numpy_bert import NumpyBert
from stanchion.core.packaged import minilm_dir

TEXTS = [
    "who approves expenses above $5,000?",
    "Winter tyres go on every truck by November 15.",
    "Ünïcödé café 東京 naïve façade",
    "",
    "def route(shipment):\n    return 'freight'",
    "word " * 400,  # longer than max_seq_length: truncated exactly as sentence-transformers does
]


class TestNumpyBert:
    def test_matches_sentence_transformers(self, embedder: SentenceTransformerEmbedder) -> None:
        """Same rows as the torch model (warmed up by the fixture) to float32 rounding."""
        light = NumpyBert(minilm_dir())
        expected = embedder.embed(TEXTS)
        got = light.embed(TEXTS)
        assert got.shape == expected.shape == (len(TEXTS), 384)
        assert np.abs(got - expected).max() < 1e-5
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)

    def test_one_text_or_a_batch_give_the_same_rows(self) -> None:
        light = NumpyBert(minilm_dir())
        batch = light.embed(TEXTS)
        alone = np.stack([light.embed([t])[0] for t in TEXTS])
        assert np.abs(batch - alone).max() < 1e-5

    def test_other_architectures_are_left_to_torch(self, tmp_path: Path) -> None:
        model = tmp_path / "model"
        shutil.copytree(minilm_dir(), model)
        assert NumpyBert.supports(model)
        pooling = model / "1_Pooling" / "config.json"
        config = json.loads(pooling.read_text())
        pooling.write_text(json.dumps({**config, "pooling_mode_cls_token": True}))
        assert not NumpyBert.supports(model)


class TestEmbedderUsesNumpyFirst:
    def test_a_query_does_not_import_torch(self) -> None:
        """A fresh process embeds a query and reports its dimension without importing torch."""
        code = (
            "import sys; from stanchion.core.embed import SentenceTransformerEmbedder as E; "
            "e = E(); v = e.embed(['who approves expenses?']); "
            "print(v.shape, e.dim, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "(1, 384) 384 False False"

    def test_a_long_running_process_loads_the_model_at_warm_up(self) -> None:
        """A server worker or an eval warms up with the torch model, so no request meets its load."""
        embedder = SentenceTransformerEmbedder()
        warm_for_serving(embedder)
        assert embedder._model is not None

    def test_torch_takes_over_past_the_budget(self) -> None:
        """Once the numpy budget is spent the model loads, and vectors stay the same."""
        embedder = SentenceTransformerEmbedder()
        first = embedder.embed(TEXTS[:2])
        assert embedder._model is None
        big = ["tyres and invoices " * 60] * (NUMPY_TOKEN_BUDGET // 100)
        embedder.embed(big)
        assert embedder._model is not None
        assert np.abs(embedder.embed(TEXTS[:2]) - first).max() < 1e-5


@pytest.mark.parametrize("text", TEXTS)
def test_tokens_counts_what_is_embedded(text: str) -> None:
    light = NumpyBert(minilm_dir())
    assert 2 <= light.tokens([text]) <= 256
