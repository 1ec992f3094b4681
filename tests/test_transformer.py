"""The Transformer family: layout and masking, training, fine-tuning from a local checkpoint, generation."""

from __future__ import annotations

import json

import pytest
import torch

from models.contract import GenerationSettings
from models.families import load_model
from models.transformer import (
    IGNORE,
    TransformerConfig,
    build_transformer,
    collate_examples,
    sequence_nll,
)
from tests.conftest import names
from training.config import TransformerTrainConfig
from training.transformer import train_transformer

TINY = {"n_layer": 2, "n_embd": 32, "n_head": 2, "context": 160, "dropout": 0.0, "max_prompt_tokens": 40}
PROMPT = "A dragon finds a key under the old bridge."


def scratch(tokenizer, **overrides):
    """A fresh, seeded tiny from-scratch writer."""
    torch.manual_seed(0)
    return build_transformer(tokenizer, TransformerConfig(**{**TINY, **overrides}))


@pytest.fixture(scope="module")
def trained(tiny_corpus, tiny_tokenizer):
    """A tiny from-scratch model trained for one epoch with the Trainer."""
    writer = scratch(tiny_tokenizer)
    parts = {name: tiny_corpus[tiny_corpus["split"] == name] for name in ("train", "validation")}
    history = train_transformer(writer, parts["train"], parts["validation"],
                                TransformerTrainConfig(epochs=2, batch_size=16, lr=3e-3, progress_bar=False))
    return writer, history


def test_labels_mask_control_prompt_and_separator(tiny_tokenizer):
    writer = scratch(tiny_tokenizer)
    ids, labels = writer.encode_example(PROMPT, "The end came quickly.", "story", "fantasy")
    prefix = writer.encode_prefix(PROMPT, "story", "fantasy")
    assert ids[: len(prefix)] == prefix and prefix[-1] == writer.sep_id
    assert labels[: len(prefix)] == [IGNORE] * len(prefix)
    assert labels[len(prefix):] == ids[len(prefix):] and ids[-1] == writer.eos_id


def test_changing_a_prompt_token_does_not_change_which_positions_count(tiny_tokenizer):
    writer = scratch(tiny_tokenizer)
    ids_a, labels_a = writer.encode_example(PROMPT, "The end came quickly.", "story", "")
    ids_b = list(ids_a)
    ids_b[3] = (ids_b[3] + 7) % len(tiny_tokenizer)  # a different prompt token, same length
    counted_a = [lab != IGNORE for lab in labels_a]
    batch = collate_examples([(ids_a, labels_a), (ids_b, labels_a)], writer.pad_id)
    assert (batch["labels"][0] != IGNORE).tolist() == counted_a == (batch["labels"][1] != IGNORE).tolist()
    # the loss over the counted positions is what the model's own loss computes
    with torch.no_grad():
        out = writer.model(**{k: v[:1] for k, v in batch.items()})
        summed = sequence_nll(out.logits, batch["labels"][:1])
    assert float(summed) / (sum(counted_a)) == pytest.approx(float(out.loss), rel=1e-5)


def test_overfits_one_small_batch(tiny_corpus, tiny_tokenizer):
    writer = scratch(tiny_tokenizer)
    rows = tiny_corpus.head(4)
    pairs = [writer.encode_example(p, t, f, g)
             for p, t, f, g in zip(rows["prompt"], rows["text"], rows["form"], rows["genre"], strict=True)]
    batch = collate_examples(pairs, writer.pad_id)
    opt = torch.optim.AdamW(writer.model.parameters(), lr=1e-2)
    writer.model.train()
    first = None
    for _ in range(80):
        loss = writer.model(**batch).loss
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.25 * first


def test_training_history_and_lower_validation_loss(trained):
    _, history = trained
    assert list(history["epoch"]) == [1, 2]
    assert {"train_loss", "val_loss", "val_ppl_word", "val_ppl_token", "tokens_per_s"} <= set(history.columns)
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]
    assert (history["val_ppl_word"] > history["val_ppl_token"]).all()  # several tokens per word here


