r"""Quality of the model families at equal wall-clock training time on the same data.

Usage:
    python -m benchmarks.family_quality                                   # built-in corpus, 240 s each
    python -m benchmarks.family_quality --budget-s 300 --families seq2seq scratch transformer \\
        --dataset "tinystories:../shared/datasets/tinystories"

Families: ``seq2seq`` (attention LSTM), ``transformer`` (the profile's: the pretrained base fine-tuned with
LoRA in the default profile), ``scratch`` (GPT-2 from scratch on the shared tokenizer, the profile's
Transformer settings with no base), ``zero-shot`` (the pretrained base with no training, for reference).
For WritingPrompts it also reports per-word perplexity over the *original tokenised words* of the
fairseq files (``ca n't`` is two words, ``<newline>`` one), the unit Fan et al. (2018) report in.

Every family trains on the same split and shared tokenizer, with its profile settings (epochs,
learning-rate schedule), on as many training pieces as fit ``--budget-s`` seconds at its throughput,
measured first on a few batches; the budget also caps training as a safety net. So each family's
schedule runs to its end within the same wall-clock time.
Then each is measured the same way: validation per-word perplexity from ``score()`` (total NLL of each
piece given its prompt ÷ its words; tokenizer-independent), prompt relevance of samples (see
``benchmarks.seq2seq_quality``), and two samples for the same prompts.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import time
from typing import Any

from benchmarks.common import SMOKE_PROFILE, Prepared, parse_args, prepare, scratch_settings
from benchmarks.seq2seq_quality import relevance
from models.contract import GenerationSettings, WriterModel
from training.seq2seq import unigram_per_word_ppl


def pieces_for_budget(rate: float, tokens_per_piece: float, epochs: int, budget_s: float, available: int) -> int:
    """Training pieces whose ``epochs`` passes take about 90 % of the budget at ``rate`` tokens/s."""
    return max(32, min(available, int(0.9 * budget_s * rate / (epochs * tokens_per_piece))))


def train_family(name: str, data: Prepared, budget_s: float) -> tuple[WriterModel, int]:
    """Builds and trains one family with its profile settings on what fits the budget; returns it and the pieces."""
    params = data.steps["train_seq2seq" if name == "seq2seq" else "train_transformer"]["parameters"]
    tr, va = data.part("train"), data.part("validation")
    train_cfg = {**params["train_config"], "time_budget_s": budget_s}
    if name == "seq2seq":
        from benchmarks.train_seq2seq import train_tokens_per_s
        from models.seq2seq import build_writer
        from training.config import TrainConfig
        from training.seq2seq import collate, encode_frame, make_batches, train

        writer = build_writer(data.tokenizer, **params["model"])
        examples = encode_frame(writer, tr)
        probe = [collate(b, writer) for b in make_batches(examples, train_cfg["batch_size"], random.Random(0))[:7]]
        rate = train_tokens_per_s(writer, probe, bf16=False)
        per_piece = statistics.mean(len(e.tgt) + 1 for e in examples)
        pieces = pieces_for_budget(rate, per_piece, train_cfg["epochs"], budget_s, len(tr))
        writer = build_writer(data.tokenizer, **params["model"])  # fresh weights after the probe
        train(writer, tr, va, TrainConfig(**{**train_cfg, "max_train_pieces": pieces}))
        return writer, pieces
    if name in ("transformer", "scratch", "zero-shot"):
        from benchmarks.train_transformer import train_tokens_per_s
        from models.transformer import TransformerConfig, build_transformer, collate_examples
        from training.config import TransformerTrainConfig
        from training.transformer import train_transformer

        model_params = dict(params["model"])
        if name == "scratch":  # GPT-2 from scratch: the dataclass's own sizes, no base, no adapter
            model_params = scratch_settings(model_params)
        if name == "zero-shot":
            model_params["adapter"] = "full"

        def fresh() -> Any:
            return build_transformer(data.tokenizer, TransformerConfig(**model_params),
                                     forms=sorted(tr["form"].unique()), genres=sorted(tr["genre"].unique()))

        if name == "zero-shot":
            return fresh(), 0

        writer = fresh()
        rows = [writer.encode_example(p, t, f, g)
                for p, t, f, g in zip(tr["prompt"], tr["text"], tr["form"], tr["genre"], strict=True)]
        size = train_cfg["batch_size"]
        probe = [collate_examples(rows[i * size: (i + 1) * size], writer.pad_id) for i in range(7)]
        rate = train_tokens_per_s(writer.model, probe, bf16=False)
        per_piece = statistics.mean(len(ids) for ids, _ in rows)
        pieces = pieces_for_budget(rate, per_piece, train_cfg["epochs"], budget_s, len(tr))
        writer = fresh()
        train_transformer(writer, tr, va, TransformerTrainConfig(**{**train_cfg, "max_train_pieces": pieces,
                                                                     "max_val_pieces": min(32, len(va)),
                                                                     "progress_bar": False}))
        return writer, pieces
    raise SystemExit(f"unknown family '{name}'")


def per_word_ppl(writer: Any, frame: Any, token_ratio: list[float] | None = None) -> tuple[float, float]:
    """exp(total NLL ÷ total words) of the pieces given their prompts, and the same over original tokens.

    ``token_ratio[i]`` is piece ``i``'s original tokens per whitespace word (WritingPrompts); the second
    figure divides by the scored words times that ratio (NaN without ratios).
    """
    scored = writer.score(list(frame["prompt"]), list(frame["text"]), forms=list(frame["form"]),
                          genres=list(frame["genre"]))
    nll = sum(n for n, _ in scored)
    words = math.exp(nll / max(1, sum(w for _, w in scored)))
    if not token_ratio:
        return words, float("nan")
    tokens = sum(w * r for (_, w), r in zip(scored, token_ratio, strict=True))
    return words, math.exp(nll / max(1.0, tokens))


def writingprompts_token_ratios(frame: Any, specs: list[str]) -> list[float] | None:
    """Original fairseq tokens per detokenised word for each WritingPrompts piece (None for other data).

    Read from the raw ``.wp_target`` line behind each piece's id (``wp-<split>-<line>``).
    """
    from pathlib import Path

    from corpus.cleaning import fix_writingprompts_text

    roots = [s.split(":", 1)[1].split("?", 1)[0] for s in specs if s.startswith("writingprompts:")]
    if not roots or not frame["id"].str.startswith("wp-").all():
        return None
    ratios, cache = [], {}
    for piece_id in frame["id"]:
        _, split, line = piece_id.split("-", 2)
        key = (roots[0], split)
        if key not in cache:
            cache[key] = (Path(roots[0]) / f"{split}.wp_target").read_text(encoding="utf-8").splitlines()
        raw = cache[key][int(line)]
        ratios.append(len(raw.split()) / max(1, len(fix_writingprompts_text(raw, force=True).split())))
    return ratios


def main(argv: list[str] | None = None) -> int:
    """Trains every family under the same budget; prints a table, samples and one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="source spec(s); default: the profile's")
    parser.add_argument("--profile", default="configs/default.yaml")
    parser.add_argument("--families", nargs="+", default=["seq2seq", "scratch", "transformer"],
                        choices=["seq2seq", "scratch", "transformer", "zero-shot"])
    parser.add_argument("--budget-s", type=float, default=240.0, help="training seconds per family")
    parser.add_argument("--samples", type=int, default=30, help="validation prompts for relevance")
    parser.add_argument("--max-val", type=int, default=300, help="validation pieces scored")
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, dataset=None, budget_s=1.0, samples=2, max_val=8)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = prepare(args.profile, args.dataset)
    tr, va = data.part("train"), data.part("validation").head(args.max_val)
    ratios = writingprompts_token_ratios(va, data.specs)
    rows, samples = [], {}
    for name in args.families:
        t0 = time.perf_counter()
        writer, pieces = train_family(name, data, args.budget_s)
        seconds = time.perf_counter() - t0
        texts = [writer.generate([r.prompt], GenerationSettings(max_new_tokens=160, seed=0, form=r.form,
                                                                genre=r.genre, temperature=0.7))[0]
                 for r in va.head(args.samples).itertuples()]
        ppl, ppl_tokens = per_word_ppl(writer, va, ratios)
        rows.append({"family": name, "train_s": seconds, "pieces": pieces, "val_ppl_word": ppl,
                     "val_ppl_fan": ppl_tokens, "relevance": relevance(list(va["prompt"][: args.samples]), texts)})
        samples[name] = list(zip(va["prompt"][:2], texts[:2], strict=True))
    unigram = unigram_per_word_ppl(tr["text"], va["text"], data.tokenizer)
    print(f"\ndataset: {' + '.join(data.specs)}; train {len(tr)} pieces, validation scored {len(va)}; "
          f"budget {args.budget_s:.0f} s per family")
    print(f"{'family':<13}{'pieces':>8}{'train s':>9}{'val ppl/word':>14}{'ppl/orig token':>16}{'relevance':>11}")
    for r in rows:
        print(f"{r['family']:<13}{r['pieces']:>8}{r['train_s']:>9.0f}{r['val_ppl_word']:>14.2f}"
              f"{r['val_ppl_fan']:>16.2f}{r['relevance']:>11.2f}")
    print(f"{'unigram':<13}{'':>9}{unigram:>14.2f}")
    for name, pairs in samples.items():
        print(f"\n--- samples, {name}")
        for prompt, text in pairs:
            print(f"PROMPT: {prompt}\n{text}\n")
    summary = ", ".join(f"{r['family']} {r['val_ppl_word']:.2f}" for r in rows)
    print(f"summary: validation per-word perplexity after {args.budget_s:.0f} s each: {summary}; unigram {unigram:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
