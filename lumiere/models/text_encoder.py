"""Text conditioning through transformers: any AutoTokenizer + encoder (T5, CLIP text, BERT families)."""
from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizer
from transformers.utils import logging as transformers_logging

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class TextEncoder(nn.Module):
    """Tokenizer + encoder returning per-token states (B, L, D) for cross-attention.

    Prompts are padded to a fixed length so training and sampling see the same sequence layout.
    Embeddings of recent prompts are cached: the unconditional "" and a prompt re-used across a
    session (the app's typical case) are encoded once.
    """

    def __init__(self, tokenizer, model: nn.Module, max_length: int | None = None, cache_size: int = 64):
        super().__init__()
        self.tokenizer = tokenizer
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()  # T5: only the encoder conditions the U-Net
        self.model = model
        self.max_length = max_length or min(int(tokenizer.model_max_length), 512)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def forward(self, prompts: list[str]) -> torch.Tensor:
        """Encode with gradients (training)."""
        tokens = {k: v.to(self.device) for k, v in self.tokenize(list(prompts)).items() if k in ("input_ids", "attention_mask")}
        return self.model(**tokens).last_hidden_state

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Encode for sampling, with an LRU cache of prompt embeddings."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            states = self.forward(missing)
            for prompt, state in zip(missing, states):
                self._cache[prompt] = state
        for prompt in prompts:
            self._cache.move_to_end(prompt)
        result = torch.stack([self._cache[p] for p in prompts])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()  # cached states live on the old device/dtype
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, encoder: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                        dtype: torch.dtype = torch.float32, subfolder: str = "",
                        tokenizer_subfolder: str = "") -> "TextEncoder":
        """Load from local directories or Hub ids (e.g. DeepFloyd IF's ``text_encoder``/``tokenizer`` subfolders)."""
        local = Path(encoder) / subfolder
        if Path(encoder).exists() and not (local / "config.json").is_file():
            raise FileNotFoundError(f"missing text encoder config: {local / 'config.json'}")
        tokenizer_source = str(tokenizer or encoder)
        tokenizer_obj = AutoTokenizer.from_pretrained(tokenizer_source, subfolder=tokenizer_subfolder)
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # no per-load report on every app start
        try:
            # use_safetensors: never fall back to pickled *.bin weights.
            model = AutoModel.from_pretrained(str(encoder), subfolder=subfolder, use_safetensors=True, dtype=dtype)
        finally:
            transformers_logging.set_verbosity(verbosity)
        return cls(tokenizer_obj, model.eval())

    def save_pretrained(self, encoder_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike,
                        dtype: torch.dtype | None = None) -> None:
        model = self.model
        if dtype is not None:
            import copy

            model = copy.deepcopy(model).to(dtype)
        model.save_pretrained(str(encoder_dir), safe_serialization=True)
        self.tokenizer.save_pretrained(str(tokenizer_dir))

    @classmethod
    def from_vocabulary(cls, words: list[str], hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
                        max_length: int = 24) -> "TextEncoder":
        """A small word-level BERT trained from scratch (the bundled model's text encoder).

        The vocabulary is the procedural world's words, so every caption word gets its own token.
        """
        vocab = SPECIAL_TOKENS + sorted({w.lower() for w in words} - set(SPECIAL_TOKENS))
        with tempfile.TemporaryDirectory() as tmp:
            vocab_file = Path(tmp) / "vocab.txt"
            vocab_file.write_text("\n".join(vocab) + "\n")
            tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True, model_max_length=max_length)
        config = BertConfig(
            vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, intermediate_size=4 * hidden_size, max_position_embeddings=max_length,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        return cls(tokenizer, BertModel(config), max_length=max_length)
