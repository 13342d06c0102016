"""lumiere.train.text_cache: the text-embedding cache. It gives the encoder's own states, keyed by the encoder
(weights and prompt length), is bypassed while the encoder trains, and is switched on in the config's train
section only."""

import pytest
import torch

from lumiere.errors import InputError
from tests.tiny import micro_config


def _encoder(seed: int = 0, max_length: int = 12):
    from lumiere.models.text_encoder import TextEncoder

    torch.manual_seed(seed)
    return TextEncoder.from_vocabulary(["a", "red", "blue", "circle", "square", "moving", "left"], hidden_size=16,
                                       num_layers=1, num_heads=2, max_length=max_length).eval().requires_grad_(False)


def test_text_embedding_cache_gives_the_encoders_states(tmp_path):
    from lumiere.train.text_cache import CachedTextEncoder

    encoder = _encoder()
    cached = CachedTextEncoder(encoder, tmp_path)
    prompts = ["a red circle", "", "a blue square moving left", "a red circle"]  # "": caption dropout
    expected = encoder(prompts)
    first = cached(prompts)  # encodes the 3 distinct captions, writes them
    assert torch.allclose(first, expected, atol=1e-6) and cached.misses == 3
    assert len(list(cached.directory.rglob("*.safetensors"))) == 3
    again = CachedTextEncoder(encoder, tmp_path)(prompts)  # a new run: read back, not re-encoded
    assert torch.equal(again, first)
    reader = CachedTextEncoder(encoder, tmp_path)
    reader(prompts)
    assert (reader.hits, reader.misses) == (4, 0)
    assert cached.state_dict().keys() == encoder.state_dict().keys()  # checkpoints and saving unchanged
    assert cached.model is encoder.model  # the same weights, not a copy


def test_text_embedding_cache_is_keyed_by_the_encoder(tmp_path):
    from lumiere.train.text_cache import CachedTextEncoder

    CachedTextEncoder(_encoder(0), tmp_path)(["a red circle"])
    for other in (_encoder(1), _encoder(0, max_length=10)):  # other weights; other prompt length
        cached = CachedTextEncoder(other, tmp_path)
        assert torch.allclose(cached(["a red circle"]), other(["a red circle"]), atol=1e-6)
        assert (cached.hits, cached.misses) == (0, 1)
    assert len({p.name for p in tmp_path.iterdir()}) == 3


def test_text_embedding_cache_is_not_used_while_the_encoder_trains(tmp_path):
    from lumiere.train.stages import T2IModule
    from lumiere.train.text_cache import CachedTextEncoder

    cached = CachedTextEncoder(_encoder(), tmp_path)
    T2IModule(torch.nn.Conv2d(1, 1, 1), cached, None, train_text_encoder=True)  # what the t2i stage does
    states = cached(["a red circle"])
    assert states.requires_grad and not list(tmp_path.rglob("*.safetensors")) and cached.misses == 0


def test_text_embedding_cache_setting(tmp_path):
    from lumiere.train.stages import Workspace
    from lumiere.train.text_cache import CachedTextEncoder

    config = micro_config(tmp_path)
    assert not isinstance(Workspace(config).text_encoder(), CachedTextEncoder)  # off by default
    config["train"]["text_embedding_cache"] = str(tmp_path / "cache")
    assert isinstance(Workspace(config).text_encoder(), CachedTextEncoder)
    config["stages"]["temporal"]["text_embedding_cache"] = str(tmp_path / "cache")
    with pytest.raises(InputError, match=r"stages\.temporal\.text_embedding_cache: set it in the config's train"):
        Workspace(config)
