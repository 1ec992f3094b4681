"""Best-of-K self-distillation: the best sampled piece per training prompt becomes the training data."""

from __future__ import annotations

import pandas as pd
import pytest

# imported before any test patches models.families.load_model: a module first imported inside a patched test
# would keep the stand-in writer for the rest of the session (evaluation.candidates imports load_model by name)
import evaluation.candidates  # noqa: F401
from tests.conftest import names
from training.distill import DistillConfig, distill, eligible, sample_prompts, training_pieces


class _Writer:
    """Writes, per seed, a piece that keeps to its prompt (seed 0) or one that slips into commentary (seed 1)."""

    def generate_requests(self, requests, settings):
        out = []
        for prompt, form, _ in requests:
            word = prompt.split()[-1].strip(".")
            if settings.seed == 0:
                joiner = "\n" if form == "poem" else " "
                out.append(joiner.join([f"Ada found the {word} by the river.", "She carried it home to her brother.",
                                        "He laughed and hugged her.", f"They kept the {word} by the fire all winter.",
                                        "Moral: always share."]))
            else:
                out.append(f"Great! Let's get started. Here is a story about the {word}. I hope you enjoy it. Ada "
                           f"saw the {word}. Ada saw the {word}. Ada saw the {word}. Moral: always share.")
        return out


@pytest.fixture
def stub_base(monkeypatch):
    import models.families

    monkeypatch.setattr(models.families, "load_model", lambda *a, **k: _Writer())


def test_eligible_needs_a_full_sentence_the_form_and_a_word_of_the_prompt():
    from training.distill import rejection

    prompt = "Write a fable about a lantern."
    assert rejection(prompt, "fable", "The lantern glowed and the moth") == "unfinished"
    assert rejection(prompt, "poem", "The lantern glowed all night.") == "form"
    assert rejection(prompt, "fable", "A moth flew. It was night. Moral: wait.") == "off_prompt"
    assert eligible(prompt, "fable", "The lantern glowed all night. The moth learned to be patient. Moral: wait.")
    assert not eligible(prompt, "fable", "The lantern glowed all night and the moth")
    assert not eligible(prompt, "fable", "A moth flew. It was night. Moral: wait.")  # no word of the prompt
    assert not eligible(prompt, "poem", "The lantern glowed all night.")  # a poem needs lines


def test_sample_prompts_are_distinct_seeded_and_refuse_an_empty_split():
    train = pd.DataFrame({"prompt": ["a", "a", "b", "c"], "form": "story", "genre": ""})
    first = sample_prompts(train, 5, seed=1)
    assert sorted(first["prompt"]) == ["a", "b", "c"] and first.equals(sample_prompts(train, 5, seed=1))
    with pytest.raises(ValueError, match=names("training split")):
        sample_prompts(train.head(0), 3, 0)


def test_settings_are_validated_by_name():
    with pytest.raises(ValueError, match=names("k", "0", "2")):
        DistillConfig(k=1)
    with pytest.raises(ValueError, match="runtime"):
        DistillConfig(runtime="onnx")
    with pytest.raises(ValueError, match="prompts"):
        DistillConfig(prompts=0)


def test_distill_keeps_the_best_piece_per_prompt_and_the_pair_it_beat(tiny_corpus, stub_base, tmp_path, monkeypatch):
    monkeypatch.setenv("CW_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    train = tiny_corpus[tiny_corpus["split"] == "train"]
    test = tiny_corpus[tiny_corpus["split"] == "test"]
    cfg = DistillConfig(k=2, prompts=3, max_new_tokens=24, check_pairs=6, check_min_accuracy=0.6,
                        check_composite_pairs=2)
    made = distill(tmp_path, train, test, cfg, "tiny:llama-chat")
    assert len(made.train) == 3 and set(made.train["split"]) == {"train"} and set(made.train["source"]) == {
        "distilled"}
    assert all(not t.startswith("Great!") for t in made.train["text"])  # the commentary piece never wins
    assert len(made.pairs) == 3 and all(p.startswith("Great!") for p in made.pairs["rejected"])
    assert made.stats["dropped_by_reason"]["unfinished"] == 0
    assert made.stats["kept"] == 3 and made.stats["k"] == 2 and {"in_fiction", "fresh"} <= set(made.stats["measures"])
    mixed = training_pieces(made, train, keep_corpus=5, seed=0)
    assert len(mixed) == 8 and (mixed["source"] == "distilled").sum() == 3


def test_distill_says_so_when_no_sampled_piece_can_be_kept(tiny_corpus, monkeypatch, tmp_path):
    import models.families

    class Rambler:
        def generate_requests(self, requests, settings):
            return ["and then the" for _ in requests]

    monkeypatch.setattr(models.families, "load_model", lambda *a, **k: Rambler())
    monkeypatch.setenv("CW_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    cfg = DistillConfig(k=2, prompts=2, check_pairs=6, check_min_accuracy=0.6, check_composite_pairs=2)
    with pytest.raises(ValueError, match=names("4 sampled pieces", "unfinished 4")):
        distill(tmp_path, tiny_corpus[tiny_corpus["split"] == "train"], tiny_corpus[tiny_corpus["split"] == "test"],
                cfg, "tiny:llama-chat")


def test_a_piece_cut_off_at_the_token_limit_is_the_rejected_side_even_when_it_scores_higher(tiny_corpus, monkeypatch,
                                                                                          tmp_path):
    import models.families

    asked = []

    class CutOff(_Writer):
        """Seed 1 writes the seed-0 piece and runs on past its end, cut off mid-sentence (untrimmed)."""

        def generate_requests(self, requests, settings):
            asked.append(settings.trim_to_sentence)
            pieces = super().generate_requests(requests, settings.model_copy(update={"seed": 0}))
            return pieces if settings.seed == 0 else [p + " And then, in the spring, the" for p in pieces]

    monkeypatch.setattr(models.families, "load_model", lambda *a, **k: CutOff())
    monkeypatch.setenv("CW_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    cfg = DistillConfig(k=2, prompts=3, check_pairs=6, check_min_accuracy=0.6, check_composite_pairs=2)
    made = distill(tmp_path, tiny_corpus[tiny_corpus["split"] == "train"], tiny_corpus[tiny_corpus["split"] == "test"],
                   cfg, "tiny:llama-chat")
    assert asked == [False, False]  # sampled untrimmed: a cut-off piece stays visible as one
    assert made.stats["dropped_by_reason"]["unfinished"] == 3
    assert all(t.endswith("Moral: always share.") for t in made.train["text"])
    assert all(r.endswith("the") for r in made.pairs["rejected"])
