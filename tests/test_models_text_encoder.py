"""lumiere.models.text_encoder: IF-style T5 text encoders survive the save -> reload round trips of training stages
and the pipeline.

DeepFloyd IF's ``text_encoder/config.json`` says ``"is_encoder_decoder": true``; the tiny stand-in here has the
same config flag, a SentencePiece tokenizer (spiece.model, no tokenizer.json) and a 512-token tokenizer limit.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")

from transformers import T5Config, T5EncoderModel  # noqa: E402

from lumiere.models.text_encoder import TextEncoder  # noqa: E402
from lumiere.train.stages import Workspace  # noqa: E402
from tests.tiny import TINY_CONFIG  # noqa: E402

WORDS = "a red fox jumps over the lazy dog cat runs in park blue sky green tree".split()
PROMPTS = ["a red fox jumps over the lazy dog", "", "blue sky green tree"]


def _mark_encoder_decoder(directory) -> None:
    """Write the config as IF's published one reads (transformers 5 saves the encoder-only flag as false)."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["is_encoder_decoder"] = True
    path.write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module")
def if_like(tmp_path_factory):
    """A tiny T5 encoder + SentencePiece tokenizer laid out as IF's text_encoder/ and tokenizer/ subfolders."""
    import sentencepiece

    root = tmp_path_factory.mktemp("if_like")
    tokenizer_dir, encoder_dir = root / "tokenizer", root / "text_encoder"
    tokenizer_dir.mkdir()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(WORDS)] * 20), model_prefix=str(tokenizer_dir / "spiece"),
        vocab_size=19, model_type="word", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    (tokenizer_dir / "spiece.vocab").unlink()
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512}))
    torch.manual_seed(0)
    config = T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, dropout_rate=0.0,
                      is_encoder_decoder=True)
    T5EncoderModel(config).save_pretrained(str(encoder_dir), safe_serialization=True)
    _mark_encoder_decoder(encoder_dir)
    return root


def _states(encoder: TextEncoder) -> torch.Tensor:
    return encoder.eval().encode(PROMPTS)


def test_loads_encoder_only_with_ifs_prompt_length(if_like):
    encoder = TextEncoder.from_pretrained(if_like, subfolder="text_encoder", tokenizer_subfolder="tokenizer")
    assert isinstance(encoder.model, T5EncoderModel)  # the decoder is never built
    assert not any("decoder" in name for name, _ in encoder.model.named_parameters())
    assert encoder.max_length == 77  # not the T5 tokenizer's 512
    assert encoder.tokenize(PROMPTS)["input_ids"].shape == (len(PROMPTS), 77)
    assert _states(encoder).shape == (len(PROMPTS), 77, 16)


def test_save_reload_keeps_the_text_states(if_like, tmp_path):
    original = TextEncoder.from_pretrained(if_like, subfolder="text_encoder", tokenizer_subfolder="tokenizer")
    expected = _states(original)
    # What the temporal stage writes and the next stage / the pipeline reads.
    workspace = Workspace({"model": {**TINY_CONFIG, "text_encoder": {"pretrained": str(if_like)}}}, tmp_path)
    original.save_pretrained(workspace.pipeline / "text_encoder", workspace.pipeline / "tokenizer")
    for reloaded in (workspace.text_encoder(),
                     TextEncoder.from_pretrained(workspace.pipeline / "text_encoder", workspace.pipeline / "tokenizer")):
        assert isinstance(reloaded.model, T5EncoderModel)
        assert reloaded.max_length == 77
        assert (_states(reloaded) - expected).abs().max().item() == 0.0
    # ... and again (a later stage re-saves what it loaded).
    again = tmp_path / "again"
    workspace.text_encoder().save_pretrained(again / "text_encoder", again / "tokenizer")
    assert (_states(TextEncoder.from_pretrained(again / "text_encoder", again / "tokenizer")) - expected).abs().max() == 0


def test_configured_prompt_length_persists(if_like, tmp_path):
    encoder = TextEncoder.from_pretrained(if_like, subfolder="text_encoder", tokenizer_subfolder="tokenizer",
                                          max_length=32)
    encoder.save_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer", dtype=torch.float16)
    reloaded = TextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    assert reloaded.max_length == 32
    assert reloaded.tokenize(["a red fox"])["input_ids"].shape == (1, 32)
    # The run config's max_length applies when a stage first loads the pretrained encoder.
    workspace = Workspace({"model": {**TINY_CONFIG, "text_encoder": {
        "pretrained": str(if_like), "subfolder": "text_encoder", "tokenizer_subfolder": "tokenizer",
        "max_length": 20}}}, tmp_path / "run")
    assert workspace.text_encoder().max_length == 20


def test_earlier_stack_format_saves_reload_exactly(if_like, tmp_path):
    """Workspaces written before the fix hold the bare encoder stack (weights "block.0..."): still exact."""
    original = TextEncoder.from_pretrained(if_like, subfolder="text_encoder", tokenizer_subfolder="tokenizer")
    original.model.get_encoder().save_pretrained(str(tmp_path / "text_encoder"), safe_serialization=True)
    _mark_encoder_decoder(tmp_path / "text_encoder")
    original.tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    reloaded = TextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer")
    assert (_states(reloaded) - _states(original)).abs().max().item() == 0.0


def test_missing_sentencepiece_is_named(if_like, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sentencepiece" else real(name, *a))
    with pytest.raises(ImportError, match="sentencepiece") as caught:
        TextEncoder.from_pretrained(if_like, subfolder="text_encoder", tokenizer_subfolder="tokenizer")
    assert "tiktoken" not in str(caught.value)
