"""lumiere.components: the closed-vocabulary check behind the unknown-word warning (``known_words`` /
``unknown_words``, read from the tokenizer alone, also as ``LumierePipeline.known_words`` / ``unknown_words``), and
denormal flushing that leaves no global state behind (``flush_denormals``)."""
import pytest
import torch

from lumiere.components import _flushing_denormals, flush_denormals, known_words, unknown_words
from tests.conftest import bundled_model_available
from tests.tiny import TINY_WORDS


# ----------------------------------------------------------------------------- denormal flushing
def test_flush_denormals_is_scoped():
    for before in (False, True):
        torch.set_flush_denormal(before)
        with flush_denormals():
            assert _flushing_denormals()
        assert _flushing_denormals() == before
    torch.set_flush_denormal(False)


# ----------------------------------------------------------------------------- the vocabulary
def test_tiny_models_closed_vocabulary_is_read_from_the_tokenizer_only(tiny_pipe):
    assert tiny_pipe.known_words() == sorted(TINY_WORDS)
    assert tiny_pipe.unknown_words("A Purple circle, zooming LEFT on the grass!") == ["Purple", "zooming"]
    assert tiny_pipe.unknown_words("a red circle moving left on the grass") == []
    assert not tiny_pipe.is_loaded("text_encoder")  # the encoder's weights were never read


def test_tokenizers_that_spell_any_word_are_never_warned_about(tmp_path):
    from transformers import BertTokenizer

    from lumiere.models.text_encoder import TextEncoder

    clip_bpe = TextEncoder.from_vocabulary(["red", "circle"], hidden_size=16, num_layers=1,
                                           architecture="clip").tokenizer
    assert known_words(clip_bpe) is None and unknown_words(clip_bpe, "a purple zooming blob") == []
    letters = list("abcdefghijklmnopqrstuvwxyz")  # a sub-word WordPiece vocabulary, as real BERTs have
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red"] + letters
                               + [f"##{c}" for c in letters]) + "\n")
    wordpiece = BertTokenizer(str(vocab))
    assert known_words(wordpiece) is None and unknown_words(wordpiece, "a purple zooming blob") == []
    assert known_words(None) is None and unknown_words(None, "anything") == []


@pytest.mark.bundled
def test_bundled_models_vocabulary():
    if not bundled_model_available():
        pytest.skip("the bundled model is not in assets/")
    from lumiere import LumierePipeline

    pipe = LumierePipeline.from_pretrained(None, device="cpu")
    words = pipe.known_words()
    assert 100 <= len(words) <= 140 and {"circle", "moving", "left", "night"} <= set(words)
    assert not {"[UNK]", "[PAD]"} & set(words)
    assert pipe.unknown_words("a red circle dancing happily on the grass") == ["dancing", "happily"]
