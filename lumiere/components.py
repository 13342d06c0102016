"""Where a pipeline's models live: the component registry, lazy loading, device/dtype placement.

A component is loaded from its folder the first time it is needed and placed on the pipeline's
device and dtype in eval mode with gradients off. Each component then runs on the device its
parameters are on, so a model manager may move or drop components between calls.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .errors import InputError

COMPONENTS = ("text_encoder", "vae", "base", "conditional", "ssr")
# What each application needs, besides "vae" in a latent pipeline and "ssr" when it super-resolves (lets a
# manager load/evict ahead of a call).
TASK_COMPONENTS = {
    "text_to_video": ("text_encoder", "base"),
    "stylize": ("text_encoder", "base"),
    "video_to_video": ("text_encoder", "base"),
    "image_to_video": ("text_encoder", "conditional"),
    "keyframes": ("text_encoder", "conditional"),
    "inpaint": ("text_encoder", "conditional"),
    "cinemagraph": ("text_encoder", "conditional"),
    "reference_guided": ("text_encoder", "base", "conditional"),
}


def default_device() -> torch.device:
    """The best available device: cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA where supported (fp16 otherwise and on MPS), fp32 on the CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def module_device(module: nn.Module) -> torch.device:
    """Where a component runs: the device of its parameters (CPU for a module without any), or, for one offloaded
    by accelerate's hooks (``enable_model_cpu_offload``: kept on the CPU, moved when it runs), the hook's device."""
    execution_device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if execution_device is not None:
        return torch.device("cuda", execution_device) if isinstance(execution_device, int) else torch.device(execution_device)
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _flushing_denormals() -> bool:
    # torch has no getter; a denormal times one is zero exactly when denormals are flushed.
    return (torch.tensor([1e-40]) * torch.tensor([1.0])).item() == 0.0


@contextmanager
def flush_denormals(enabled: bool = True):
    """Flush denormal floats to zero on the CPU inside the block, then restore the previous setting.

    Why: trained weights produce denormal intermediates late in sampling and training; flushing them
    is 10x+ faster on CPU and changes nothing visible (|x| < 1e-38). The setting is per thread.
    """
    if not enabled:
        yield
        return
    before = _flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