def test_same_seed_same_text_and_save_load_identical(trained, tmp_path):
    writer, _ = trained
    settings = GenerationSettings(max_new_tokens=30, seed=5)
    first = writer.generate([PROMPT], settings)
    assert writer.generate([PROMPT], settings) == first
    assert writer.generate([PROMPT], settings.replace(seed=6)) != first
    loaded = load_model(writer.save(tmp_path / "m"))
    assert loaded.family == "transformer"
    assert loaded.generate([PROMPT], settings) == first
    assert loaded.score([PROMPT], ["The dragon slept."]) == pytest.approx(writer.score([PROMPT], ["The dragon slept."]))


def test_batched_greedy_equals_one_by_one(trained):
    writer, _ = trained
    prompts = [PROMPT, "Write a poem about the sea at night, with a lighthouse keeper who counts the waves."]
    greedy = GenerationSettings(max_new_tokens=20, top_k=1, seed=0)
    assert writer.generate(prompts, greedy) == [writer.generate([p], greedy)[0] for p in prompts]


@pytest.mark.parametrize("trim", [False, True])
def test_stream_joins_to_the_generated_text(trained, trim):
    writer, _ = trained
    settings = GenerationSettings(max_new_tokens=40, seed=2, trim_to_sentence=trim)
    pieces = list(writer.stream(PROMPT, settings))
    assert "".join(pieces) == writer.generate([PROMPT], settings)[0]
    if not trim:
        assert len(pieces) > 1


def test_beam_search_and_max_new_tokens(trained):
    writer, _ = trained
    beam = writer.generate([PROMPT], GenerationSettings(max_new_tokens=10, num_beams=3))[0]
    assert beam.strip() and writer.count_tokens(beam) <= 10
    assert writer.generate([PROMPT], GenerationSettings(max_new_tokens=10, num_beams=3, seed=9, temperature=1.7))[0] \
        == beam  # beam search ignores the seed and the temperature
    ids = writer._generate_ids([PROMPT], GenerationSettings(max_new_tokens=7, seed=1))
    assert len(ids[0]) <= 7


def test_score_counts_the_piece_given_the_prompt(trained):
    writer, _ = trained
    (nll, words), = writer.score([PROMPT], ["The dragon slept by the river."])
    assert nll > 0 and words == 6


def test_bad_generation_input(trained):
    writer, _ = trained
    with pytest.raises(ValueError, match=names("prompt")):
        writer.generate(["  "])
    with pytest.raises(ValueError, match="unknown form 'sonnet'"):
        list(writer.stream(PROMPT, GenerationSettings(form="sonnet")))


