"""Writers' feedback to preference pairs, and DPO on them: the loss, the reference, and that it learns."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from training.dpo import DPOConfig, choose_pairs, dpo_loss, train_dpo
from training.preferences import feedback_pairs, pairs_fingerprint


def verdict(kind, text, request_id="r1", others=(), edited=None, writer="ada"):
    return {"request_id": request_id, "kind": kind, "text": text, "others": list(others), "edited": edited,
            "prompt": "A fox finds a key.", "form": "story", "genre": "", "writer": writer, "model_version": "3"}


def test_each_kind_of_verdict_becomes_its_pairs_once():
    feedback = pd.DataFrame([
        verdict("kept", "Draft A.", others=["Draft B.", "Draft C.", "Draft A."]),
        verdict("kept", "Draft A.", others=["Draft B."], writer="bo"),  # the same pair from someone else: once
        verdict("edited", "Draft B.", edited="Draft B, better."),
        verdict("up", "Draft C.", request_id="r2"), verdict("down", "Draft D.", request_id="r2"),
        verdict("down", "Draft E.", request_id="r3"),  # a thumb down with nothing up beside it: no pair
        verdict("edited", "Draft F.", edited="Draft F."),  # unchanged: no pair
    ])
    pairs = feedback_pairs(feedback)
    assert sorted(zip(pairs["chosen"], pairs["rejected"], pairs["source"], strict=True)) == [
        ("Draft A.", "Draft B.", "kept"), ("Draft A.", "Draft C.", "kept"),
        ("Draft B, better.", "Draft B.", "edited"), ("Draft C.", "Draft D.", "thumbs")]
    assert pairs_fingerprint(pairs) == pairs_fingerprint(pairs.iloc[::-1])
    assert pairs_fingerprint(pairs) != pairs_fingerprint(pairs.head(3))
    assert feedback_pairs(pd.DataFrame(columns=list(feedback.columns))).empty


def test_dpo_loss_is_the_formula_and_falls_with_the_margin():
    chosen, rejected = torch.tensor([-10.0, -12.0]), torch.tensor([-11.0, -11.0])
    ref_c, ref_r = torch.tensor([-10.5, -12.0]), torch.tensor([-10.5, -11.0])
    loss, margin = dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.5)
    expected = 0.5 * torch.tensor([(0.5) - (-0.5), 0.0])
    assert torch.allclose(margin, expected)
    assert torch.isclose(loss, -torch.nn.functional.logsigmoid(expected).mean())
    bigger, _ = dpo_loss(chosen + 1, rejected, ref_c, ref_r, beta=0.5)
    assert bigger < loss


def test_choose_pairs_puts_writers_first_and_caps():
    writers = pd.DataFrame([{"prompt": "p", "form": "story", "genre": "", "chosen": f"c{i}", "rejected": "r"}
                            for i in range(3)])
    distilled = pd.DataFrame([{"prompt": "q", "form": "fable", "genre": "", "chosen": f"d{i}", "rejected": "x",
                               "chosen_quality": 1.0, "rejected_quality": 0.0} for i in range(10)])
    chosen = choose_pairs(writers, distilled, DPOConfig(max_pairs=5))
    assert list(chosen["origin"]) == ["writers"] * 3 + ["distilled"] * 2
    assert len(choose_pairs(writers, distilled, DPOConfig(distilled=False))) == 3
    with pytest.raises(ValueError, match="min_pairs"):
        DPOConfig(min_pairs=0)


@pytest.fixture(scope="module")
def lora_writer(tmp_path_factory):
    from models.configs import TransformerConfig
    from models.transformer import build_transformer
    from weights.tiny import write_tiny_llama

    base = write_tiny_llama(tmp_path_factory.mktemp("base") / "tiny-llama", vocab=500)
    torch.manual_seed(0)
    return build_transformer(None, TransformerConfig(base_model=str(base), context=128, max_prompt_tokens=30,
                                                     lora_r=4, lora_alpha=8), forms=["story"], genres=["fantasy"])


def test_dpo_moves_the_model_towards_the_chosen_side_and_keeps_the_reference(lora_writer):
    from training.dpo import _logps

    writer = lora_writer
    pairs = pd.DataFrame([{"prompt": f"A fox finds key number {i}.", "form": "story", "genre": "",
                           "chosen": "The fox opened the door and found the garden.",
                           "rejected": "door door door the the the key key"} for i in range(8)])
    encoded = writer.encode_scored(pairs["prompt"][0], pairs["rejected"][0], "story", "")[:2]
    with torch.no_grad(), writer.model.disable_adapter():
        reference_before = float(_logps(writer.model, [encoded], writer.pad_id)[0])
    stats = train_dpo(writer, pairs, DPOConfig(lr=5e-3, epochs=4, batch_size=4, beta=0.5))
    assert stats["pairs"] == 8 and stats["steps"] == 8 and stats["loss_last"] < stats["loss_first"]
    assert stats["reward_accuracy"] == 1.0 and stats["prefers_after"] >= stats["prefers_before"]
    with torch.no_grad(), writer.model.disable_adapter():  # the base under the adapter is untouched
        assert float(_logps(writer.model, [encoded], writer.pad_id)[0]) == pytest.approx(reference_before, abs=1e-4)
    with pytest.raises(ValueError, match="at least one"):
        train_dpo(writer, pairs.head(0), DPOConfig())


def test_a_piece_cut_off_mid_sentence_is_scored_without_an_end_token(lora_writer):
    from training.dpo import encode_side

    writer = lora_writer
    finished, finished_labels = encode_side(writer, "A fox.", "The fox slept.", "story", "")
    cut, cut_labels = encode_side(writer, "A fox.", "The fox slept and the", "story", "")
    assert finished[-1] == writer.eos_id and finished_labels[-1] == writer.eos_id  # it ended: its end is scored
    assert cut[-1] != writer.eos_id and len(cut) == len(cut_labels)  # the limit cut it: no end the model never wrote
