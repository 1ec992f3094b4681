"""The text GAN: discriminator, policy gradient, rewards, adversarial training, packaging, bad settings."""

from __future__ import annotations

import pytest
import torch

from models.contract import GenerationSettings
from models.families import load_model
from models.gan import (
    Discriminator,
    DiscriminatorConfig,
    GanConfig,
    GanWriter,
    dense_returns,
    discriminator_loss,
    last_logit,
    policy_gradient_loss,
    real_batch,
    rollout_rewards,
    sample_sequences,
    sequence_log_probs,
)
from tests.conftest import names, tiny_writer
from training.gan import _Batches, generator_step, quality_diversity, train_gan

PROMPT = "A fox finds a key under an old stone."


@pytest.fixture(scope="module")
def parts(tiny_corpus):
    return {name: tiny_corpus[tiny_corpus["split"] == name] for name in ("train", "validation")}


def no_eos(writer):
    """Makes every sample run to full length (equal lengths: the batch baseline then cancels exactly)."""
    with torch.no_grad():
        writer.net.out_bias[writer.config.eos_id] = -1e9
    return writer


def test_discriminator_separates_real_from_shuffled_words(parts, tiny_tokenizer):
    torch.manual_seed(0)
    writer = tiny_writer(tiny_tokenizer)
    rows = parts["train"].head(32)
    src, src_len = writer._batch_src(list(rows["prompt"]), list(rows["form"]), list(rows["genre"]))
    import random

    rng = random.Random(0)
    shuffled = []
    for text in rows["text"]:
        w = text.split()
        rng.shuffle(w)
        shuffled.append(" ".join(w))
    real, real_mask = real_batch(writer, list(rows["text"]), 24)
    fake, fake_mask = real_batch(writer, shuffled, 24)
    disc = Discriminator(writer.config.vocab_size, writer.config.pad_id, DiscriminatorConfig(emb_dim=32, hidden=48,
                                                                                             dropout=0.0))
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    for _ in range(80):
        loss = discriminator_loss(disc(src, src_len, real), real_mask, True) + \
            discriminator_loss(disc(src, src_len, fake), fake_mask, False)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held = parts["validation"].head(24)
    hsrc, hlen = writer._batch_src(list(held["prompt"]), list(held["form"]), list(held["genre"]))
    h_real, h_real_mask = real_batch(writer, list(held["text"]), 24)
    h_fake, h_fake_mask = real_batch(writer, [" ".join(sorted(t.split(), key=lambda w: rng.random()))
                                              for t in held["text"]], 24)
    with torch.no_grad():
        acc_real = (last_logit(disc(hsrc, hlen, h_real), h_real_mask) > 0).float().mean()
        acc_fake = (last_logit(disc(hsrc, hlen, h_fake), h_fake_mask) < 0).float().mean()
    assert (acc_real + acc_fake) / 2 > 0.8


