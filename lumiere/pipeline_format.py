"""The pipeline directory (``docs/pipeline-format.md``): read and written here only.

Both ``LumierePipeline.save_pretrained`` and the training ``Workspace`` write it through these
functions, so a trained run and an exported pipeline are the same format::

    model_index.json                      {"_class_name": "LumierePipeline", "_diffusers_version": ...,
                                           "base": ["lumiere.models.stunet", "STUNet"], ... (diffusers' entries),
                                           "components": {...}, "styles": {name: "styles/<slug>"}, "config": {...}}
    scheduler/scheduler_config.json       diffusers scheduler config (noise schedule, prediction type)
    text_encoder/, tokenizer/             transformers model + tokenizer files
    vae/                                  latent pipelines only: diffusers AutoencoderKL (config.json + safetensors)
    base/, conditional/, ssr/             STUNet: config.json + stunet.safetensors (before: diffusion_pytorch_model.*)
    styles/<slug>/style.json              {"name": ...} (a full copy), or {"name": ..., "format": "low_rank", "rank": r}
    styles/<slug>/diffusion_pytorch_model.safetensors   full copy: spatial (T2I) weights of the style fine-tune
    styles/<slug>/style_delta.safetensors               low rank: W_style - W_orig (``styles.StyleDelta``)

Only JSON and safetensors are read or written (never pickles).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .hub import read_json

PIPELINE_CLASS = "LumierePipeline"
MODEL_INDEX = "model_index.json"
SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
STYLE_WEIGHTS = "diffusion_pytorch_model.safetensors"  # a style as a full copy of the spatial weights
STYLE_DELTA = "style_delta.safetensors"  # a style as its (low-rank) difference to them: ``styles.StyleDelta``
STYLE_CONFIG = "style.json"
LOW_RANK = "low_rank"  # style.json's "format" of a StyleDelta folder (absent: a full copy, every older folder)
COMPONENT_FOLDERS = ("text_encoder", "tokenizer", "vae", "base", "conditional", "ssr")
# The index keys that are not components: Lumiere's own, and diffusers' "_" ones (``_class_name``, ...).
INDEX_KEYS = ("components", "styles", "config", "training")


def component_entry(name: str, folder: Path | None = None, scheduler_config: dict | None = None) -> tuple[str, str]:
    """The ``[library, class]`` diffusers' pipeline loader reads a component folder with (``load_sub_model``:
    ``getattr(sys.modules[library], class).from_pretrained(root / name)``), from the files in ``folder``.

    STUNets and the text encoder are Lumiere's classes (diffusers writes a class from outside its own
    libraries under its full module path); the tokenizer, VAE and scheduler are transformers' / diffusers'.
    """
    if name in ("base", "conditional", "ssr"):
        from .models.stunet import STUNet

        return STUNet.__module__, STUNet.__name__
    if name == "text_encoder":
        from .models.text_encoder import TextEncoder

        return TextEncoder.__module__, TextEncoder.__name__
    if name == "tokenizer":
        saved = _read_optional(folder / "tokenizer_config.json") if folder is not None else {}
        return "transformers", saved.get("tokenizer_class") or "PreTrainedTokenizerFast"
    if name == "vae":
        saved = _read_optional(folder / "config.json") if folder is not None else {}
        return "diffusers", saved.get("_class_name") or "AutoencoderKL"
    if name == "scheduler":
        from .sampling import SCHEDULER_CLASSES  # a config naming no class samples with DPM-Solver++

        return "diffusers", (scheduler_config or {}).get("_class_name") or SCHEDULER_CLASSES["dpm++"].__name__
    raise CheckpointError(f"unknown pipeline component {name!r}")


def _read_optional(path: Path) -> dict:
    try:
        return read_json(path) if path.is_file() else {}
    except CheckpointError:
        return {}


def slugify(name: str) -> str:
    """A style name as a folder name ("line drawing" -> "line-drawing")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "style"


@dataclass
class PipelineDirectory:
    """A checked pipeline directory: every listed file exists (weights are read later, lazily)."""

    root: Path
    config: dict
    scheduler_config: dict
    component_dirs: dict[str, Path] = field(default_factory=dict)
    style_dirs: dict[str, Path] = field(default_factory=dict)
    training: dict | None = None  # how the weights were made (``write_index``'s ``training``), if recorded


