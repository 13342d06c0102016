"""Text conditioning through transformers: any AutoTokenizer + encoder (T5, CLIP text, BERT families)."""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from diffusers import ModelMixin
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForTextEncoding, AutoTokenizer, BertConfig, BertModel,
                          BertTokenizer, CLIPTextConfig, CLIPTextModel, CLIPTokenizer)
from transformers.utils import logging as transformers_logging

from ..errors import CheckpointError, InputError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CLIP_SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]
ARCHITECTURES = ("bert", "clip")  # what ``TextEncoder.from_vocabulary`` builds
# Prompt length for encoders with relative positions (T5): DeepFloyd IF's (and diffusers' IF pipeline's) 77
# tokens; T5 tokenizers report 512 (T5's pre-training length), which would pad every prompt 6.6x longer.
RELATIVE_POSITION_PROMPT_LENGTH = 77
# The prompt length a saved text encoder was used with, kept in its config.json (read back on load).
MAX_LENGTH_KEY = "lumiere_max_length"
# Top-level weight names of an encoder stack saved on its own (``T5Model.get_encoder()``, as earlier versions
# of this library wrote): loaded into the encoder-only model under "encoder.".
_STACK_PREFIXES = ("block.", "final_layer_norm.", "embed_tokens.")


def encoder_only_class(config):
    """The encoder-only model class for an encoder-decoder config (T5 -> T5EncoderModel, also mT5/UMT5), or None."""
    try:
        return AutoModelForTextEncoding._model_mapping[type(config)]
    except KeyError:
        return None


def default_max_length(tokenizer, config) -> int:
    """Prompt length: the tokenizer's, capped by absolute position embeddings; 77 for relative-position
    encoders (T5) whose tokenizer gives no limit below T5's 512."""
    limit = int(tokenizer.model_max_length)
    limit = limit if 0 < limit < 1_000_000 else None  # transformers' "no limit" sentinel is ~1e30
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        return min(limit or positions, int(positions), 512)
    if limit is None or limit >= 512:
        return RELATIVE_POSITION_PROMPT_LENGTH
    return limit


