import math
from typing import ClassVar

import pytest
import torch
from pydantic import ValidationError

from models.contract import GenerationSettings
from models.sampling import beam_search, filter_logits, sample_next
from models.text import cut_at_stop, finish_text, stream_text, trim_to_sentence
from tests.conftest import names


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 0), ("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1),
    ("max_new_tokens", 0), ("max_new_tokens", 10_000), ("repetition_penalty", 0.5), ("seed", -3),
    ("num_beams", 0), ("form", ""), ("seed", 1.5), ("max_new_tokens", True), ("min_p", 1.0), ("min_p", -0.1),
    ("stop", ("",)), ("stop", ("a", "b", "c", "d", "e")), ("stop", ("x" * 65,)), ("stop", "END"),
    ("logit_bias", {3: 101.0}), ("logit_bias", {-1: 1.0}), ("logit_bias", {i: 1.0 for i in range(301)}),
])
def test_out_of_range_settings_name_the_field(field, value):
    with pytest.raises(ValidationError) as caught:
        GenerationSettings(**{field: value})
    assert caught.value.errors()[0]["loc"][0] == field


def test_unknown_settings_are_rejected_by_name():
    with pytest.raises(ValueError, match=names("['temprature']")):
        GenerationSettings.from_dict({"temprature": 0.7})
    assert GenerationSettings.from_dict({"seed": 4}).seed == 4


def test_sampler_top_k_1_and_tiny_top_p_are_greedy():
    logits = torch.tensor([[0.1, 2.0, 1.9, -1.0]])
    gen = torch.Generator().manual_seed(0)
    for settings in (GenerationSettings(top_k=1, top_p=1.0), GenerationSettings(top_k=0, top_p=0.01)):
        assert all(int(sample_next(logits, settings, gen)[0]) == 1 for _ in range(20))


def test_filtering_keeps_the_nucleus_and_the_crossing_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_k=3, top_p=1.0))[0].tolist() == [True, True, True, False]