def read_pipeline_dir(root: str | os.PathLike) -> PipelineDirectory:
    """Read ``model_index.json`` and check the files it lists.

    Raises:
        CheckpointError: the index is missing, corrupt or not a Lumiere index, it lacks the
            text encoder or base model, or a listed folder lacks its config / style weights.
        InputError: the scheduler config has a key no supported diffusers scheduler reads.
    """
    root = Path(root)
    index = read_json(root / MODEL_INDEX)
    if index.get("_class_name") != PIPELINE_CLASS:
        raise CheckpointError(f"{root / MODEL_INDEX} is not a Lumiere pipeline index")
    component_dirs = {}
    listing = index.get("components")
    if listing is None:  # diffusers' entries only (a folder diffusers wrote): each component in its own folder
        listing = {name: name for name, entry in index.items()
                   if name not in INDEX_KEYS and not name.startswith("_") and name != "scheduler"
                   and isinstance(entry, list) and entry and entry[0] is not None}
    for name, sub in listing.items():
        directory = root / sub
        expected = directory / ("tokenizer_config.json" if name == "tokenizer" else "config.json")
        if not expected.is_file():
            raise CheckpointError(f"missing checkpoint file: {expected}")
        component_dirs[name] = directory
    if "text_encoder" not in component_dirs or "base" not in component_dirs:
        raise CheckpointError(f"{root / MODEL_INDEX} must list at least 'text_encoder' and 'base'")
    style_dirs = {}
    for name, sub in index.get("styles", {}).items():
        weights = style_file(root / sub)
        if not weights.is_file():
            raise CheckpointError(f"missing checkpoint file: {weights}")
        style_dirs[name] = root / sub
    if "config" not in index:
        raise CheckpointError(f"{root / MODEL_INDEX} has no 'config'")
    from .sampling import scheduler_keys
    from .options import check_keys

    scheduler_config = read_json(root / SCHEDULER_CONFIG)
    check_keys(scheduler_config, scheduler_keys(), str(root / SCHEDULER_CONFIG))  # diffusers ignores a typo
    return PipelineDirectory(root, index["config"], scheduler_config, component_dirs, style_dirs,
                             index.get("training"))


def write_component(root: Path, name: str, module: nn.Module, dtype: torch.dtype | None = None) -> list[str]:
    """Save one component under ``root``; returns the folders written (the text encoder adds "tokenizer")."""
    root.mkdir(parents=True, exist_ok=True)
    if name == "text_encoder":
        module.save_pretrained(root / "text_encoder", root / "tokenizer", dtype=dtype)
        return ["text_encoder", "tokenizer"]
    if name == "vae":
        from .models.vae import save_vae

        save_vae(module, root / name, dtype)
        return [name]
    module.save_pretrained(root / name, dtype=dtype)
    return [name]


def _style_json(directory: Path) -> dict:
    return _read_optional(directory / STYLE_CONFIG)


def style_file(directory: Path) -> Path:
    """The weights file of the style folder ``directory``: ``STYLE_DELTA`` when its style.json says
    "format": "low_rank", else ``STYLE_WEIGHTS`` (a full copy: every folder written before low-rank styles)."""
    return directory / (STYLE_DELTA if _style_json(directory).get("format") == LOW_RANK else STYLE_WEIGHTS)