# --- fine-tuning from a local checkpoint (no network) ------------------------------------------------
def save_tiny_gpt2(directory, texts, eos=True):
    """A tiny GPT-2 and a byte-level BPE tokenizer in the shape of GPT-2's (no pad, no sep), saved locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] if eos else []
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    kwargs = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"} if eos else {}
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **kwargs)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2))
    model.save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return directory


def test_fine_tune_from_a_local_checkpoint_end_to_end(tiny_corpus, tmp_path):
    base = save_tiny_gpt2(tmp_path / "base", list(tiny_corpus["text"]))
    cfg = TransformerConfig(base_model=str(base), context=128, max_prompt_tokens=40)
    train = tiny_corpus[tiny_corpus["split"] == "train"]
    writer = build_transformer(None, cfg, forms=sorted(train["form"].unique()), genres=sorted(train["genre"].unique()))
    vocab = writer.tokenizer.get_vocab()
    assert {"<sep>", "<pad>", "<form:poem>", "<genre:none>"} <= set(vocab)
    assert writer.model.get_input_embeddings().weight.shape[0] == len(writer.tokenizer)
    history = train_transformer(writer, train.head(48), tiny_corpus[tiny_corpus["split"] == "validation"].head(16),
                                TransformerTrainConfig(epochs=1, batch_size=8, lr=1e-3, progress_bar=False))
    assert len(history) == 1
    settings = GenerationSettings(max_new_tokens=20, seed=1, form="poem", genre="fantasy")
    text = writer.generate([PROMPT], settings)[0]
    assert isinstance(text, str)
    loaded = load_model(writer.save(tmp_path / "tuned"))
    assert loaded.generate([PROMPT], settings) == [text]
    assert loaded.metadata["base_model"] == str(base)


def test_bad_base_models_are_named(tmp_path, tiny_corpus):
    from transformers import BertConfig, T5Config

    with pytest.raises(ValueError, match="does not exist"):
        build_transformer(None, TransformerConfig(base_model=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no config\.json"):
        build_transformer(None, TransformerConfig(base_model=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="hub is unreachable"):  # HF_HUB_OFFLINE=1 in the tests
        build_transformer(None, TransformerConfig(base_model="distilgpt2"))
    T5Config(vocab_size=50, d_model=16, num_layers=1, num_heads=2).save_pretrained(str(tmp_path / "t5"))
    with pytest.raises(ValueError, match=names("causal", "'t5'")):
        build_transformer(None, TransformerConfig(base_model=str(tmp_path / "t5")))
    BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(str(tmp_path / "no-weights"))
    with pytest.raises(ValueError, match=names("causal")):
        build_transformer(None, TransformerConfig(base_model=str(tmp_path / "no-weights")))
    base = save_tiny_gpt2(tmp_path / "base", list(tiny_corpus["text"][:50]))
    with pytest.raises(ValueError, match=names("context", "512", "base_model", "128")):
        build_transformer(None, TransformerConfig(base_model=str(base), context=512))
    no_eos = save_tiny_gpt2(tmp_path / "no-eos", list(tiny_corpus["text"][:50]), eos=False)
    with pytest.raises(ValueError, match="no end token"):
        build_transformer(None, TransformerConfig(base_model=str(no_eos), context=128))


def test_config_and_train_config_errors_name_the_field():
    with pytest.raises(ValueError, match="n_head"):
        TransformerConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="context"):
        TransformerConfig(context=16)
    with pytest.raises(ValueError, match="warmup"):
        TransformerTrainConfig(warmup=1.5)
    with pytest.raises(ValueError, match="epochs"):
        TransformerTrainConfig(epochs=0)
    with pytest.raises(ValueError, match=names("TransformerTrainConfig.max_train_pieces", "≥ 0")):
        TransformerTrainConfig(max_train_pieces=-1)
    with pytest.raises(ValueError, match=names("TransformerTrainConfig.lr", "> 0")):
        TransformerTrainConfig(lr=0)


def test_shared_tokenizer_without_the_needed_special_tokens_is_rejected():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel()
    core.train_from_iterator(["a b c"], trainers.BpeTrainer(vocab_size=260, special_tokens=["<pad>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                            show_progress=False))
    bare = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>")
    with pytest.raises(ValueError, match=names("['<bos>', '<eos>', '<sep>']")):
        build_transformer(bare, TransformerConfig(**TINY))


# --- a pretrained base with a chat template, fine-tuned with LoRA ---------------------------------------
@pytest.fixture(scope="module")
def tiny_chat_base(tmp_path_factory):
    """A tiny random Llama with a chat template, as the smoke profile uses it."""
    from weights.tiny import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("base") / "tiny-llama", vocab=500)


@pytest.fixture(scope="module")
def lora_writer(tiny_chat_base, tiny_corpus):
    train = tiny_corpus[tiny_corpus["split"] == "train"]
    torch.manual_seed(0)
    writer = build_transformer(None, TransformerConfig(base_model=str(tiny_chat_base), context=256,
                                                       max_prompt_tokens=40, lora_r=4, lora_alpha=8),
                               forms=sorted(train["form"].unique()), genres=sorted(train["genre"].unique()))
    history = train_transformer(writer, train.head(32), tiny_corpus[tiny_corpus["split"] == "validation"],
                                TransformerTrainConfig(epochs=1, batch_size=8, lr=5e-3, max_val_pieces=6,
                                                       progress_bar=False))
    return writer, history


def test_chat_layout_asks_in_words_and_adds_no_tokens(lora_writer, tiny_chat_base):
    from transformers import AutoTokenizer

    writer, history = lora_writer
    assert writer.chat and len(writer.tokenizer) == len(AutoTokenizer.from_pretrained(str(tiny_chat_base)))
    prefix = writer.tokenizer.decode(writer.encode_prefix(PROMPT, "poem", "fantasy", target_words=60))
    assert prefix.endswith("<|im_start|>assistant\n")
    assert "Write a fantasy poem for this prompt: " + PROMPT in prefix and "Use about 60 words." in prefix
    ids, labels = writer.encode_example(PROMPT, "The end came.", "story", "")
    assert ids[-1] == writer.eos_id == writer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert labels.count(IGNORE) == len(writer.encode_prefix(PROMPT, "story", ""))
    assert writer.controls()["form"] == ["fable", "poem", "story"] and "fantasy" in writer.controls()["genre"]
    assert len(history) == 1 and history["val_ppl_word"].iloc[0] > 0


def test_chat_layout_takes_a_system_message_and_earlier_turns(lora_writer):
    writer, _ = lora_writer
    history = (("user", "Write about a mill."), ("assistant", "The mill stood still."))
    prefix = writer.tokenizer.decode(writer.encode_prefix(PROMPT, "story", "", system="You write for children.",
                                                          history=history))
    assert prefix.index("You write for children.") < prefix.index("The mill stood still.") < prefix.index(PROMPT)
    assert writer.config.system_prompt not in prefix or not writer.config.system_prompt
    long = tuple(("user", f"Turn {i}: the fox ran home.") for i in range(40))  # more than half the context
    ids = writer.encode_prefix(PROMPT, "story", "", history=long)
    kept = writer.tokenizer.decode(ids)
    assert len(ids) <= writer.config.context // 2 and "Turn 39:" in kept and "Turn 0:" not in kept
    settings = GenerationSettings(max_new_tokens=8, seed=3, history=[["user", "Hello."]], system="Be brief.")
    assert settings.history == (("user", "Hello."),)
    assert writer.generate([PROMPT], settings)[0] == "".join(writer.stream(PROMPT, settings))
    with pytest.raises(ValueError, match="history"):
        GenerationSettings(history=(("narrator", "x"),))


def test_lora_trains_only_the_adapter(lora_writer):
    from models.transformer import is_peft_model, parameter_count, trainable_count

    writer, _ = lora_writer
    assert is_peft_model(writer.model)
    assert 0 < trainable_count(writer.model) < 0.2 * parameter_count(writer.model)
    assert writer.metadata["base"]["license"] == "apache-2.0"


def test_length_requests_go_to_half_of_the_training_examples(tiny_corpus):
    from training.transformer import length_request

    asked = [length_request(p, t) for p, t in zip(tiny_corpus["prompt"], tiny_corpus["text"], strict=True)]
    share = sum(1 for a in asked if a) / len(asked)
    assert 0.35 < share < 0.65 and all(a % 10 == 0 for a in asked)
    assert asked == [length_request(p, t) for p, t in zip(tiny_corpus["prompt"], tiny_corpus["text"], strict=True)]


def test_adapter_sampling_streaming_rows_and_requests_agree(lora_writer):
    writer, _ = lora_writer
    settings = GenerationSettings(max_new_tokens=16, seed=4, form="poem", genre="fantasy")
    text = writer.generate([PROMPT], settings)[0]
    assert "".join(writer.stream(PROMPT, settings)) == text
    rows = writer.generate_rows([("Another prompt entirely.", 9), (PROMPT, 4), ("A third one.", 1)], settings)
    assert rows[1] == text  # a row's text does not depend on the other rows of its batch
    mixed = writer.generate_requests([("A third one.", "story", ""), (PROMPT, "poem", "fantasy")], settings)
    assert mixed[1] == text
    assert mixed[0] == writer.generate(["A third one."], settings.replace(form="story", genre=""))[0]


def test_adapter_saves_without_the_base_and_loads_merged(lora_writer, tmp_path, tiny_chat_base):
    writer, _ = lora_writer
    directory = writer.save(tmp_path / "tuned")
    assert (directory / "adapter").is_dir() and not (directory / "model").exists()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["base_model"] == str(tiny_chat_base) and manifest["adapter"] == "lora"
    assert manifest["base"]["license"] == "apache-2.0" and manifest["layout"] == "chat"
    loaded = load_model(directory)
    settings = GenerationSettings(max_new_tokens=12, seed=2)
    assert loaded.generate([PROMPT], settings) == writer.generate([PROMPT], settings)
    assert loaded.score([PROMPT], ["A short piece."])[0][0] == pytest.approx(
        writer.score([PROMPT], ["A short piece."])[0][0], rel=1e-4)
    resaved = loaded.save(tmp_path / "again")  # a loaded model saves its adapter again, not the merged weights
    assert (resaved / "adapter").is_dir() and not (resaved / "model").exists()


def test_bad_lora_targets_and_adapter_are_named(tiny_chat_base):
    with pytest.raises(ValueError, match=names("lora_targets", "['nope']", "q_proj")):
        build_transformer(None, TransformerConfig(base_model=str(tiny_chat_base), context=256, lora_targets=["nope"]))
    with pytest.raises(ValueError, match=names("TransformerConfig.adapter")):
        TransformerConfig(adapter="qlora")


def test_lora_stream_resumed_on_other_threads_writes_the_same_text(lora_writer):
    from tests.test_seq2seq import stream_across_threads

    writer, _ = lora_writer
    settings = GenerationSettings(max_new_tokens=10, seed=3)
    assert stream_across_threads(writer, PROMPT, settings) == writer.generate([PROMPT], settings)[0]


def test_a_fable_without_a_moral_gets_one_line_more_and_other_pieces_are_left_as_written():
    from models.layout import MORAL_LEAD, MORAL_TOKENS, PromptLayout

    class Scripted(PromptLayout):
        """Writes the moral it is asked for (a lead ending in 'Moral:'), the line cut at the line break."""

        load = save = score = stream = None  # no network: only the moral's logic is under test

        def __init__(self, line: str) -> None:
            self.line, self.asked = line, []

        def generate(self, prompts, settings=None):
            self.asked.append(settings)
            return [self.line]

    writer = Scripted(" Kindness is never wasted.")
    plain = GenerationSettings(seed=5, form="fable")
    fable = "A mouse freed a lion from a net. The lion thanked her."
    out = writer.with_morals([(PROMPT, "fable", "", 8)], [fable], plain)
    assert out == [f"{fable}\n\n{MORAL_LEAD} Kindness is never wasted."]
    asked = writer.asked[0]
    assert asked.lead == f"{fable}\n\n{MORAL_LEAD}" and asked.seed == 8 and asked.form == "fable"
    assert asked.max_new_tokens == MORAL_TOKENS and asked.stop == ("\n",) and asked.trim_to_sentence
    untouched = [("fable", "A mouse freed a lion. She learned that the small can help."),  # it has its moral
                 ("fable", "A mouse freed a lion and the lion"),  # stopped mid-sentence: no moral after that
                 ("story", "A mouse freed a lion from a net. The lion thanked her."),
                 ("poem", "A mouse\nfreed a lion\nfrom a net.")]
    for form, text in untouched:
        assert writer.with_morals([(PROMPT, form, "", 0)], [text], plain) == [text]
    assert writer.with_morals([(PROMPT, "fable", "", 0)], [fable], plain.replace(lead="Once,")) == [fable]  # Continue
    assert Scripted(" and then the").with_morals([(PROMPT, "fable", "", 0)], [fable], plain) == [fable]  # not whole
    assert len(writer.asked) == 1


def test_a_fables_moral_is_the_same_streamed_batched_or_alone(lora_writer, monkeypatch):
    from models.layout import PromptLayout

    writer, _ = lora_writer
    settings = GenerationSettings(max_new_tokens=12, seed=4, form="fable")
    monkeypatch.setattr(PromptLayout, "moral_missing", lambda *a: False)
    as_written = writer.generate([PROMPT], settings)[0]
    monkeypatch.setattr(PromptLayout, "moral_missing", lambda self, form, text, settings: form == "fable"
                        and not settings.lead and bool(text.strip()))  # the tiny model rarely ends a sentence
    text = writer.generate([PROMPT], settings)[0]
    assert text == as_written + writer.moral_for(PROMPT, as_written, settings)
    assert "".join(writer.stream(PROMPT, settings)) == text
    assert writer.generate_rows([("Another prompt.", 9), (PROMPT, 4)], settings)[1] == text
    assert writer.generate_requests([("A third one.", "story", ""), (PROMPT, "fable", "")], settings)[1] == text


def test_the_trainers_progress_bar_is_drawn_only_on_a_terminal(monkeypatch):
    """In a log file a bar is redrawn lines and cursor codes: only a terminal gets it, and only when wanted."""
    import io
    import sys

    from training.transformer import show_progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "__stderr__", Terminal())
    assert show_progress_bar(True) and not show_progress_bar(False)
    monkeypatch.setattr(sys, "__stderr__", io.StringIO())  # a file or a pipe
    assert not show_progress_bar(True)
    monkeypatch.setattr(sys, "__stderr__", None)  # no stream at all (pythonw, some daemons)
    assert not show_progress_bar(True)