class ComponentStore:
    """The pipeline's components: loaded modules, the folders of those not loaded yet, and placement."""

    def __init__(self, modules: dict[str, nn.Module | None], directories: dict[str, Path] | None,
                 device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self._directories = dict(directories or {})
        self._modules: dict[str, nn.Module | None] = {name: None for name in COMPONENTS}
        for name, module in modules.items():
            if module is not None:
                self._check_name(name)
                self._modules[name] = self._place(module)

    @property
    def names(self) -> tuple[str, ...]:
        """Components present (loaded or on disk), in pipeline order."""
        return tuple(n for n in COMPONENTS if self._modules[n] is not None or n in self._directories)

    def has(self, name: str) -> bool:
        return name in self.names

    def is_loaded(self, name: str) -> bool:
        return self._modules.get(name) is not None

    def get(self, name: str) -> nn.Module:
        """The component, loaded from its folder and placed on first use."""
        self._check_name(name)
        module = self._modules[name]
        if module is None:
            if name not in self._directories:
                raise InputError(f"this pipeline has no {name!r} model")
            module = self._modules[name] = self._place(self._load(name))
        return module

    def unload(self, name: str) -> None:
        """Drop a loaded component that has a folder (it reloads when next needed)."""
        if name in self._directories:
            self._modules[name] = None

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        for name, module in self._modules.items():
            if module is not None:
                self._modules[name] = self._place(module)

    def for_task(self, task: str, super_resolve: bool = True) -> list[str]:
        """The components ``task`` needs (see ``TASK_COMPONENTS``), plus "vae" in a latent pipeline and
        "ssr" when it will super-resolve."""
        if task not in TASK_COMPONENTS:
            raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASK_COMPONENTS)}")
        return (list(TASK_COMPONENTS[task]) + (["vae"] if self.has("vae") else [])
                + (["ssr"] if super_resolve and self.has("ssr") else []))

    def tokenizer(self):
        """The text encoder's tokenizer without loading the encoder's weights (the loaded encoder's own if it is
        in memory, else read from the tokenizer folder once); None when there is none or it cannot be read."""
        encoder = self._modules.get("text_encoder")
        if encoder is not None:
            return getattr(encoder, "tokenizer", None)
        if not hasattr(self, "_tokenizer"):
            directory = self._directories.get("tokenizer", self._directories.get("text_encoder"))
            self._tokenizer = None
            if directory is not None:
                try:
                    from transformers import AutoTokenizer

                    self._tokenizer = AutoTokenizer.from_pretrained(str(directory))
                except (OSError, ValueError, ImportError):  # e.g. SentencePiece without its package: nothing to warn about
                    self._tokenizer = None
        return self._tokenizer

    def _place(self, module: nn.Module) -> nn.Module:
        # Inference only: eval mode (no dropout) and no gradients, on the pipeline's device and dtype.
        # nn.Module.to: diffusers' ModelMixin.to (the VAE) warns on every dtype cast, wrongly, in diffusers 0.42.
        return nn.Module.to(module, device=self.device, dtype=self._dtype_for(module)).eval().requires_grad_(False)

    def _dtype_for(self, module: nn.Module) -> torch.dtype:
        # A VAE that asks for it (SD's "force_upcast") stays fp32 in an fp16 pipeline, as diffusers' pipelines
        # upcast it: its decoder overflows fp16. It is small next to the U-Nets.
        config = getattr(module, "config", None)
        if self.dtype == torch.float16 and getattr(config, "force_upcast", False) and hasattr(config, "latent_channels"):
            return torch.float32
        return self.dtype

    def _load(self, name: str) -> nn.Module:
        from .models.stunet import STUNet
        from .models.text_encoder import TextEncoder

        directory = self._directories[name]
        if name == "text_encoder":
            return TextEncoder.from_pretrained(directory, self._directories.get("tokenizer", directory))
        if name == "vae":
            from .models.vae import load_vae

            return load_vae(directory)
        return STUNet.from_pretrained(directory)

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in COMPONENTS:
            raise InputError(f"unknown component {name!r}; components are {', '.join(COMPONENTS)}")


# ----------------------------------------------------------------------------- the prompt's vocabulary
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits: what a user calls a word
_PROBE = "qzxvkj"  # spelled from letters by any sub-word tokenizer, unknown to any word-level one


def known_words(tokenizer) -> list[str] | None:
    """The words a **closed word-level** tokenizer knows, sorted (special tokens left out); None for every
    tokenizer that can spell any word (BPE, byte-level, SentencePiece, WordPiece with "##" pieces), whose
    prompts have no unknown words.

    Why: a small model trained on a fixed vocabulary (the bundled model's word-level BERT knows ~120 words)
    maps every other word to [UNK], i.e. ignores it silently; a UI or CLI can say so before generating.
    """
    unknown = getattr(tokenizer, "unk_token", None)
    if tokenizer is None or not unknown:
        return None
    try:
        if set(tokenizer.tokenize(_PROBE)) != {unknown}:
            return None
        vocabulary = tokenizer.get_vocab()
    except (NotImplementedError, AttributeError, TypeError, ValueError):  # a tokenizer without a readable vocabulary
        return None
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    return sorted(token for token in vocabulary if token not in special and _WORD.fullmatch(token))


def unknown_words(tokenizer, prompt: str) -> list[str]:
    """The words of ``prompt`` (as typed, first occurrence, in order) that a closed word-level tokenizer maps to
    its unknown token; always [] for a tokenizer that can spell any word (``known_words`` is None)."""
    if known_words(tokenizer) is None:
        return []
    unknown, seen = [], set()
    for word in _WORD.findall(prompt or ""):
        key = word.lower()
        if key not in seen and tokenizer.unk_token in tokenizer.tokenize(word):
            unknown.append(word)
        seen.add(key)
    return unknown
