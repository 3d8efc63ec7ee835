"""A BERT sentence encoder in numpy, for embedding a query without importing torch.

A one-shot ``stanchion search`` spent most of its time importing torch and sentence-transformers
and loading the model through them (measured in ``bench/cli_startup.py``), only to embed one short
query. This module runs the same weights (the model folder's ``model.safetensors``, memory-mapped)
through the same computation: BERT embeddings, post-LayerNorm encoder layers with exact GELU,
mean pooling over the attention mask, L2 normalisation. Its vectors match sentence-transformers'
to float32 rounding (a test compares them), so it serves any model folder that declares exactly
that architecture; ``NumpyBert.supports`` says which, and anything else uses torch.

It is for a few short texts at a time: batch embedding at ingestion stays on torch, which is
several times faster per text on long inputs.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from stanchion.errors import EmbeddingError

F32 = npt.NDArray[np.float32]
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_BATCH = 16


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _safetensors(path: Path) -> dict[str, F32]:
    """The float32 tensors of a safetensors file, memory-mapped (nothing is read until used)."""
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    tensors: dict[str, F32] = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name.removeprefix("bert.")] = data[start:end].view(np.float32).reshape(info["shape"])
    return tensors


class NumpyBert:
    """Embeds texts as sentence-transformers would with a mean-pooled BERT model folder."""

    def __init__(self, model_dir: Path) -> None:
        if not self.supports(model_dir):
            raise EmbeddingError(f"{model_dir} is not a mean-pooled BERT sentence-transformers model")
        config = _read_json(model_dir / "config.json")
        self.dim = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        max_length = int(_read_json(model_dir / "sentence_bert_config.json").get("max_seq_length", 512))
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(min(max_length, int(config["max_position_embeddings"])))
        self._w = _safetensors(model_dir / "model.safetensors")

    @staticmethod
    def supports(model_dir: Path) -> bool:
        """Whether ``model_dir`` is exactly what this encoder computes (else torch must run it)."""
        try:
            declared = _read_json(model_dir / "modules.json")
            modules = [m["type"] for m in declared]
            config = _read_json(model_dir / "config.json")
            pooling = _read_json(model_dir / declared[1]["path"] / "config.json")
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return False
        mean_only = pooling.get("pooling_mode_mean_tokens") and not any(
            v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
        )
        return (
            modules in ([_ST_TRANSFORMER, _ST_POOLING], [_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE])
            and config.get("model_type") == "bert"
            and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and bool(mean_only)
            and (model_dir / "model.safetensors").is_file()
            and (model_dir / "tokenizer.json").is_file()
        )

    def tokens(self, texts: Sequence[str]) -> int:
        """How many tokens ``texts`` hold in all, after truncation: what ``embed`` would compute on."""
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(list(texts)))

    def embed(self, texts: Sequence[str]) -> F32:
        """L2-normalised rows, one per text."""
        encoded = [np.asarray(e.ids, dtype=np.int64) for e in self._tokenizer.encode_batch(list(texts))]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Texts of similar length share a batch, so padding costs little.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), _BATCH):
            rows = order[start : start + _BATCH]
            out[rows] = self._embed_batch([encoded[i] for i in rows])
        return out

    def _embed_batch(self, batch: list[npt.NDArray[np.int64]]) -> F32:
        length = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), length), dtype=np.int64)  # [PAD] is id 0, masked below
        mask = np.zeros((len(batch), length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        w = self._w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        # Padding gets a large negative score, as in transformers' extended attention mask.
        bias = ((1.0 - mask) * np.float32(np.finfo(np.float32).min))[:, None, None, :]
        for layer in range(self._layers):
            x = self._layer(x, bias, f"encoder.layer.{layer}.")
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def _layer(self, x: F32, bias: F32, p: str) -> F32:
        b, n, d = x.shape
        head = d // self._heads
        q, k, v = (
            self._dense(x, f"{p}attention.self.{name}").reshape(b, n, self._heads, head).transpose(0, 2, 1, 3)
            for name in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(head)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=-1, keepdims=True)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        x = self._norm(
            x + self._dense(context, f"{p}attention.output.dense"), f"{p}attention.output.LayerNorm"
        )
        hidden = _gelu(self._dense(x, f"{p}intermediate.dense"))
        return self._norm(x + self._dense(hidden, f"{p}output.dense"), f"{p}output.LayerNorm")

    def _dense(self, x: F32, name: str) -> F32:
        out: F32 = x @ self._w[f"{name}.weight"].T + self._w[f"{name}.bias"]
        return out

    def _norm(self, x: F32, name: str) -> F32:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        out: F32 = (x - mean) / np.sqrt(var + self._eps) * self._w[f"{name}.weight"] + self._w[f"{name}.bias"]
        return out


def _gelu(x: F32) -> F32:
    """Exact GELU, x * Phi(x), with erf from Abramowitz and Stegun 7.1.26 (error < 1.5e-7)."""
    z = x.astype(np.float64) / math.sqrt(2.0)
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = sign * (1.0 - poly * np.exp(-a * a))
    out: F32 = (0.5 * x * (1.0 + erf)).astype(np.float32)
    return out
