"""A training config (``configs/*.json``) parsed once into dataclasses.

Every section rejects keys it does not know, naming the key and the allowed ones, and every value of
the wrong type or out of range (``options.from_mapping`` / ``check_types``), so a typo fails when the
run starts rather than training hours with a default; keys starting with "_" are comments. The
sections handed whole to diffusers (``t2i.unet``, ``vae.autoencoder``, ``ssr.unet``) stay dicts: diffusers
checks those; the ``scheduler`` section stays a dict of checked diffusers keys.

Layout::

    {"output_dir": ..., "data": DataConfig, "model": build.ModelConfig,
     "train": TrainSettings shared by every stage,
     "stages": {stage: StageConfig = TrainSettings overrides + the stage's own keys}}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..build import ModelConfig
from ..errors import InputError
from ..data.world import motion_probabilities
from ..options import bounded, check_keys, check_types, from_mapping
from .loop import TrainSettings
from .masks import mask_probabilities

STAGES = ("t2i", "temporal", "conditional", "ssr", "style")
DATA_TYPES = ("procedural", "real", "folder", "webdataset")
# Keys a stage has besides TrainSettings: the T2I stage's opt-in to fine-tune a pretrained T2I; the T2I and
# temporal stages' optional refinement phase; the SSR stage's crop, window and two phases; the style list, each
# style's own settings and the slider switch.
STAGE_KEYS = {"t2i": ("finetune_pretrained", "refine"), "temporal": ("init_from", "refine"), "conditional": ("init_from", "mask_shares", "known_weight"), "ssr": ("crop", "train_window", "image", "video", "init_from"), "style": ("styles", "per_style", "slider")}
# Sections of a stage that are TrainSettings overrides of one of its phases.
PHASE_KEYS = ("image", "video", "refine")


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class DataConfig:
    """Where training clips come from: the procedural world, a folder of real videos + a CSV (``real``), a
    folder of videos each with its caption in a .txt next to it (``folder``), or webdataset tar shards
    streamed shard by shard (``data.shards``)."""

    type: str = "procedural"
    seed: int = 0
    length: int = bounded(1_000_000, min=1)  # procedural: items per epoch
    root: str | None = None    # real: the folder the metadata's paths are relative to; folder: the videos' folder
    metadata: str | None = None  # real: CSV/JSONL with path,caption rows, or WebVid's own CSV
    fps: float | None = None   # real / folder / webdataset: clip frame rate (None: the model's fps)
    shards: str | tuple[str, ...] | None = None  # webdataset: a brace pattern "dir/{00000..00099}.tar" or a list
    # real / folder: read every file's header when the dataset is built (~1 ms a file) and leave out the
    # unreadable and too-short ones up front; false skips that scan (for millions of files), and such files
    # are then dropped when they first fail to decode.
    check_headers: bool = True
    # procedural: render the clips on the training device (``data.render_torch``): the loader's workers draw
    # only each clip's parameters. Why: numpy rendering on the CPU cores, not the training step, would
    # bound a GPU run. The SSR stage's crops are still rendered by the workers.
    render_on_device: bool = False
    # procedural: relative weight of each motion in the draw of a clip's (first) object, motions not named 1
    # (null: uniform). Why: the classes a model learns last (growing, shrinking) get more of its steps.
    motion_weights: dict[str, float] | None = None

    def __post_init__(self):
        data = self
        if data.type not in DATA_TYPES:
            raise InputError(f"data.type must be one of {', '.join(DATA_TYPES)}, got {data.type!r}")
        if data.type == "real" and not (data.root and data.metadata):
            raise InputError("data.type 'real' needs data.root and data.metadata (without a metadata file, "
                             "data.type 'folder' reads each video's caption from the .txt file next to it)")
        if data.type == "folder" and not data.root:
            raise InputError("data.type 'folder' needs data.root: the folder of videos, each with its caption in "
                             "a .txt file of the same name next to it (clip.mp4 + clip.txt)")
        if data.type == "folder" and data.metadata:
            raise InputError("data.metadata is read by data.type 'real' only; data.type 'folder' takes each "
                             "video's caption from the .txt file next to it: remove data.metadata, or set "
                             "data.type to 'real'")
        if data.type == "webdataset" and not data.shards:
            raise InputError("data.type 'webdataset' needs data.shards (e.g. \"shards/{00000..00099}.tar\")")
        if data.render_on_device and data.type != "procedural":
            raise InputError(f"data.render_on_device renders the procedural world; data.type is {data.type!r}")
        if data.motion_weights is not None:
            if data.type != "procedural":
                raise InputError(f"data.motion_weights weighs the procedural world's motions; data.type is {data.type!r}")
            try:
                motion_probabilities(data.motion_weights)
            except ValueError as error:
                raise InputError(f"data.motion_weights: {error}") from None
        if not isinstance(data.check_headers, bool):
            raise InputError(f"data.check_headers must be true or false, got {data.check_headers!r}")
        if data.fps is not None and (isinstance(data.fps, bool) or not isinstance(data.fps, (int, float))
                                     or not data.fps > 0):
            raise InputError(f"data.fps must be a positive number of frames per second, got {data.fps!r}")

    @classmethod
    def from_dict(cls, values: dict | None) -> "DataConfig":
        return from_mapping(cls, values, "data")


@dataclass(frozen=True)
class StageConfig:
    """One stage's section of ``stages``: TrainSettings overrides plus the stage's own keys."""

    settings: dict = field(default_factory=dict)  # TrainSettings keys over the config's "train"
    finetune_pretrained: bool = False  # t2i: train a model.t2i.pretrained T2I too (default: skip the stage)
    init_from: str | None = None    # temporal / conditional / ssr: a saved STUNet to continue (no re-inflation,
    #                                 no widening of the base, no SSR image phase)
    crop: int = bounded(64, min=1)  # ssr: side of the high-res training crops
    train_window: int | None = bounded(None, min=1)  # ssr: frames per training window (None: the model's ssr.window)
    image: dict = field(default_factory=dict)  # ssr: TrainSettings overrides of the image phase
    video: dict = field(default_factory=dict)  # ssr: ... of the video (temporal layers) phase
    refine: dict = field(default_factory=dict)  # t2i / temporal: ... of a second phase continuing the first's
    #                                             EMA weights with a fresh optimizer, schedule and EMA (empty: none)
    styles: tuple[str, ...] = ()    # style: the styles to fine-tune
    style_folders: dict = field(default_factory=dict)  # style: name -> folder of its images (styles given as a mapping)
    per_style: dict = field(default_factory=dict)  # style: name -> TrainSettings overrides of that style's fine-tune
    slider: bool | tuple[str, ...] = False  # style: train styles as the app's weight slider uses them
    #   (stages.StyleSliderModule): true for every style, or a list of the styles to train so; needs the
    #   procedural world, which renders every scene both plain and styled
    mask_shares: dict = field(default_factory=dict)  # conditional: mask kind -> weight of its draws
    #                                                  (masks.mask_probabilities; empty: the default shares)
    known_weight: float = bounded(1.0, above=0.0)  # conditional: the loss's weight on the known pixels (M = 1)
    #                                                relative to the generated ones (1: one plain mean)

    def is_slider(self, style: str) -> bool:
        """Whether ``style`` trains as a slider (``slider`` true, or a list that names it)."""
        return self.slider is True or (isinstance(self.slider, tuple) and style in self.slider)

    def phase_settings(self, phase: str | None) -> dict:
        """The TrainSettings overrides of one phase (an SSR phase, a T2I or temporal refinement, or a style's
        name in the style stage) over the stage's own; {} for None or a phase without any."""
        if phase in self.per_style:
            return self.per_style[phase]
        return getattr(self, phase) if phase in PHASE_KEYS else {}

    @classmethod
    def from_dict(cls, stage: str, values: dict | None) -> "StageConfig":
        """Parse ``stages.<stage>``: its TrainSettings overrides (each value type-checked; the merged settings
        are checked by ``RunConfig.from_dict``) and the stage's own keys.

        Raises:
            InputError: an unknown key or a bad value, naming ``stages.<stage>``.key.
        """
        where = f"stages.{stage}"
        own = STAGE_KEYS.get(stage, ())
        values = check_keys(values, _fields(TrainSettings) | set(own), where)
        if "text_embedding_cache" in values:  # Workspace.text_encoder reads it once for every stage
            raise InputError(f"{where}.text_embedding_cache: set it in the config's train section (one cache for every stage)")
        settings = check_types(TrainSettings, {k: v for k, v in values.items() if k not in own}, where)
        extras = {k: v for k, v in values.items() if k in own}
        for phase in PHASE_KEYS:
            if phase in extras:
                section = check_keys(extras[phase], _fields(TrainSettings), f"{where}.{phase}")
                extras[phase] = check_types(TrainSettings, section, f"{where}.{phase}")
        if "styles" in extras:
            styles = extras["styles"]
            if isinstance(styles, dict):  # {name: folder of that style's images}
                bad = [name for name, folder in styles.items() if not isinstance(folder, str) or not folder]
                if bad:
                    raise InputError(f"{where}.styles: the folder of style {bad[0]!r} must be a path string")
                extras["style_folders"] = {str(name): folder for name, folder in styles.items()}
            elif not isinstance(styles, (list, tuple)) or not all(isinstance(name, str) for name in styles):
                raise InputError(f"{where}.styles must be a list of style names or a mapping name -> image folder")
            extras["styles"] = tuple(styles)
        if "per_style" in extras:
            per_style = check_keys(extras["per_style"], set(extras.get("styles", ())), f"{where}.per_style")
            extras["per_style"] = {name: check_types(TrainSettings, check_keys(section, _fields(TrainSettings),
                                                                               f"{where}.per_style.{name}"),
                                                     f"{where}.per_style.{name}")
                                   for name, section in per_style.items()}
        if isinstance(extras.get("slider"), list):
            unknown = [name for name in extras["slider"] if name not in extras.get("styles", ())]
            if unknown:
                raise InputError(f"{where}.slider names {unknown[0]!r}, which is not in {where}.styles")
        if "mask_shares" in extras:
            if not isinstance(extras["mask_shares"], dict):
                raise InputError(f"{where}.mask_shares must be a mapping mask kind -> weight")
            mask_probabilities(extras["mask_shares"])  # checked here, not at the conditional stage's first step
        extras = check_types(cls, extras, where)
        return cls(settings=settings, **extras)


