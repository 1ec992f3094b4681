import pytest
from transformers import PreTrainedTokenizerFast

from models.tokenizer import (
    PAD,
    SEP,
    control_ids,
    control_values,
    decode_ids,
    encode_text,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from tests.conftest import names

SAMPLES = [
    "Hello, world! It's 3 o'clock; \"quoted\" (parenthesised) - dashes... and more?",
    "Line one\nline two\n\n  indented line\ttab\r\nwindows line",
    "Café naïve façade — “curly” ‘quotes’ 😀 日本語 Ünïcödé",
    " leading and trailing spaces ",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_decode_encode_round_trips_exactly(tiny_tokenizer, text):
    assert decode_ids(tiny_tokenizer, encode_text(tiny_tokenizer, text)) == text


def test_special_and_control_tokens(tiny_tokenizer):
    vocab = tiny_tokenizer.get_vocab()
    for token in ("<pad>", "<bos>", "<eos>", "<sep>", "<unk>", "<form:poem>", "<form:fable>", "<genre:fantasy>",
                  "<genre:none>"):
        assert token in vocab
    assert control_values(tiny_tokenizer, "form") == ["fable", "poem", "story"]
    poem, none = control_ids(tiny_tokenizer, "poem", "")
    assert tiny_tokenizer.convert_ids_to_tokens([poem, none]) == ["<form:poem>", "<genre:none>"]
    # control tokens are atomic: never split by BPE
    assert encode_text(tiny_tokenizer, "<form:poem>") == [poem]


def test_unknown_control_values_list_the_valid_ones(tiny_tokenizer):
    with pytest.raises(ValueError, match=names("'limerick'", "fable", "poem", "story")):
        control_ids(tiny_tokenizer, "limerick", "")
    with pytest.raises(ValueError, match=names("'romance'", "adventure", "fantasy")):
        control_ids(tiny_tokenizer, "story", "romance")


def test_saved_tokenizer_loads_with_transformers(tiny_tokenizer, tmp_path):
    save_tokenizer(tiny_tokenizer, tmp_path / "tok")
    plain = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "tok"))
    assert plain.pad_token == PAD and plain.sep_token == SEP
    assert plain("Once upon a time")["input_ids"] == tiny_tokenizer("Once upon a time")["input_ids"]
    assert load_tokenizer(tmp_path / "tok").get_vocab() == tiny_tokenizer.get_vocab()


def test_bad_tokenizers_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=names("vocab_size")):
        train_tokenizer(["some text"], ["story"], [""], vocab_size=100)
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.BPE(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]").save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match=names("['<pad>', '<bos>', '<eos>', '<sep>']")):
        load_tokenizer(tmp_path / "bare")
