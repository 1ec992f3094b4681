"""The shared tokenizer: byte-level BPE trained on the train split, with special and control tokens.

The families trained from scratch (seq2seq, GAN, the Transformer's from-scratch mode) share it, so
their token likelihoods compare. It is saved as a ``transformers.PreTrainedTokenizerFast`` directory,
so ``PreTrainedTokenizerFast.from_pretrained(dir)`` (and :func:`load_tokenizer`) restore it.

Special tokens: ``<pad>``, ``<bos>``, ``<eos>``, ``<sep>`` (between prompt and piece), ``<unk>``, plus
one control token per form and genre, e.g. ``<form:poem>`` and ``<genre:science fiction>``, and
``<genre:none>`` for pieces without a genre. Byte-level BPE round-trips any text exactly
(``decode(encode(x)) == x``), line breaks and Unicode included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, SEP, UNK = "<pad>", "<bos>", "<eos>", "<sep>", "<unk>"
BASE_SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, SEP, UNK)
NO_GENRE = "none"


def form_token(form: str) -> str:
    """The control token of a form (``<form:poem>``)."""
    return f"<form:{form.strip().lower()}>"


def genre_token(genre: str) -> str:
    """The control token of a genre (``<genre:fantasy>``; empty → ``<genre:none>``)."""
    return f"<genre:{(genre.strip().lower() or NO_GENRE)}>"


def train_tokenizer(texts: Iterable[str], forms: Sequence[str], genres: Sequence[str], vocab_size: int = 4000,
                    min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer.

    Args:
        texts: Training text (prompts and pieces of the train split only).
        forms: The forms to give control tokens.
        genres: The genres to give control tokens (empty strings map to ``none``).
        vocab_size: Target vocabulary size, special tokens included.
        min_frequency: Minimum pair frequency for a merge.

    Returns:
        The tokenizer, wrapped for ``transformers``.

    Raises:
        ValueError: If the vocabulary is too small to hold the bytes and the special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    controls = sorted({form_token(f) for f in forms}) + sorted({genre_token(g) for g in list(genres) + [""]})
    specials = list(BASE_SPECIALS) + controls
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be at least {256 + len(specials)} (256 bytes + {len(specials)} special "
                         f"tokens), got {vocab_size}")
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK, sep_token=SEP, additional_special_tokens=controls,
                                   clean_up_tokenization_spaces=False)


def train_on_split(split: Any, vocab_size: int = 4000, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Trains the shared tokenizer on the ``train`` rows of a split corpus (prompts and pieces).

    Control tokens cover the forms and genres of the train split; validation and test never reach it.
    """
    train = split[split["split"] == "train"]
    return train_tokenizer(list(train["prompt"]) + list(train["text"]), sorted(train["form"].unique()),
                           sorted(train["genre"].unique()), vocab_size=vocab_size, min_frequency=min_frequency)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: Path) -> Path:
    """Saves the tokenizer so that ``PreTrainedTokenizerFast.from_pretrained(directory)`` loads it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def load_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """Loads a saved tokenizer and checks that it has the special tokens the models need.

    Raises:
        FileNotFoundError: If the directory has no tokenizer.
        ValueError: If a needed special token is missing.
    """
    if not (Path(directory) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory}")
    tok = PreTrainedTokenizerFast.from_pretrained(str(directory))
    check_special_tokens(tok, str(directory))
    return tok


def check_special_tokens(tokenizer: PreTrainedTokenizerFast, where: str) -> None:
    """Raises ValueError naming any of ``<pad> <bos> <eos> <sep>`` that the tokenizer lacks."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (PAD, BOS, EOS, SEP) if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer at {where} lacks special token(s) {missing}")


def control_values(tokenizer: PreTrainedTokenizerFast, kind: str) -> list[str]:
    """The form (``kind='form'``) or genre values that have control tokens."""
    prefix = f"<{kind}:"
    return sorted(t[len(prefix):-1] for t in tokenizer.get_vocab() if t.startswith(prefix) and t.endswith(">"))


def control_ids(tokenizer: PreTrainedTokenizerFast, form: str, genre: str) -> list[int]:
    """Token ids of the form and genre control tokens.

    Raises:
        ValueError: If the form or genre has no control token; the message lists the valid values.
    """
    ids = []
    for kind, value, token in (("form", form, form_token(form)), ("genre", genre, genre_token(genre))):
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"unknown {kind} '{value}'; valid {kind}s: {', '.join(control_values(tokenizer, kind))}")
        ids.append(tid)
    return ids


def encode_text(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Token ids of plain text (no special tokens added)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def decode_ids(tokenizer: PreTrainedTokenizerFast, ids: Sequence[int]) -> str:
    """Text of token ids, special tokens dropped."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