def _require_sentencepiece(tokenizer_dir: Path | None) -> None:
    """A sentencepiece tokenizer (T5's spiece.model) without a tokenizer.json needs the sentencepiece and
    protobuf packages to convert; without them transformers falls back to a misleading tiktoken error."""
    if tokenizer_dir is not None and (not tokenizer_dir.is_dir() or (tokenizer_dir / "tokenizer.json").is_file()
                                      or not any(tokenizer_dir.glob("*.model"))):
        return
    missing = [name for name, module in (("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"this tokenizer is a SentencePiece model (e.g. T5's spiece.model): loading it needs the "
                          f"{' and '.join(missing)} package(s): pip install sentencepiece protobuf")


def _stack_format(directory: Path) -> bool:
    """True for weights saved from a bare encoder stack (names "block.0...", no "encoder." prefix)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        names = list(json.loads(index.read_text()).get("weight_map", {}))
    elif (directory / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(directory / "model.safetensors"), "pt") as handle:
            names = list(handle.keys())
    else:
        return False
    return any(name.startswith(_STACK_PREFIXES) for name in names)


class TextEncoder(ModelMixin):
    """Tokenizer + encoder returning per-token states (B, L, D) for cross-attention.

    Prompts are padded to a fixed length so training and sampling see the same sequence layout.
    Embeddings of recent prompts are cached: the unconditional "" and a prompt re-used across a
    session (the app's typical case) are encoded once.

    A diffusers ``ModelMixin`` so diffusers' pipeline loader can read it as a component
    (``["lumiere.models.text_encoder", "TextEncoder"]``: :meth:`from_pretrained` on the ``text_encoder``
    folder, which finds the pipeline's sibling ``tokenizer`` folder); moving and casting are plain
    ``torch.nn.Module`` ones.
    """

    to = nn.Module.to
    cuda = nn.Module.cuda
    half = nn.Module.half
    float = nn.Module.float

    def __init__(self, tokenizer, model: nn.Module, max_length: int | None = None, cache_size: int = 64):
        super().__init__()
        self.tokenizer = tokenizer
        if getattr(model.config, "is_encoder_decoder", False):
            model = _encoder_only(model)  # T5: only the encoder conditions the U-Net
        self.model = model
        self.max_length = int(max_length or default_max_length(tokenizer, model.config))
        # CLIP text encoders condition Stable Diffusion on all 77 states computed *without* a padding mask
        # (diffusers passes one only when the config sets use_attention_mask): do the same, so a pretrained
        # SD U-Net sees the states it was trained on. Every other encoder gets the mask.
        self.uses_attention_mask = (getattr(model.config, "model_type", "") != "clip_text_model"
                                    or bool(getattr(model.config, "use_attention_mask", False)))
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
        names = ("input_ids", "attention_mask") if self.uses_attention_mask else ("input_ids",)
        tokens = {k: v.to(self.device) for k, v in self.tokenize(list(prompts)).items() if k in names}
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
                        dtype: torch.dtype | None = torch.float32, subfolder: str = "",
                        tokenizer_subfolder: str = "", max_length: int | None = None,
                        **loader_options) -> "TextEncoder":
        """Load from local directories or Hub ids (e.g. DeepFloyd IF's ``text_encoder``/``tokenizer`` subfolders).

        ``tokenizer``: default ``encoder`` itself, or, when that folder holds no tokenizer and is a pipeline's
        ``text_encoder`` folder, the pipeline's ``tokenizer`` folder next to it (how diffusers' loader calls it).
        ``max_length``: the prompt length; default: the one the encoder was saved with, else
        :func:`default_max_length`. ``loader_options``: what diffusers' pipeline loader passes
        (``torch_dtype`` is ``dtype``; the others must be a plain load's, as for ``STUNet.from_pretrained``).

        Raises:
            ImportError: a SentencePiece tokenizer without the sentencepiece/protobuf packages.
            CheckpointError: weights missing from the checkpoint (they would be random).
        """
        from .stunet import _loader_dtype

        dtype = _loader_dtype(dtype, loader_options, "TextEncoder")
        local = Path(encoder) / subfolder
        is_local = Path(encoder).exists()
        sibling = local.parent / "tokenizer"
        if (tokenizer is None and not tokenizer_subfolder and is_local and not (local / "tokenizer_config.json").is_file()
                and (sibling / "tokenizer_config.json").is_file()):
            tokenizer = sibling
        if is_local and not (local / "config.json").is_file():
            raise FileNotFoundError(f"missing text encoder config: {local / 'config.json'}")
        tokenizer_source = str(tokenizer or encoder)
        tokenizer_dir = Path(tokenizer_source) / tokenizer_subfolder
        _require_sentencepiece(tokenizer_dir if Path(tokenizer_source).exists() else None)
        tokenizer_obj = AutoTokenizer.from_pretrained(tokenizer_source, subfolder=tokenizer_subfolder)
        config = AutoConfig.from_pretrained(str(encoder), subfolder=subfolder)
        model_class = encoder_only_class(config)
        options = {}
        if model_class is None:
            if getattr(config, "is_encoder_decoder", False):
                raise InputError(f"{local}: an encoder-decoder text encoder of type {config.model_type!r} has no "
                                 f"encoder-only model in transformers; use a T5/mT5/UMT5, CLIP text or BERT encoder")
            model_class = AutoModel
        elif is_local and _stack_format(local):
            options["key_mapping"] = {r"^(block|final_layer_norm|embed_tokens)\.": r"encoder.\1."}
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # no per-load report on every app start
        try:
            # use_safetensors: never fall back to pickled *.bin weights. An encoder-decoder config (IF's T5 has
            # "is_encoder_decoder": true) loads as its encoder-only class: the decoder is never built.
            model, info = model_class.from_pretrained(str(encoder), subfolder=subfolder, use_safetensors=True,
                                                      dtype=dtype, output_loading_info=True, **options)
        finally:
            transformers_logging.set_verbosity(verbosity)
        missing = sorted(info.get("missing_keys") or [])
        if missing:  # transformers would initialise these randomly: refuse rather than condition on noise
            raise CheckpointError(f"{local}: the text encoder checkpoint lacks {len(missing)} weight(s) of "
                                  f"{type(model).__name__} (e.g. {missing[0]}); it would load with random weights")
        saved_length = getattr(model.config, MAX_LENGTH_KEY, None)
        return cls(tokenizer_obj, model.eval(), max_length=max_length or saved_length)

    def save_pretrained(self, encoder_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike,
                        dtype: torch.dtype | None = None) -> None:
        """Write the model (safetensors) and tokenizer, the model's weights cast to ``dtype`` (None: as they are).

        The modules a transformers model keeps in fp32 when loaded in reduced precision stay float32, as
        ``from_pretrained(dtype=...)`` keeps them: ``_keep_in_fp32_modules`` under fp16 (T5's ``wo``, whose
        activations overflow fp16), ``_keep_in_fp32_modules_strict`` under fp16 and bf16.
        """
        model = self.model
        if dtype is not None:
            import copy

            model = copy.deepcopy(model).to(dtype)
            keep = set(_fp32_modules(self.model, dtype))
            if keep:
                originals = dict(self.model.state_dict())
                with torch.no_grad():
                    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
                        if tensor.is_floating_point() and keep & set(name.split(".")):
                            tensor.data = originals[name].detach().to(torch.float32).clone()
        setattr(model.config, MAX_LENGTH_KEY, self.max_length)  # reloads pad to the same length
        model.save_pretrained(str(encoder_dir), safe_serialization=True)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(str(tokenizer_dir))

    @classmethod
    def from_vocabulary(cls, words: list[str], hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
                        max_length: int = 24, architecture: str = "bert") -> "TextEncoder":
        """A small text encoder trained from scratch on the procedural world's words.

        ``architecture`` "bert" (the bundled model's): a word-level BERT, every caption word its own
        token. "clip": a CLIPTextModel + CLIPTokenizer (byte-level BPE whose merges spell the words),
        the kind Stable Diffusion uses, so a tiny latent model exercises the SD text path.
        """
        if architecture not in ARCHITECTURES:
            raise InputError(f"text_encoder.architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
        words = sorted({w.lower() for w in words})
        if architecture == "clip":
            tokenizer = _clip_tokenizer(words, max_length)
            config = CLIPTextConfig(
                vocab_size=len(tokenizer.get_vocab()), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=num_heads, max_position_embeddings=max_length,
                projection_dim=hidden_size, attention_dropout=0.0, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
            return cls(tokenizer, CLIPTextModel(config), max_length=max_length)
        vocab = SPECIAL_TOKENS + sorted(set(words) - set(SPECIAL_TOKENS))
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


def _clip_tokenizer(words: list[str], max_length: int) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over ``words``: every letter and digit (alone and word-final, "</w>") and
    the merges that join each word left to right, every merge's result in the vocabulary. Words whose
    merges collide with another word's come out as a few sub-word tokens, as in CLIP itself."""
    characters = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789") | {c for w in words for c in w})
    vocab = CLIP_SPECIAL_TOKENS + characters + [c + "</w>" for c in characters]
    merges, known = {}, set(vocab)  # a dict keeps the merges' order (their ranks)
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        current = symbols[0]
        for symbol in symbols[1:]:
            merges.setdefault((current, symbol), None)
            current += symbol
            if current not in known:
                vocab.append(current)
                known.add(current)
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=list(merges), model_max_length=max_length)

def _encoder_only(model: nn.Module) -> nn.Module:
    """The encoder of an encoder-decoder model, as its encoder-only class where transformers has one (so it
    saves and reloads under the same weight names); the encoder and embedding weights are shared, not copied."""
    model_class = encoder_only_class(model.config)
    if model_class is None or isinstance(model, model_class):
        return model.get_encoder()
    with torch.device("meta"):
        wrapper = model_class(model.config)
    wrapper.shared = model.get_input_embeddings()
    wrapper.encoder = model.get_encoder()
    return wrapper.to(next(model.parameters()).dtype)


def _fp32_modules(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Module names transformers keeps in float32 when ``model`` is loaded as ``dtype`` (see ``save_pretrained``)."""
    keep = []
    if dtype == torch.float16:
        keep += list(getattr(model, "_keep_in_fp32_modules", None) or ())
    if dtype in (torch.float16, torch.bfloat16):
        keep += list(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    return keep