def test_repetition_penalty_lowers_repeated_tokens():
    logits = torch.tensor([[2.0, 2.0, -1.0]])
    settings = GenerationSettings(repetition_penalty=3.0, top_k=0, top_p=1.0, temperature=1.0)
    counts = torch.zeros(3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        counts[sample_next(logits, settings, gen, previous=torch.tensor([[0]]))] += 1
    assert counts[1] > 3 * counts[0]


def test_same_seed_same_draws():
    logits = torch.randn(1, 50)
    s = GenerationSettings(seed=5, top_k=0, top_p=1.0)
    a = [int(sample_next(logits, s, torch.Generator().manual_seed(5))[0]) for _ in range(3)]
    b = [int(sample_next(logits, s, torch.Generator().manual_seed(5))[0]) for _ in range(3)]
    assert a == b


def test_trim_to_sentence():
    assert trim_to_sentence('He ran. "Stop!" she said. And then') == 'He ran. "Stop!" she said.'
    assert trim_to_sentence("no sentence end here") == "no sentence end here"
    assert trim_to_sentence("Wait... what? Yes") == "Wait... what?"


class TableStep:
    """A hand-built model: fixed next-token distributions by the last token.

    From <bos>=0 greedy takes token 1 (p=0.6), after which every ending costs half: [1] and [1, 2]
    both score 0.6 * 0.5 = 0.3. Token 2 (p=0.4) ends with p=1.0, so the best sequence is [2] (0.4),
    which a greedy (beam 1) search never reaches.
    """

    V, EOS = 4, 3
    table: ClassVar[dict[int, list[float]]] = {
        0: [0.0, 0.6, 0.4, 0.0], 1: [0.0, 0.0, 0.5, 0.5], 2: [0.0, 0.0, 0.0, 1.0],
    }

    def __call__(self, tokens, state):
        probs = torch.tensor([self.table[int(t)] for t in tokens]) + 1e-12
        return torch.log(probs), state

    @staticmethod
    def select(state, index):
        return state


def test_beam_search_finds_the_highest_scoring_sequence_greedy_misses():
    seq, score = beam_search(TableStep(), None, bos_id=0, eos_id=TableStep.EOS, num_beams=2, max_new_tokens=5)
    assert seq == [2]
    assert math.isclose(score, math.log(0.4), rel_tol=1e-4)
    greedy, _ = beam_search(TableStep(), None, bos_id=0, eos_id=TableStep.EOS, num_beams=1, max_new_tokens=5)
    assert greedy != [2]


def test_require_min_names_the_config_and_field():
    from dataclasses import dataclass

    from core.validation import require_min

    @dataclass
    class Demo:
        steps: int = 1
        weight: float = 0.5

    require_min(Demo(), ("steps",), 1, integer=True)
    with pytest.raises(ValueError, match=names("Demo.steps", "integer", "≥ 1", "0")):
        require_min(Demo(steps=0), ("steps",), 1, integer=True)
    with pytest.raises(ValueError, match=names("Demo.steps", "integer", "1.5")):
        require_min(Demo(steps=1.5), ("steps",), 1, integer=True)
    with pytest.raises(ValueError, match=names("Demo.weight", "≥ 0", "-0.1")):
        require_min(Demo(weight=-0.1), ("weight",), 0)
    with pytest.raises(ValueError, match="got True"):
        require_min(Demo(steps=True), ("steps",), 1, integer=True)


def test_min_p_keeps_tokens_near_the_best_and_adapts_to_confidence():
    confident = torch.log(torch.tensor([[0.90, 0.06, 0.03, 0.01]]))
    unsure = torch.log(torch.tensor([[0.30, 0.28, 0.25, 0.17]]))
    assert torch.isfinite(filter_logits(confident, 0, 1.0, min_p=0.1))[0].tolist() == [True, False, False, False]
    assert torch.isfinite(filter_logits(unsure, 0, 1.0, min_p=0.1))[0].tolist() == [True, True, True, True]
    assert torch.isfinite(filter_logits(unsure, 0, 1.0, min_p=0.9))[0].tolist() == [True, True, False, False]
    gen = torch.Generator().manual_seed(0)
    assert all(int(sample_next(confident, GenerationSettings(top_k=0, top_p=1.0, min_p=0.5), gen)[0]) == 0
               for _ in range(20))


def test_stop_strings_cut_before_the_first_and_settings_take_lists():
    assert cut_at_stop("Once upon a time. THE END and more", ("THE END", "more")) == ("Once upon a time. ", True)
    assert cut_at_stop("no stop here", ("###",)) == ("no stop here", False)
    settings = GenerationSettings.from_dict({"stop": ["\n\n", "###"], "trim_to_sentence": True})
    assert settings.stop == ("\n\n", "###")
    assert finish_text("A fox ran. It hid\n\nChapter two.", settings) == "A fox ran."


@pytest.mark.parametrize("stop", [(), ("###",), ("END", "###"), ("o w",)])
@pytest.mark.parametrize("trim", [False, True])
def test_streamed_pieces_join_to_the_finished_text_and_stop_drawing_at_a_stop(stop, trim):
    words = ["Hel", "lo w", "orld. ", "#", "#", "# END", " more. ", "Tail"]
    drawn = []

    def ids():
        for i in range(len(words)):
            drawn.append(i)
            yield i

    def decode(got):
        return "".join(words[i] for i in got)

    pieces = list(stream_text(ids(), decode, trim, stop))
    full = decode(range(len(words)))
    settings = GenerationSettings(stop=stop, trim_to_sentence=trim)
    assert "".join(pieces) == finish_text(full, settings)
    for piece_end in range(1, len(pieces)):  # nothing emitted is ever the start of a stop string that follows
        assert not any(s in "".join(pieces[:piece_end]) for s in stop)
    if stop == ("###",):
        assert drawn == [0, 1, 2, 3, 4, 5]  # generation ended at the stop: no more ids were drawn


def test_a_preset_supplies_what_the_settings_do_not_set():
    settings = GenerationSettings.from_dict({"preset": "wild", "temperature": 0.5})
    assert settings.temperature == 0.5 and settings.min_p == 0.05 and settings.top_k == 0  # the dict wins
    with pytest.raises(ValueError, match=names("'calm'", "steady", "balanced", "wild")):
        GenerationSettings.from_dict({"preset": "calm"})


def test_logit_bias_bans_and_forces_tokens_and_refuses_an_id_the_vocabulary_lacks():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    drawn = set()
    banned = GenerationSettings(top_k=0, top_p=1.0, logit_bias={0: -100, 1: -100})
    forced = GenerationSettings(top_k=0, top_p=1.0, logit_bias={3: 100})
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        drawn.add(int(sample_next(logits, banned, gen)[0]))
        assert int(sample_next(logits, forced, gen)[0]) == 3
    assert drawn == {2, 3}
    assert GenerationSettings.model_validate_json('{"logit_bias": {"7": -5}}').logit_bias == {7: -5.0}  # JSON keys
    with pytest.raises(ValueError, match=names("logit_bias", "[9]", "4")):
        sample_next(logits, GenerationSettings(logit_bias={9: 1.0}), gen)
