"""Text encoders that turn item text into one vector per item (frozen: nothing here trains).

A spec names one:
* `wordllama`: the `wordllama` wheel's 256-d token embeddings, distilled from a large language
  model and shipped inside the wheel, loaded without the network (its default `load()` looks for
  a tokenizer folder the wheel lacks, then downloads).
* `hf:<hub name or local path>`: any Hugging Face model. An encoder (BERT-like) is mean-pooled over
  its tokens; a decoder-only LLM takes its last token (or the mean, `pooling: mean`). bf16 on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


class EncoderError(ValueError):
    """An encoder that cannot be loaded or gives unusable vectors; the message names it."""


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dim]."""
        ...


@dataclass
class EncoderOptions:
    pooling: str = "auto"  # auto: mean for encoders, last token for decoder-only models
    max_length: int = 128
    device: str = "auto"  # auto: cuda when available
    dtype: str = "auto"  # auto: bfloat16 on cuda, float32 on cpu
    batch_size: int = 64


class WordLlamaEncoder:
    """`wordllama` token embeddings, average-pooled by the library, from the wheel's own files."""

    def __init__(self, options: EncoderOptions) -> None:
        try:
            import wordllama
            from wordllama import WordLlama

            self._wl = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
        except Exception as exc:  # any load failure is reported with the encoder's name
            raise EncoderError(f"encoder 'wordllama' cannot be loaded: {type(exc).__name__}: {exc}") from exc
        self.name = "wordllama"
        self.dim = int(self._wl.embed(["probe"]).shape[1])
        self._batch = options.batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._wl.embed(texts, batch_size=self._batch), dtype=np.float32).reshape(len(texts), self.dim)


def _is_decoder_only(model_type: str) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


class HFTextEncoder:
    """A Hugging Face model's hidden states, mean- or last-token-pooled over the attention mask."""

    def __init__(self, name_or_path: str, options: EncoderOptions) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = f"hf:{name_or_path}"
        cuda = torch.cuda.is_available()
        self.device = torch.device(options.device if options.device != "auto" else ("cuda" if cuda else "cpu"))
        dtype = options.dtype if options.dtype != "auto" else ("bfloat16" if self.device.type == "cuda" else "float32")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModel.from_pretrained(name_or_path, dtype=getattr(torch, dtype)).to(self.device).eval()
        except Exception as exc:  # any load failure is reported with the encoder's name
            raise EncoderError(f"encoder {self.name!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:  # decoder LLMs often have none: pad with EOS (masked out)
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        decoder = _is_decoder_only(self.model.config.model_type)
        self.pooling = options.pooling if options.pooling != "auto" else ("last" if decoder else "mean")
        if self.pooling not in ("mean", "last"):
            raise EncoderError(f"encoder {self.name!r}: pooling must be auto, mean or last, got {self.pooling!r}")
        self.dim = int(self.model.config.hidden_size)
        self.max_length = options.max_length
        self.batch_size = options.batch_size

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            if self.pooling == "mean":
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            else:  # right-padded: the last real token of each row
                last = batch["attention_mask"].sum(1) - 1
                vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            out.append(vec.cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def load_encoder(spec: str, options: EncoderOptions | None = None) -> TextEncoder:
    """The encoder named by `spec` (`wordllama` or `hf:<name or path>`); EncoderError names it if not."""
    options = options or EncoderOptions()
    if spec == "wordllama":
        return WordLlamaEncoder(options)
    if spec.startswith("hf:") and len(spec) > 3:
        return HFTextEncoder(spec[3:], options)
    raise EncoderError(f"unknown encoder {spec!r}: use 'wordllama' or 'hf:<hub name or local path>'")


def check_finite(vectors: np.ndarray, encoder: str, what: Any = "items") -> np.ndarray:
    """Refuse NaN or infinite embeddings, naming the encoder and how many rows are bad."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise EncoderError(
            f"encoder {encoder!r} gave non-finite embeddings for {int(bad.sum())} of {len(vectors)} {what}"
        )
    return vectors
