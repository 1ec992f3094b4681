"""The GAN step's logic: load or pre-train the MLE generator, train adversarially, compare, save.

Kept apart from the ZenML step so that it is tested without a stack.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from models.configs import DiscriminatorConfig, GanConfig, Seq2SeqShape
from training.config import TrainConfig
from training.gan import quality_diversity, train_gan
from training.seq2seq import encode_frame, evaluate

log = logging.getLogger(__name__)


@dataclass
class GanStudy:
    """The GAN step's outputs."""

    model_dir: Path
    history: pd.DataFrame
    comparison: pd.DataFrame
    plot: Image.Image
    summary: dict[str, Any]


def verdict(comparison: pd.DataFrame, min_gain: float = 0.005) -> str:
    """One plain sentence: does the GAN beat its MLE start on the quality–diversity trade-off?

    The GAN "helps" at a temperature when its BLEU-4 is higher by at least ``min_gain`` (smaller
    differences are sampling noise at these sample sizes) without a higher self-BLEU-4 than the MLE
    generator's at the *closest* MLE self-BLEU-4 over the sweep (a temperature-tuned MLE baseline, as in
    Caccia et al. 2020).
    """
    mle, gan = comparison[comparison["model"] == "mle"], comparison[comparison["model"] == "gan"]
    wins = 0
    for _, row in gan.iterrows():
        nearest = mle.iloc[(mle["self_bleu4"] - row["self_bleu4"]).abs().argsort().iloc[0]]
        if row["bleu4"] >= nearest["bleu4"] + min_gain and row["self_bleu4"] <= nearest["self_bleu4"] + 1e-9:
            wins += 1
    ppl_mle, ppl_gan = float(mle["val_ppl_word"].iloc[0]), float(gan["val_ppl_word"].iloc[0])
    ppl = f"validation per-word perplexity {ppl_mle:.2f} (MLE) → {ppl_gan:.2f} (GAN)"
    if wins == 0:
        return ("Adversarial training did not help: no GAN temperature beats the temperature-tuned MLE "
                f"generator by more than {min_gain} BLEU-4; {ppl}.")
    return (f"Adversarial training helped at {wins} of {len(gan)} temperatures (BLEU-4 higher by ≥ {min_gain} at "
            f"no loss of diversity against the nearest MLE point); {ppl}.")


def run_gan_study(split: pd.DataFrame, tokenizer_dir: Path, seq2seq_dir: Path, cfg: GanConfig,
                  disc_cfg: DiscriminatorConfig, generator_cfg: Seq2SeqShape, pretrain_cfg: TrainConfig,
                  temperatures: Sequence[float], comparison_prompts: int,
                  on_round: Callable[[int, dict[str, float]], None] | None = None) -> GanStudy:
    """Loads (or pre-trains) the MLE generator, trains the GAN, runs the temperature sweep and saves the GAN.

    Returns:
        The saved GAN directory, per-round history, the comparison table, its plot and a summary.
    """
    from models.seq2seq import Seq2SeqWriter, build_writer
    from models.tokenizer import load_tokenizer
    from training.plots import gan_tradeoff
    from training.seq2seq import train

    train_part, val_part = split[split["split"] == "train"], split[split["split"] == "validation"]
    if cfg.start_from == "seq2seq":
        start = Seq2SeqWriter.load(seq2seq_dir)
        pretrain = None
    else:
        start = build_writer(load_tokenizer(tokenizer_dir), **asdict(generator_cfg))

        def pretrain(writer: Seq2SeqWriter) -> None:
            train(writer, train_part, val_part, replace(pretrain_cfg, epochs=cfg.pretrain_epochs))

    result = train_gan(start, train_part, val_part, cfg, disc_cfg, on_round=on_round, pretrain=pretrain)
    val_examples = encode_frame(result.writer, val_part)
    ppl = {"mle": evaluate(result.mle_writer, val_examples)["val_ppl_word"],
           "gan": evaluate(result.writer, val_examples)["val_ppl_word"]}
    comparison = quality_diversity({"mle": result.mle_writer, "gan": result.writer},
                                   val_part.head(comparison_prompts), temperatures, cfg.eval_max_new_tokens, ppl)
    sentence = verdict(comparison)
    log.info("%s", sentence)
    summary = {"stop_reason": result.stop_reason, "verdict": sentence, "rounds": int(result.history["round"].max()),
               "val_ppl_word_mle": ppl["mle"], "val_ppl_word": ppl["gan"]}
    result.writer.metadata = {"val_ppl_word": ppl["gan"], "start_from": cfg.start_from, "reward": cfg.reward,
                              "stop_reason": result.stop_reason, "verdict": sentence}
    if not all(math.isfinite(v) for v in ppl.values()):
        raise FloatingPointError(f"GAN evaluation gave a non-finite perplexity {ppl}; the model is not saved")
    model_dir = result.writer.save(Path(tempfile.mkdtemp(prefix="gan-")))
    return GanStudy(model_dir, result.history, comparison, gan_tradeoff(comparison, result.history), summary)