@dataclass(frozen=True)
class RunConfig:
    """A whole training config."""

    model: ModelConfig
    data: DataConfig = DataConfig()
    train: dict = field(default_factory=dict)  # TrainSettings keys shared by every stage
    stages: dict[str, StageConfig] = field(default_factory=dict)
    output_dir: str | None = None

    def stage(self, name: str) -> StageConfig:
        return self.stages.get(name, StageConfig())

    def phases(self, stage: str) -> tuple[str | None, ...]:
        """The phases ``stage`` trains in order (None: the stage's own settings): the SSR's image and video
        phases; the T2I or temporal stage, then its ``refine`` phase when the config has one; one per style."""
        if stage == "ssr":
            return ("image", "video")
        if stage in ("t2i", "temporal") and self.stage(stage).refine:
            return (None, "refine")
        if stage == "style" and self.stage("style").styles:
            return self.stage("style").styles
        return (None,)

    def settings(self, stage: str, phase: str | None = None, time_scale: float = 1.0, **overrides) -> TrainSettings:
        """TrainSettings of ``stage`` (its ``phase``: the SSR stage's "image" / "video", the T2I or temporal
        stage's "refine", a style's name): the dataclass defaults, then ``train``, the stage, the phase, then
        ``overrides`` that are not None;
        a ``time_budget`` is multiplied by ``time_scale`` (``scale_to_budget``)."""
        section = self.stage(stage)
        values = {**self.train, **section.settings, **section.phase_settings(phase),
                  **{k: v for k, v in overrides.items() if v is not None}}
        settings = TrainSettings.from_dict(values, f"the {stage} stage's settings")
        if settings.time_budget and time_scale != 1.0:
            settings.time_budget = float(settings.time_budget) * time_scale
        return settings

    def time_budget(self, stages=STAGES) -> float:
        """The seconds of training the config's time budgets add up to over ``stages`` (each stage's phases,
        a style each); 0 when no stage has one.

        Raises:
            InputError: some of the stages have a budget and others not (a time-boxed run would then
                spend an unknown time in those).
        """
        parts = {}
        for stage in stages:
            if stage == "t2i" and self.model.t2i.pretrained and not self.stage("t2i").finetune_pretrained:
                continue  # skipped: a pretrained T2I is used as it is
            if stage == "ssr" and self.model.ssr is None:
                continue
            for phase in self.phases(stage):
                parts[f"{stage}.{phase}" if phase else stage] = self.settings(stage, phase).time_budget
        budgeted = {name for name, seconds in parts.items() if seconds}
        if budgeted and budgeted != set(parts):
            raise InputError(f"time_budget is set for {', '.join(sorted(budgeted))} but not for "
                             f"{', '.join(sorted(set(parts) - budgeted))}: a time-boxed run needs one for every stage")
        return float(sum(seconds for seconds in parts.values() if seconds))

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Parse and check a whole config.

        Raises:
            InputError: an unknown key anywhere the run reads, a missing required key, a bad value.
        """
        values = check_keys(values, _fields(cls), "the config")
        if "model" not in values:
            raise InputError("the config has no 'model' section")
        check_types(cls, {k: v for k, v in values.items() if k == "output_dir"}, "the config")
        train = check_keys(values.get("train"), _fields(TrainSettings), "train")
        TrainSettings.from_dict(train, "train")  # its own rules, then every value's type and range
        stages = check_keys(values.get("stages"), STAGES, "stages")
        config = cls(model=ModelConfig.from_dict(values["model"]), data=DataConfig.from_dict(values.get("data")),
                     train=train,
                     stages={name: StageConfig.from_dict(name, section) for name, section in stages.items()},
                     output_dir=values.get("output_dir"))
        for stage in STAGES:  # every stage's merged settings, so a bad combination fails now, not stages later
            for phase in config.phases(stage):
                settings = config.settings(stage, phase)
                if settings.long_clip_share and stage != "temporal":
                    raise InputError(f"long_clip_share is read by the temporal stage only, but the {stage} stage's "
                                     f"settings have {settings.long_clip_share}: set it in stages.temporal")
                if settings.long_clip_motions is not None and not settings.long_clip_share:
                    raise InputError(f"long_clip_motions chooses the long clips of long_clip_share, which the {stage} "
                                     "stage's settings leave at 0")
                if settings.long_clip_share and not (config.data.type == "procedural" and config.data.render_on_device):
                    raise InputError("long_clip_share renders each clip again at its long length: it needs "
                                     "data.type 'procedural' with data.render_on_device true")
        config.check_styles(config.stage("style").styles)
        return config

    def check_styles(self, styles) -> None:
        """Refuse styles without image folders on real data when the config is read, not after the other
        stages trained: only the procedural world renders a style from its name.

        A style trained as a slider (``stages.style.slider`` true or naming it) needs every scene both plain and
        styled, which only the world renders: a folder of a style's images has no unstyled twin.

        Raises:
            InputError: naming ``stages.style.styles`` and the mapping it needs, or ``stages.style.slider``.
        """
        stage = self.stage("style")
        named = [style for style in styles if style not in stage.style_folders]
        if named and self.data.type != "procedural":
            raise InputError(f"stages.style.styles: with {self.data.type} data each style needs its own images; give "
                             f"a mapping style name -> image folder (e.g. {{\"{named[0]}\": \"data/styles/...\"}}) "
                             f"instead of a list of names (only the procedural data renders styles itself)")
        sliders_from_folders = [style for style in styles if style in stage.style_folders and stage.is_slider(style)]
        if sliders_from_folders:
            raise InputError(f"stages.style.slider: style {sliders_from_folders[0]!r} comes from a folder of images, "
                             f"which has no unstyled render of each scene to blend toward; train it without the slider")

    def plan(self, stages) -> tuple[tuple[str, ...], dict[str, str]]:
        """The stages a run of ``stages`` trains, and why each other one is skipped, checked before the first
        step: an input a later stage needs (a style list, a style's image folder, a STUNet to continue, the
        real data's files) fails now, not after hours of the earlier stages.

        A stage with nothing to do is skipped when it is one of several (``--stage all``): no model.ssr for the
        SSR stage, an empty style list for the style stage; asked for alone, it is an error.

        Raises:
            InputError: naming the config key and what it needs.
        """
        stages = tuple(stages)
        skipped = {}
        if "ssr" in stages and self.model.ssr is None:
            skipped["ssr"] = "the config has no model.ssr (an SSR model is optional)"
        if "style" in stages and not self.stage("style").styles:
            skipped["style"] = "stages.style.styles is empty"
        alone = len(stages) == 1 and stages[0] in skipped
        if alone:
            raise InputError(f"--stage {stages[0]}: nothing to train: {skipped[stages[0]]}")
        run = tuple(stage for stage in stages if stage not in skipped)
        for stage in run:
            init_from = self.stage(stage).init_from
            if init_from and not (Path(init_from).expanduser() / "config.json").is_file():
                raise InputError(f"stages.{stage}.init_from: no STUNet config.json in {init_from}")
        if "style" in run:
            for style, folder in self.stage("style").style_folders.items():
                if not Path(folder).expanduser().is_dir():
                    raise InputError(f"stages.style.styles.{style}: {folder} is not a folder of images")
        if self.data.type in ("real", "folder") and any(stage != "style" for stage in run):
            for key in ("root", "metadata") if self.data.type == "real" else ("root",):
                path = Path(getattr(self.data, key)).expanduser()
                if not path.exists():
                    raise InputError(f"data.{key}: {path} does not exist")
        return run, skipped
