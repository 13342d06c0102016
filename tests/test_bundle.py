"""lumiere.bundle: pipeline folders as diffusers users expect them. The scheduler's class is honoured (or refused
when the pipeline opens), STUNet folders are not mistaken for plain 2D U-Nets, and exports keep transformers' fp32
modules."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from lumiere import LumierePipeline
from lumiere.build import DEFAULT_SCHEDULER
from lumiere.errors import InputError
from lumiere.options import SAMPLERS
from lumiere.sampling import SCHEDULER_CLASSES, make_scheduler, scheduler_sampler


def _edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _copy_with_scheduler(source, target, class_name: str, drop_default_sampler: bool = True):
    shutil.copytree(source, target)
    _edit_json(target / "scheduler" / "scheduler_config.json", lambda c: c.update(_class_name=class_name))
    if drop_default_sampler:
        _edit_json(target / "model_index.json", lambda index: index["config"]["defaults"].pop("sampler"))
    return target


# ------------------------------------------------------------------ 1. the scheduler class


def test_unipc_is_a_sampler_and_each_class_name_maps_to_its_sampler():
    assert "unipc" in SAMPLERS and SCHEDULER_CLASSES["unipc"] is UniPCMultistepScheduler
    for sampler, cls in SCHEDULER_CLASSES.items():
        config = {**DEFAULT_SCHEDULER, "_class_name": cls.__name__}
        assert scheduler_sampler(config) == sampler
        assert type(make_scheduler(config)) is cls  # no sampler asked for: the config's class
    config = {**DEFAULT_SCHEDULER, "_class_name": "UniPCMultistepScheduler"}
    assert type(make_scheduler(config, "ddim")) is DDIMScheduler  # a sampler asked for wins
    dpm = make_scheduler(DEFAULT_SCHEDULER)
    assert type(dpm) is DPMSolverMultistepScheduler and dpm.config.algorithm_type == "dpmsolver++"


def test_an_unknown_scheduler_class_is_refused_naming_it_and_the_supported_ones(tiny_pipeline_dir, tmp_path):
    with pytest.raises(InputError, match=r"'LMSDiscreteScheduler'.*UniPCMultistepScheduler"):
        make_scheduler({**DEFAULT_SCHEDULER, "_class_name": "LMSDiscreteScheduler"})
    from lumiere.build import ModelConfig
    from tests.tiny import TINY_CONFIG

    with pytest.raises(InputError, match="'LMSDiscreteScheduler'"):  # a training config: when the run starts
        ModelConfig.from_dict({**TINY_CONFIG, "scheduler": {"_class_name": "LMSDiscreteScheduler"}})
    folder = _copy_with_scheduler(tiny_pipeline_dir, tmp_path / "p", "LMSDiscreteScheduler")
    with pytest.raises(InputError, match=r"unsupported scheduler class 'LMSDiscreteScheduler'.*DDIMScheduler"):
        LumierePipeline.from_pretrained(folder, device="cpu")  # lazy: refused when it opens, not at generation


def test_the_scheduler_class_is_the_default_sampler_when_the_config_names_none(tiny_pipeline_dir, tmp_path):
    folder = _copy_with_scheduler(tiny_pipeline_dir, tmp_path / "p", "UniPCMultistepScheduler")
    pipe = LumierePipeline.from_pretrained(folder, device="cpu")
    assert pipe.defaults.sampler == "unipc"
    def sample(**options):  # 4 steps: at 2, UniPC and DPM++ both take first-order steps and agree
        return pipe.text_to_video("a red circle", seed=3, super_resolve=False, num_inference_steps=4, **options)

    video = sample()
    assert np.array_equal(video, sample(sampler="unipc"))
    assert not np.array_equal(video, sample(sampler="dpm++"))

    # A config that names its sampler keeps it (every pipeline written by build / training names one).
    named = _copy_with_scheduler(tiny_pipeline_dir, tmp_path / "named", "DDIMScheduler", drop_default_sampler=False)
    assert LumierePipeline.from_pretrained(named, device="cpu").defaults.sampler == "dpm++"


# ------------------------------------------------------------------ 2. STUNet folders are not 2D U-Nets


def test_diffusers_refuses_a_saved_stunet_folder_and_old_layout_folders_still_load(tiny_pipe, tmp_path):
    from diffusers import UNet2DConditionModel

    from lumiere.models.stunet import LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, STUNet

    base = tiny_pipe.get_component("base")
    base.save_pretrained(tmp_path / "base")
    assert (tmp_path / "base" / WEIGHTS_NAME).is_file() and not (tmp_path / "base" / LEGACY_WEIGHTS_NAME).exists()
    with pytest.raises(OSError, match="diffusion_pytorch_model"):  # not a random full-size U-Net
        UNet2DConditionModel.from_pretrained(tmp_path / "base")

    # The layout every folder had before (the bundled model's): weights under the diffusers name.
    old = tmp_path / "old"
    tiny_pipe.save_pretrained(old)
    for name in ("base", "conditional", "ssr"):
        if (old / name).is_dir():
            (old / name / WEIGHTS_NAME).rename(old / name / LEGACY_WEIGHTS_NAME)
    assert STUNet.weights_file(old / "base") == old / "base" / LEGACY_WEIGHTS_NAME
    loaded = STUNet.from_pretrained(old / "base")
    assert all(torch.equal(t, base.state_dict()[k]) for k, t in loaded.state_dict().items())
    expected = tiny_pipe.text_to_video("a red circle", seed=5)
    reopened = LumierePipeline.from_pretrained(old, device="cpu")
    assert np.array_equal(reopened.text_to_video("a red circle", seed=5), expected)

    # Saving an old folder over itself moves its weights to the new name (no stale diffusers-named copy).
    reopened.save_pretrained(old)
    assert (old / "base" / WEIGHTS_NAME).is_file() and not (old / "base" / LEGACY_WEIGHTS_NAME).exists()
    assert np.array_equal(LumierePipeline.from_pretrained(old, device="cpu").text_to_video("a red circle", seed=5),
                          expected)


# ------------------------------------------------------------------ 3. export precision


def _tiny_t5(tiny_pipe):
    from transformers import T5Config, T5EncoderModel

    from lumiere.models.text_encoder import TextEncoder

    tokenizer = tiny_pipe.text_encoder.tokenizer
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                      dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id)
    return TextEncoder(tokenizer, T5EncoderModel(config).eval(), max_length=tiny_pipe.text_encoder.max_length)


def test_reduced_precision_saves_keep_transformers_fp32_modules(tiny_pipe, tmp_path):
    from safetensors.torch import load_file

    from lumiere.models.text_encoder import TextEncoder

    encoder = _tiny_t5(tiny_pipe)
    original = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    wo = [k for k in original if ".wo." in k]
    assert wo and encoder.model._keep_in_fp32_modules  # T5's feed-forward output projection
    for name, dtype, wo_dtype in (("fp16", torch.float16, torch.float32), ("bf16", torch.bfloat16, torch.bfloat16)):
        encoder.save_pretrained(tmp_path / name / "text_encoder", tmp_path / name / "tokenizer", dtype=dtype)
        saved = load_file(str(tmp_path / name / "text_encoder" / "model.safetensors"))
        for key, tensor in saved.items():
            if key in wo:  # fp16 keeps wo float32 (exactly the original), as transformers' fp16 load does
                assert tensor.dtype == wo_dtype, key
                if wo_dtype == torch.float32:
                    assert torch.equal(tensor, original[key])
            else:
                assert tensor.dtype == dtype, key
    assert encoder.model.dtype == torch.float32  # the model itself is not changed
    reloaded = TextEncoder.from_pretrained(tmp_path / "fp16" / "text_encoder", tmp_path / "fp16" / "tokenizer",
                                           dtype=torch.float16)
    assert {p.dtype for n, p in reloaded.model.named_parameters() if ".wo." in n} == {torch.float32}


def test_export_dtype_flag_casts_every_component(tiny_pipeline_dir, tmp_path):
    from safetensors.torch import load_file

    from lumiere.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_pipeline_dir, run / "pipeline")
    for flag, dtype in ((None, torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        out = tmp_path / f"export-{flag}"
        argv = ["export", "--output-dir", str(run), "--out", str(out)] + (["--dtype", flag] if flag else [])
        assert main(argv) == 0
        for weights in ("base/stunet.safetensors", "ssr/stunet.safetensors", "text_encoder/model.safetensors"):
            assert {t.dtype for t in load_file(str(out / weights)).values() if t.is_floating_point()} == {dtype}
    video = LumierePipeline.from_pretrained(tmp_path / "export-bf16", device="cpu").text_to_video("a red circle", seed=1)
    assert video.shape == (8, 32, 32, 3)
    with pytest.raises(SystemExit):
        main(["export", "--output-dir", str(run), "--out", str(tmp_path / "x"), "--dtype", "int8"])


# ------------------------------------------------------------------ 4. progress bars


def test_set_progress_bar_config_passes_tqdm_options_and_disable_turns_bars_off(tiny_pipe):
    import io

    stream = io.StringIO()
    tiny_pipe.set_progress_bar_config(file=stream, desc="tiny steps", leave=True)
    tiny_pipe.text_to_video("a red circle", seed=0, super_resolve=False)
    assert "tiny steps" in stream.getvalue() and "2/2" in stream.getvalue()

    quiet = io.StringIO()
    tiny_pipe.set_progress_bar_config(file=quiet, disable=True)
    tiny_pipe.text_to_video("a red circle", seed=0, super_resolve=False)
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------ 5. diffusers' pipeline contract


def _diffusers_load(folder, **options):
    """diffusers' own loader (``DiffusionPipeline.from_pretrained``'s code) run for LumierePipeline: it reads the
    index's [library, class] entries and calls each class's from_pretrained on its folder."""
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained.__func__(LumierePipeline, str(folder), **options)


def test_a_saved_pipeline_has_diffusers_entries_and_diffusers_loader_reads_it_bit_identically(tiny_pipe, tmp_path):
    from diffusers import DiffusionPipeline

    from lumiere.models.stunet import STUNet
    from lumiere.models.text_encoder import TextEncoder

    assert isinstance(tiny_pipe, DiffusionPipeline)
    tiny_pipe.add_style("ink", {k: v + 0.01 for k, v in tiny_pipe.base.t2i.state_dict().items()})
    tiny_pipe.training = {"config_sha256": "ab" * 32, "commit": None, "lumiere_version": "0.1.0"}
    tiny_pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == "LumierePipeline" and index["_diffusers_version"]
    assert index["base"] == index["ssr"] == ["lumiere.models.stunet", "STUNet"]
    assert index["text_encoder"] == ["lumiere.models.text_encoder", "TextEncoder"]
    assert index["tokenizer"][0] == "transformers" and index["scheduler"][0] == "diffusers"
    assert index["components"]["base"] == "base" and index["styles"]["ink"] == "styles/ink"  # Lumiere's keys kept
    assert index["config"] == tiny_pipe.config and index["training"] == tiny_pipe.training

    expected = tiny_pipe.text_to_video("a red circle", seed=5)
    styled = tiny_pipe.text_to_video("a red circle", seed=5, style="ink", super_resolve=False)
    loaded = _diffusers_load(tmp_path / "saved", device="cpu")
    assert type(loaded) is LumierePipeline and loaded.device.type == "cpu" and loaded.dtype == torch.float32
    assert isinstance(loaded.base, STUNet) and isinstance(loaded.text_encoder, TextEncoder)
    assert loaded.config == tiny_pipe.config and loaded.training == tiny_pipe.training
    assert loaded.scheduler_config == tiny_pipe.scheduler_config
    assert np.array_equal(loaded.text_to_video("a red circle", seed=5), expected)
    assert np.array_equal(loaded.text_to_video("a red circle", seed=5, style="ink", super_resolve=False), styled)
    loaded.unload_component("base")  # the loader's folder is each component's: unloaded ones reload from it
    assert not loaded.is_loaded("base")
    assert np.array_equal(loaded.text_to_video("a red circle", seed=5), expected)

    # LumierePipeline.from_pretrained reads the new index lazily; with diffusers' loader options, through diffusers.
    lazy = LumierePipeline.from_pretrained(tmp_path / "saved", device="cpu")
    assert not lazy.is_loaded("base") and np.array_equal(lazy.text_to_video("a red circle", seed=5), expected)
    eager = LumierePipeline.from_pretrained(tmp_path / "saved", device="cpu", low_cpu_mem_usage=True)
    assert eager.is_loaded("base") and np.array_equal(eager.text_to_video("a red circle", seed=5), expected)

    from diffusers import UNet2DConditionModel

    with pytest.raises(OSError, match="diffusion_pytorch_model"):  # still not a random full-size 2D U-Net
        UNet2DConditionModel.from_pretrained(tmp_path / "saved" / "base")


def test_components_lists_the_registered_modules_and_rebuilds_the_pipeline(tiny_pipe):
    from diffusers import DPMSolverMultistepScheduler

    components = tiny_pipe.components
    assert list(components) == ["text_encoder", "tokenizer", "scheduler", "base", "conditional", "ssr", "vae"]
    assert components["base"] is tiny_pipe.base and components["text_encoder"] is tiny_pipe.text_encoder
    assert components["tokenizer"] is tiny_pipe.text_encoder.tokenizer and components["vae"] is None
    assert isinstance(components["scheduler"], DPMSolverMultistepScheduler)
    index = tiny_pipe.model_index
    assert index["base"] == ("lumiere.models.stunet", "STUNet") and "vae" not in index
    rebuilt = LumierePipeline(**components, **tiny_pipe.parameters)
    assert rebuilt.base is tiny_pipe.base
    assert np.array_equal(rebuilt.text_to_video("a red circle", seed=2, super_resolve=False),
                          tiny_pipe.text_to_video("a red circle", seed=2, super_resolve=False))
    with pytest.raises(InputError):
        tiny_pipe.register_modules(base=tiny_pipe.base)


def test_a_lazy_pipeline_registers_its_components_without_loading_them(tiny_pipeline_dir):
    pipe = LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")
    index = pipe.model_index
    assert index["text_encoder"] == ("lumiere.models.text_encoder", "TextEncoder") and index["tokenizer"][0] == "transformers"
    assert not any(pipe.is_loaded(name) for name in pipe.component_names)


def test_an_old_format_folder_loads_and_diffusers_loader_options_say_to_resave_it(tiny_pipe, tmp_path):
    old = tmp_path / "old"
    tiny_pipe.save_pretrained(old)
    _edit_json(old / "model_index.json", lambda index: [index.pop(key) for key in list(index)
                                                        if key not in ("_class_name", "components", "styles", "config")])
    expected = tiny_pipe.text_to_video("a red circle", seed=4, super_resolve=False)
    assert np.array_equal(LumierePipeline.from_pretrained(old, device="cpu").text_to_video(
        "a red circle", seed=4, super_resolve=False), expected)
    with pytest.raises(InputError, match="save it again"):
        LumierePipeline.from_pretrained(old, device="cpu", low_cpu_mem_usage=True)


def test_enable_model_cpu_offload_needs_an_accelerator(tiny_pipe):
    assert tiny_pipe.model_cpu_offload_seq.split("->")[:2] == ["text_encoder", "base"]
    with pytest.raises(InputError, match="accelerator"):
        tiny_pipe.enable_model_cpu_offload(device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="accelerator"):
            tiny_pipe.enable_model_cpu_offload()


def test_diffusers_loader_reads_a_latent_pipeline_with_its_vae(tmp_path):
    from diffusers import AutoencoderKL

    from tests.test_models_vae import make_latent_pipeline

    pipe = make_latent_pipeline()
    pipe.save_pretrained(tmp_path / "latent")
    index = json.loads((tmp_path / "latent" / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    loaded = _diffusers_load(tmp_path / "latent", device="cpu")
    assert isinstance(loaded.vae, AutoencoderKL) and loaded.is_latent
    assert np.array_equal(loaded.text_to_video("a red circle", seed=1, num_inference_steps=2),
                          pipe.text_to_video("a red circle", seed=1, num_inference_steps=2))
