"""A disk cache of a frozen text encoder's states for training (``train.text_embedding_cache``).

Why: in the video stages the text encoder is frozen, yet every step encodes its batch's captions again;
with DeepFloyd IF's T5-XXL (4.7 B parameters) that is the largest part of a step at base resolution.
A caption's states are a pure function of (encoder weights, tokenizer, prompt length, caption), so they
are computed once and read back from safetensors files afterwards, by every stage, rank and run.

Layout: ``<directory>/<encoder fingerprint>/<h[:2]>/<h>.safetensors`` with ``h`` the caption's SHA-256,
one tensor "states" (L, D) in the encoder's output dtype and the caption in the metadata. Disk cost per
caption: L x D x bytes (IF's T5-XXL: 77 x 4096 x 2 B = 0.6 MB in bf16).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..models.text_encoder import MAX_LENGTH_KEY, TextEncoder

# Elements sampled from each weight tensor for the fingerprint (evenly strided).
_SAMPLES_PER_TENSOR = 4096
_PROBE = "Lumiere fingerprint probe: A red circle, 42 frames; über-fast!"


def encoder_fingerprint(encoder: TextEncoder) -> str:
    """A key for the states ``encoder`` gives: its class and config, tokenizer, prompt length and weights.

    Each weight tensor enters as its name, shape, dtype and an evenly strided sample of 4096 values,
    not all of them. Why: hashing T5-XXL's 4.7 B parameters on every rank at every stage start would
    take minutes; a fine-tuned or different encoder changes (nearly) every weight, so the sample differs.
    """
    config = {k: v for k, v in encoder.model.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version", MAX_LENGTH_KEY)}
    head = {"model": type(encoder.model).__name__, "config": config, "max_length": encoder.max_length,
            "attention_mask": getattr(encoder, "uses_attention_mask", True),
            "tokenizer": type(encoder.tokenizer).__name__, "vocabulary": len(encoder.tokenizer),
            "probe": encoder.tokenize([_PROBE])["input_ids"].tolist()}
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(encoder.model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // _SAMPLES_PER_TENSOR)][:_SAMPLES_PER_TENSOR]
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


class CachedTextEncoder(TextEncoder):
    """``encoder`` with its training forward served from a disk cache; same calls, same weights.

    It shares the given encoder's modules, tokenizer and settings (not a copy: the same parameters, under
    the same state-dict names, so checkpoints and the saved pipeline are unchanged). ``forward`` reads
    each caption's states from ``directory`` and encodes only the captions not there yet, writing them.
    While any encoder weight requires grad (the encoder trains: its states change every step) the cache
    is not used at all. The empty caption (caption dropout) is cached like any other.
    """

    def __init__(self, encoder: TextEncoder, directory: str | os.PathLike):
        nn.Module.__init__(self)
        # Every attribute of ``encoder`` (its own and nn.Module's); dicts copied so that registering a
        # module or hook on one does not change the other, the objects in them shared.
        self.__dict__.update({k: copy.copy(v) if isinstance(v, dict) else v for k, v in vars(encoder).items()})
        self.fingerprint = encoder_fingerprint(encoder)
        self.directory = Path(directory) / self.fingerprint
        self.hits = self.misses = 0

    def _path(self, prompt: str) -> Path:
        key = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        return self.directory / key[:2] / f"{key}.safetensors"

    def _read(self, prompt: str) -> torch.Tensor | None:
        path = self._path(prompt)
        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as handle:
            if (handle.metadata() or {}).get("caption") != prompt:
                return None  # a hash collision or a foreign file: encode instead
            return handle.get_tensor("states")

    def _write(self, prompt: str, states: torch.Tensor) -> None:
        path = self._path(prompt)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: another rank reading or writing the same caption never sees half a file.
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        try:
            save_file({"states": states.detach().cpu().contiguous()}, temporary, metadata={"caption": prompt})
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    def forward(self, prompts: list[str]) -> torch.Tensor:
        if any(p.requires_grad for p in self.parameters()):
            return super().forward(prompts)
        prompts = list(prompts)
        found = {p: self._read(p) for p in dict.fromkeys(prompts)}
        missing = [p for p, states in found.items() if states is None]
        self.hits += len(prompts) - sum(p in missing for p in prompts)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                encoded = super().forward(missing)
            for prompt, states in zip(missing, encoded):
                self._write(prompt, states)
                found[prompt] = states
        dtype = encoded.dtype if missing else found[prompts[0]].dtype  # one dtype, even if a run changed precision
        return torch.stack([found[p].to(self.device, dtype) for p in prompts])
