"""Benchmark: seq2seq training throughput (fp32 vs bf16, side by side), share of matmul peak, generation speed.

Usage:
    python -m benchmarks.train_seq2seq                 # the default profile's model on built-in data
    python -m benchmarks.train_seq2seq --runs 5 --batches 6 --dataset "tinystories:../shared/datasets/..."

Training: ``--runs`` timed runs of ``--batches`` optimizer steps each (after one warm-up step), in fp32
and in bf16 autocast alternately, so both see the same machine state; the median target tokens/s of
each and their ratio are reported. Model FLOPs utilisation is ``6 · N · tokens/s`` divided by the peak
of a 2048³ fp32 matmul timed in the same run (N = all parameters; the tied embedding is the output
layer's matmul). Generation: tokens/s for one prompt and for a batch of 16, exactly 128 new tokens each
(``<eos>`` suppressed, so rows that would end early do not skew the batch), median of ``--runs``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from benchmarks.common import SMOKE_PROFILE, matmul_peak, parse_args, prepare
from models.contract import GenerationSettings
from models.seq2seq import build_writer
from training.seq2seq import collate, encode_frame, make_batches


def train_tokens_per_s(writer, batches, bf16: bool) -> float:  # noqa: ANN001
    """Target tokens per second over ``batches`` (one warm-up step first)."""
    net = writer.net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step(b: dict) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss, _ = net(b["src"], b["src_len"], b["tgt_in"], b["tgt_out"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(batches[0])
    tokens, t0 = 0, time.perf_counter()
    for b in batches[1:]:
        step(b)
        tokens += int((b["tgt_out"] != writer.config.pad_id).sum())
    return tokens / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints tables and one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="source spec(s); default: built-in, 1500 pieces")
    parser.add_argument("--profile", default="configs/default.yaml")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=5, help="optimizer steps per timed run")
    parser.add_argument("--skip-bf16", action="store_true", help="only fp32 (bf16 is very slow without native support)")
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, dataset=None, runs=1, batches=1)
    data = prepare(args.profile, args.dataset or ["builtin?n=1500"])
    steps, split, tok, tr = data.steps, data.split, data.tokenizer, data.part("train")
    model_cfg = steps["train_seq2seq"]["parameters"]["model"]
    batch_size = steps["train_seq2seq"]["parameters"]["train_config"]["batch_size"]
    torch.manual_seed(0)
    writer = build_writer(tok, **model_cfg)
    n_params = sum(p.numel() for p in writer.net.parameters())
    examples = encode_frame(writer, tr)
    batches = [collate(b, writer) for b in make_batches(examples, batch_size, random.Random(0))[: args.batches + 1]]
    mean_len = statistics.mean(int((b["tgt_out"] != writer.config.pad_id).sum()) / b["tgt_out"].size(0)
                               for b in batches)

    peak = matmul_peak()
    fp32, bf16 = [], []
    for _ in range(args.runs):
        fp32.append(train_tokens_per_s(writer, batches, bf16=False))
        if not args.skip_bf16:
            bf16.append(train_tokens_per_s(writer, batches[:3], bf16=True))
    print(f"model: {model_cfg['attention']} attention, emb {model_cfg['emb_dim']}, hidden {model_cfg['hidden']}, "
          f"{n_params / 1e6:.2f} M parameters, vocab {len(tok)}; batch {batch_size}, mean target {mean_len:.0f} tokens")
    print(f"matmul peak (fp32, 2048³): {peak:.1f} GFLOP/s; bf16: {matmul_peak(1024, torch.bfloat16, 3):.1f} GFLOP/s")
    print(f"\n{'precision':<10}{'train tokens/s (median)':>25}{'runs':>6}{'MFU':>8}")
    f_med = statistics.median(fp32)
    print(f"{'fp32':<10}{f_med:>25.0f}{len(fp32):>6}{6 * n_params * f_med / (peak * 1e9):>8.1%}")
    ratio = ""
    if bf16:
        b_med = statistics.median(bf16)
        print(f"{'bf16':<10}{b_med:>25.0f}{len(bf16):>6}{6 * n_params * b_med / (peak * 1e9):>8.1%}")
        ratio = f"; bf16/fp32 = {b_med / f_med:.2f}"
    writer.net.eval()
    with torch.no_grad():  # every row generates exactly 128 tokens: no early <eos> to skew the batch rate
        writer.net.out_bias[writer.config.eos_id] = -1e9
    prompts = list(split[split["split"] == "validation"]["prompt"][:16])
    settings = GenerationSettings(max_new_tokens=128, seed=0, repetition_penalty=1.0)
    gen = {}
    for label, batch in (("1 prompt", prompts[:1]), ("16 prompts", prompts[:16])):
        rates = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            with torch.inference_mode():
                ids = writer._sample(batch, settings)
            rates.append(sum(len(r) for r in ids) / (time.perf_counter() - t0))
        gen[label] = statistics.median(rates)
    print(f"\n{'generation':<12}{'tokens/s (median)':>20}")
    for label, rate in gen.items():
        print(f"{label:<12}{rate:>20.0f}")
    print(f"summary: training {f_med:.0f} tokens/s fp32 ({6 * n_params * f_med / (peak * 1e9):.1%} of the "
          f"{peak:.0f} GFLOP/s matmul peak){ratio}; generation {gen['1 prompt']:.0f} tokens/s for 1 prompt, "
          f"{gen['16 prompts']:.0f} for 16")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