def read_style(directory: Path):
    """A style folder's weights: a dict of full spatial weights, or a ``styles.StyleDelta``.

    Raises:
        CheckpointError: the file is missing or corrupt, or a low-rank file's tensors do not pair up.
    """
    from .hub import read_safetensors
    from .styles import StyleDelta

    path = style_file(directory)
    state = read_safetensors(path)
    if path.name != STYLE_DELTA:
        return state
    try:
        return StyleDelta.from_state(state, _style_json(directory).get("rank"))
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def write_style(root: Path, name: str, style, dtype: torch.dtype | None = None, *,
                original: dict[str, torch.Tensor] | None = None, rank: int | None = None,
                full: bool | None = None) -> str:
    """Save a style and its name; returns its folder relative to ``root``.

    ``style``: the fine-tune's full spatial weights, or a ``styles.StyleDelta``. The form written:
    ``full`` None (the default) writes the low-rank form (``STYLE_DELTA``) whenever it can, i.e. for a
    StyleDelta (as it is) or for full weights with ``original`` (W_orig: factored at ``rank``, default
    ``styles.STYLE_RANK``), else a full copy (``STYLE_WEIGHTS``); ``full`` True always writes a full copy (of a
    StyleDelta: ``original`` + Delta), False always the low-rank form. Both forms load (``read_style``).

    Raises:
        ValueError: a form that needs ``original`` without it.
    """
    from safetensors.torch import save_file

    from .styles import STYLE_RANK, StyleDelta

    low_rank = (isinstance(style, StyleDelta) or original is not None) if full is None else not full
    if low_rank and not isinstance(style, StyleDelta):
        if original is None:
            raise ValueError(f"style {name!r}: the low-rank form needs the weights it was fine-tuned from (original)")
        style = StyleDelta.between(style, original, STYLE_RANK if rank is None else rank)
    if not low_rank and isinstance(style, StyleDelta):
        if original is None:
            raise ValueError(f"style {name!r}: a full copy of a style difference needs the original weights")
        style = style.apply_to(original)
    sub = f"styles/{slugify(name)}"
    directory = root / sub
    directory.mkdir(parents=True, exist_ok=True)
    if low_rank:
        state, written, stale = style.to(dtype).state(), STYLE_DELTA, STYLE_WEIGHTS
        config = {"name": name, "format": LOW_RANK, "rank": style.rank}
    else:
        state = {k: (v.detach().cpu().to(dtype) if dtype is not None else v.detach().cpu()).contiguous()
                 for k, v in style.items()}
        written, stale, config = STYLE_WEIGHTS, STYLE_DELTA, {"name": name}
    save_file(state, str(directory / written), metadata={"format": "pt"})
    (directory / stale).unlink(missing_ok=True)
    (directory / STYLE_CONFIG).write_text(json.dumps(config, indent=2))
    return sub


def saved_parts(root: Path) -> tuple[list[str], dict[str, str]]:
    """The component folders and styles already under ``root`` (a training run fills it stage by stage)."""
    components = [name for name in COMPONENT_FOLDERS if (root / name).is_dir()]
    styles = {}
    for style_json in sorted((root / "styles").glob(f"*/{STYLE_CONFIG}")):
        styles[json.loads(style_json.read_text())["name"]] = f"styles/{style_json.parent.name}"
    return components, styles


def write_index(root: Path, config: dict, scheduler_config: dict, components: list[str], styles: dict[str, str],
                training: dict | None = None) -> None:
    """Write ``model_index.json`` (listing ``components`` and ``styles``) and the scheduler config.

    The index is diffusers' as well as Lumiere's: ``_class_name``, ``_diffusers_version`` and one
    ``[library, class]`` entry per component folder written (``component_entry``; the scheduler's too), which
    diffusers' pipeline loader reads, then Lumiere's own keys (``components``, ``styles``, ``config``,
    ``training``), which it passes to ``LumierePipeline.__init__``.

    ``training``: how the weights were made (the training config's hash, the commit; ``train.stages``),
    kept through loading and saving so an exported or packed model still says which recipe it came from."""
    import diffusers

    root.mkdir(parents=True, exist_ok=True)
    entries = {name: list(component_entry(name, root / name, scheduler_config)) for name in [*components, "scheduler"]}
    index = {"_class_name": PIPELINE_CLASS, "_diffusers_version": diffusers.__version__,
             **dict(sorted(entries.items())),
             "components": {name: name for name in components}, "styles": styles, "config": config}
    if training:
        index["training"] = training
    (root / MODEL_INDEX).write_text(json.dumps(index, indent=2))
    (root / SCHEDULER_CONFIG).parent.mkdir(exist_ok=True)
    (root / SCHEDULER_CONFIG).write_text(json.dumps(scheduler_config, indent=2))
