"""Data-parallel Transformer training: two processes (torchrun, gloo on CPU) against one, on tiny models."""

from __future__ import annotations

import pytest
import torch

from models.contract import GenerationSettings
from models.transformer import TransformerConfig, build_transformer, is_peft_model, trainable_count
from tests.conftest import names
from tests.test_transformer import PROMPT, scratch
from training import transformer_ddp
from training.config import TransformerTrainConfig
from training.transformer import train_transformer

pytestmark = pytest.mark.multiprocess

SETTINGS = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "progress_bar": False, "torch_threads": 1, "patience": 5}


def parts(corpus):
    return corpus[corpus["split"] == "train"], corpus[corpus["split"] == "validation"]


@pytest.fixture(scope="module")
def one_and_two(tiny_corpus, tiny_tokenizer):
    """The same tiny model (same seed) trained with one and with two processes at global batch 16."""
    train, val = parts(tiny_corpus)
    results = {}
    for processes in (1, 2):
        writer = scratch(tiny_tokenizer)
        before = {name: value.clone() for name, value in writer.model.state_dict().items()}
        epochs: list[int] = []
        history = transformer_ddp.train(writer, train, val, TransformerTrainConfig(**SETTINGS, processes=processes),
                                        on_epoch=lambda epoch, _, seen=epochs: seen.append(epoch))
        results[processes] = {"writer": writer, "history": history, "before": before, "epochs": epochs}
    return results


def test_two_processes_learn_like_one_at_the_same_global_batch(one_and_two):
    one, two = one_and_two[1]["history"], one_and_two[2]["history"]
    assert len(one) == len(two) == 2 and one_and_two[2]["epochs"] == [1, 2]  # on_epoch once per epoch
    for a, b in zip(one["val_loss"], two["val_loss"], strict=True):  # the same curve within noise
        assert abs(a - b) / a < 0.05, (list(one["val_loss"]), list(two["val_loss"]))
    assert two["val_loss"].iloc[-1] < two["val_loss"].iloc[0] and (two["tokens_per_s"] > 0).all()


def test_the_callers_writer_takes_the_trained_weights_and_writes(one_and_two):
    writer, before = one_and_two[2]["writer"], one_and_two[2]["before"]
    after = writer.model.state_dict()
    assert set(after) == set(before)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    settings = GenerationSettings(max_new_tokens=6, seed=1)
    assert writer.generate([PROMPT], settings) == writer.generate([PROMPT], settings)


def test_a_lora_adapter_stays_an_adapter_in_two_processes(tiny_corpus, tmp_path_factory):
    from weights.tiny import write_tiny_llama

    base = write_tiny_llama(tmp_path_factory.mktemp("ddp-base") / "tiny-llama", vocab=500)
    train, val = parts(tiny_corpus)
    torch.manual_seed(0)
    writer = build_transformer(None, TransformerConfig(base_model=str(base), context=256, max_prompt_tokens=40,
                                                       lora_r=4, lora_alpha=8),
                               forms=sorted(train["form"].unique()), genres=sorted(train["genre"].unique()))
    trainable = trainable_count(writer.model)
    history = transformer_ddp.train(writer, train.head(32), val, TransformerTrainConfig(
        epochs=1, batch_size=8, lr=5e-3, max_val_pieces=6, progress_bar=False, processes=2))
    assert len(history) == 1 and history["val_ppl_word"].iloc[0] > 0
    assert is_peft_model(writer.model) and trainable_count(writer.model) == trainable


def test_settings_that_cannot_work_in_several_processes_are_refused_by_name():
    with pytest.raises(ValueError, match=names("batch_size", "processes")):
        TransformerTrainConfig(batch_size=15, processes=2)
    with pytest.raises(ValueError, match="processes"):
        TransformerTrainConfig(processes=0)
    with pytest.raises(ValueError, match=r"train through training\.transformer_ddp\.train"):  # one loop, N asked
        train_transformer(None, None, None, TransformerTrainConfig(processes=2))


def test_a_time_budget_stops_every_process_at_the_same_step(tiny_corpus, tiny_tokenizer):
    train, val = parts(tiny_corpus)
    rows = {}
    for processes in (1, 2):
        history = transformer_ddp.train(scratch(tiny_tokenizer), train, val.head(8), TransformerTrainConfig(
            epochs=3, batch_size=8, progress_bar=False, processes=processes, time_budget_s=0.01))
        rows[processes] = len(history)
    assert rows[2] == rows[1] < 3  # stopped in the first epoch as one process does, and no process left waiting


def test_a_failing_worker_fails_the_training_with_its_error(tiny_corpus, tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("CW_TORCH_THREADS", "0")  # every worker refuses it when it sets its threads
    train, val = parts(tiny_corpus)
    with pytest.raises(RuntimeError, match=names("torchrun exit 1", "ValueError", "CW_TORCH_THREADS")):
        transformer_ddp.train(scratch(tiny_tokenizer), train.head(16), val.head(8),
                              TransformerTrainConfig(epochs=1, batch_size=8, progress_bar=False, processes=2))