def _pg_update(writer, reward: float):
    """One policy-gradient step (no baseline) on one sampled sequence; returns its log-prob before and after."""
    src, src_len = writer._batch_src([PROMPT], ["story"], [""])
    tokens, mask = sample_sequences(writer, src, src_len, 12, 1.0, torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(writer.net.parameters(), lr=0.5)
    writer.net.eval()  # no dropout: the change comes from the update alone
    before, _ = sequence_log_probs(writer, src, src_len, tokens)
    loss = policy_gradient_loss(before, torch.full_like(mask, reward), mask, "none")
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after, _ = sequence_log_probs(writer, src, src_len, tokens)
    return float((before.detach() * mask).sum()), float((after * mask).sum())


def test_positive_reward_raises_and_negative_reward_lowers_the_sampled_log_prob(tiny_tokenizer):
    before, after = _pg_update(tiny_writer(tiny_tokenizer), +1.0)
    assert after > before
    before, after = _pg_update(tiny_writer(tiny_tokenizer), -1.0)
    assert after < before


class ConstantDiscriminator(torch.nn.Module):
    """A frozen discriminator that calls everything equally real."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(0.3), requires_grad=False)

    def forward(self, src, src_len, tokens):
        return self.bias.expand(tokens.shape).clone()


def test_constant_reward_with_baseline_leaves_the_generator_unchanged(parts, tiny_tokenizer):
    writer = no_eos(tiny_writer(tiny_tokenizer))
    cfg = GanConfig(entropy_weight=0.0, mle_weight=0.0, max_len=10, batch_size=8, baseline="batch")
    before = {k: v.clone() for k, v in writer.net.state_dict().items()}
    opt = torch.optim.Adam(writer.net.parameters(), lr=1e-2)
    stats = generator_step(writer, opt, ConstantDiscriminator(), _Batches(writer, parts["train"], 8, 0), cfg,
                           torch.Generator().manual_seed(0))
    assert stats["pg_loss"] == pytest.approx(0.0, abs=1e-7)
    for name, value in writer.net.state_dict().items():
        assert torch.equal(value, before[name]), name
    # without the baseline the same constant reward does move the weights (the test can fail)
    cfg_raw = GanConfig(entropy_weight=0.0, mle_weight=0.0, max_len=10, batch_size=8, baseline="none")
    generator_step(writer, opt, ConstantDiscriminator(), _Batches(writer, parts["train"], 8, 0), cfg_raw,
                   torch.Generator().manual_seed(0))
    assert any(not torch.equal(v, before[k]) for k, v in writer.net.state_dict().items())


def test_rollout_rewards_shape_and_range(parts, tiny_tokenizer):
    writer = tiny_writer(tiny_tokenizer)
    rows = parts["train"].head(3)
    src, src_len = writer._batch_src(list(rows["prompt"]), list(rows["form"]), list(rows["genre"]))
    gen = torch.Generator().manual_seed(0)
    tokens, mask = sample_sequences(writer, src, src_len, 9, 1.0, gen)
    disc = Discriminator(writer.config.vocab_size, writer.config.pad_id, DiscriminatorConfig(emb_dim=8, hidden=8))
    rewards = rollout_rewards(writer, disc.eval(), src, src_len, tokens, mask, rollouts=3, temperature=1.0,
                              generator=gen)
    assert rewards.shape == tokens.shape
    assert float(rewards.min()) >= 0.0 and float(rewards.max()) <= 1.0
    assert bool(((rewards > 0) == (mask > 0)).all())  # every valid step is rewarded, padding is not


def test_dense_returns_by_hand():
    rewards = torch.tensor([[1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert dense_returns(rewards, mask, 0.5).tolist() == [[1.5, 1.0, 0.0]]


@pytest.fixture(scope="module")
def trained_gan(parts, tiny_tokenizer):
    start = tiny_writer(tiny_tokenizer)
    cfg = GanConfig(rounds=2, d_pretrain_steps=3, batch_size=8, max_len=12, eval_prompts=4, eval_max_new_tokens=12)
    return train_gan(start, parts["train"], parts["validation"].head(12), cfg, DiscriminatorConfig(emb_dim=16,
                                                                                                 hidden=16))


def test_adversarial_training_history_and_untouched_start(trained_gan, tiny_tokenizer):
    result = trained_gan
    assert list(result.history["round"]) == [0, 1, 2] and result.stop_reason == "completed"
    assert {"mean_reward", "d_acc_real", "d_acc_fake", "g_mle_loss", "val_ppl_word", "bleu4", "self_bleu4"} <= set(
        result.history.columns)
    changed = any(not torch.equal(a, b) for a, b in zip(result.writer.net.state_dict().values(),
                                                        result.mle_writer.net.state_dict().values(), strict=True))
    assert changed, "adversarial rounds must move the generator (and leave the MLE start as it was)"


def test_save_load_identical_generations_and_family(trained_gan, tmp_path):
    writer = trained_gan.writer
    settings = GenerationSettings(max_new_tokens=15, seed=4)
    loaded = load_model(writer.save(tmp_path / "gan"))
    assert isinstance(loaded, GanWriter) and loaded.family == "gan"
    assert loaded.generate([PROMPT], settings) == writer.generate([PROMPT], settings)
    assert "".join(loaded.stream(PROMPT, settings)) == writer.generate([PROMPT], settings)[0]


def test_quality_diversity_sweep(trained_gan, parts):
    frame = quality_diversity({"mle": trained_gan.mle_writer, "gan": trained_gan.writer},
                              parts["validation"].head(4), [0.7, 1.2], 10, {"mle": 10.0, "gan": 11.0})
    assert list(frame["model"]) == ["mle", "mle", "gan", "gan"]
    assert frame[["bleu4", "self_bleu4", "distinct2"]].map(lambda v: 0 <= v <= 1).all().all()


def test_divergence_stops_and_keeps_the_last_good_weights(parts, tiny_tokenizer, monkeypatch):
    import training.gan as gt

    calls = {"n": 0}
    real_step = gt.generator_step

    def exploding(writer, *args, **kwargs):
        calls["n"] += 1
        stats = real_step(writer, *args, **kwargs)
        if calls["n"] == 2:
            with torch.no_grad():
                for p in writer.net.parameters():
                    p.fill_(float("nan"))
            stats["g_loss"] = float("nan")
        return stats

    monkeypatch.setattr(gt, "generator_step", exploding)
    cfg = GanConfig(rounds=4, d_pretrain_steps=1, batch_size=4, max_len=8, eval_prompts=2, eval_max_new_tokens=6)
    result = gt.train_gan(tiny_writer(tiny_tokenizer), parts["train"], parts["validation"].head(4), cfg,
                          DiscriminatorConfig(emb_dim=8, hidden=8))
    assert result.stop_reason.startswith("diverged: non-finite loss in round 2")
    assert list(result.history["round"]) == [0, 1]
    assert all(torch.isfinite(p).all() for p in result.writer.net.parameters())


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=names("adversarial", "pre-trained")):
        GanConfig(start_from="scratch", pretrain_epochs=0, rounds=3)
    with pytest.raises(ValueError, match=names("rollouts", "≥ 1")):
        GanConfig(reward="rollout", rollouts=0)
    with pytest.raises(ValueError, match=names("reward")):
        GanConfig(reward="gumbel")
    from pydantic import TypeAdapter, ValidationError

    with pytest.raises(ValidationError, match="roundz"):  # as ZenML validates the step's ``gan`` parameter
        TypeAdapter(GanConfig).validate_python({"roundz": 3})
    from models.gan import check_conditioning

    with pytest.raises(ValueError, match=names("use_prompt")):
        check_conditioning(GanConfig(conditional=True), DiscriminatorConfig(use_prompt=False))


def test_verdict_says_plainly_whether_the_gan_helped():
    import pandas as pd

    from training.gan_study import verdict

    def table(gan_bleu):
        rows = [("mle", t, b, sb) for t, b, sb in ((0.7, 0.10, 0.70), (1.0, 0.09, 0.63))]
        rows += [("gan", t, b, sb) for t, b, sb in ((0.7, gan_bleu, 0.69), (1.0, 0.08, 0.62))]
        frame = pd.DataFrame(rows, columns=["model", "temperature", "bleu4", "self_bleu4"])
        frame["val_ppl_word"] = [1.6, 1.6, 1.7, 1.7]
        return frame

    assert verdict(table(0.1004)).startswith("Adversarial training did not help")  # +0.0004: noise
    assert verdict(table(0.12)).startswith("Adversarial training helped at 1 of 2 temperatures")
    assert "1.60 (MLE) → 1.70 (GAN)" in verdict(table(0.12))
