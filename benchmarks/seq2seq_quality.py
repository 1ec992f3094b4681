r"""Quality of the seq2seq family, and the attention ablation, on one dataset with one budget.

Usage:
    python -m benchmarks.seq2seq_quality                          # built-in corpus, default profile's model
    python -m benchmarks.seq2seq_quality --dataset "writingprompts:../shared/datasets/writingprompts" \\
        --epochs 3 --attention bahdanau none

Trains one model per ``--attention`` kind on the same split, tokenizer, budget and seed, and reports the
validation per-word perplexity of each next to a unigram baseline, plus how often a generated piece
mentions the names, places and things of its prompt (capitalised words and nouns after "a"/"the" that
appear in the prompt), and two samples per model.
"""

from __future__ import annotations

import argparse
import logging
import re
import time

from benchmarks.common import SMOKE_PROFILE, parse_args, prepare
from models.contract import GenerationSettings
from models.seq2seq import build_writer
from training.config import TrainConfig
from training.seq2seq import train, unigram_per_word_ppl

STOP = {"write", "tell", "story", "poem", "fable", "about", "who", "where", "with", "and", "the", "a", "an", "in",
        "of", "that", "must", "what", "happens", "short", "me", "set", "out", "to", "finds", "meets", "his", "her",
        "named", "teaches", "lesson", "moral", "starring", "rhyming", "compose", "begins", "titled"}


def prompt_terms(prompt: str) -> set[str]:
    """Content words of a prompt (lower-cased, stop words and short words dropped)."""
    return {w for w in re.findall(r"[a-z]+", prompt.lower()) if len(w) > 3 and w not in STOP}


def relevance(prompts: list[str], texts: list[str]) -> float:
    """Mean share of a prompt's content words that its generated text mentions."""
    shares = []
    for p, t in zip(prompts, texts, strict=True):
        terms = prompt_terms(p)
        if terms:
            words = set(re.findall(r"[a-z]+", t.lower()))
            shares.append(len(terms & words) / len(terms))
    return sum(shares) / max(1, len(shares))


def main(argv: list[str] | None = None) -> int:
    """Trains and compares; prints a table, samples and one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="source spec(s); default: the default profile's")
    parser.add_argument("--profile", default="configs/default.yaml")
    parser.add_argument("--attention", nargs="+", default=["bahdanau", "none"])
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    parser.add_argument("--max-train-pieces", type=int, help="override the profile's max_train_pieces")
    parser.add_argument("--samples", type=int, default=40, help="validation prompts for relevance")
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, dataset=None, epochs=1, max_train_pieces=16, samples=2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    data = prepare(args.profile, args.dataset)
    steps, specs, tok = data.steps, data.specs, data.tokenizer
    tr, va = data.part("train"), data.part("validation")
    model_cfg = dict(steps["train_seq2seq"]["parameters"]["model"])
    train_cfg = dict(steps["train_seq2seq"]["parameters"]["train_config"])
    if args.epochs:
        train_cfg["epochs"] = args.epochs
    if args.max_train_pieces:
        train_cfg["max_train_pieces"] = args.max_train_pieces
    unigram = unigram_per_word_ppl(tr["text"], va["text"], tok)
    sample_rows = va.head(args.samples)
    rows, samples = [], {}
    for kind in args.attention:
        writer = build_writer(tok, **{**model_cfg, "attention": kind})
        t0 = time.perf_counter()
        history = train(writer, tr, va, TrainConfig(**train_cfg))
        seconds = time.perf_counter() - t0
        best = history.loc[history["val_loss"].idxmin()]
        texts = [writer.generate([r.prompt], GenerationSettings(max_new_tokens=160, seed=0, form=r.form,
                                                                genre=r.genre, temperature=0.7))[0]
                 for r in sample_rows.itertuples()]
        rows.append({"attention": kind, "epochs": len(history), "train_s": seconds,
                     "val_ppl_word": float(best["val_ppl_word"]), "val_loss": float(best["val_loss"]),
                     "relevance": relevance(list(sample_rows["prompt"]), texts),
                     "tokens_per_s": float(history["tokens_per_s"].median())})
        samples[kind] = list(zip(sample_rows["prompt"][:2], texts[:2], strict=True))
    used = train_cfg.get("max_train_pieces") or len(tr)
    print(f"\ndataset: {' + '.join(specs)}; train {len(tr)} pieces (used {used}), validation {len(va)}; "
          f"vocab {len(tok)}")
    print(f"{'attention':<10}{'epochs':>7}{'train s':>9}{'val ppl/word':>14}{'val loss':>10}{'relevance':>11}"
          f"{'tok/s':>8}")
    for r in rows:
        print(f"{r['attention']:<10}{r['epochs']:>7}{r['train_s']:>9.0f}{r['val_ppl_word']:>14.2f}"
              f"{r['val_loss']:>10.3f}{r['relevance']:>11.2f}{r['tokens_per_s']:>8.0f}")
    print(f"{'unigram':<10}{'':>7}{'':>9}{unigram:>14.2f}")
    for kind, pairs in samples.items():
        print(f"\n--- samples, attention={kind}")
        for prompt, text in pairs:
            print(f"PROMPT: {prompt}\n{text}\n")
    summary = ", ".join(f"{r['attention']} {r['val_ppl_word']:.2f}" for r in rows)
    print(f"summary: validation per-word perplexity {summary}; unigram baseline {unigram:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
