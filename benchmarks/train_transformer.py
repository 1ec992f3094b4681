"""Benchmark: Transformer training throughput (fp32 vs bf16) and MFU at several sizes; generation speed.

Usage:
    python -m benchmarks.train_transformer                 # built-in data, the profile's size and two others
    python -m benchmarks.train_transformer --runs 5 --sizes "2x128x4,4x192x4,6x384x6" --skip-bf16

Sizes are ``LAYERSxWIDTHxHEADS``; ``profile`` means the default profile's model. Training: ``--runs``
timed runs of ``--batches`` optimizer steps each (one warm-up step first), fp32 and bf16 autocast
alternately so both see the same machine state; median tokens/s (every non-padding input token) and
the bf16/fp32 ratio. Model FLOPs utilisation = ``6 · N · tokens/s`` ÷ a 2048³ fp32 matmul timed in the
same run (N = distinct parameters; the tied embedding is the output layer's matmul); ``MFU+attn`` adds
the attention score FLOPs (``12 · layers · width · T``). Generation (the profile's size): 128 new tokens
per row for 1 prompt and for 16 (end token suppressed so every row runs the full length), through our
wrapper (``TransformerWriter.generate``: encoding, left padding, seeding, decoding) and through plain
``model.generate`` on the same inputs and ``GenerationConfig``, alternating; the bandwidth bound is
memory bandwidth ÷ fp32 weight bytes (one full weight read per decoding step).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from benchmarks.common import SMOKE_PROFILE, matmul_peak, memory_bandwidth, parse_args, prepare, scratch_settings
from models.contract import GenerationSettings
from models.transformer import TransformerConfig, build_transformer, collate_examples, parameter_count


def parse_size(text: str, profile_model: dict[str, Any]) -> dict[str, Any]:
    """``"4x192x4"`` → layer/width/head overrides; ``"profile"`` → the profile's model, from scratch.

    This benchmark measures GPT-2 from scratch, so a base and its adapter settings are left out
    (the default profile's Transformer fine-tunes a pretrained base; ``benchmarks.generate_speed`` measures it).
    """
    profile_model = scratch_settings(profile_model)
    if text == "profile":
        return dict(profile_model)
    try:
        layers, width, heads = (int(x) for x in text.lower().split("x"))
    except ValueError as exc:
        raise SystemExit(f"--sizes: '{text}' is not LAYERSxWIDTHxHEADS (e.g. 4x192x4) or 'profile'") from exc
    return {**profile_model, "n_layer": layers, "n_embd": width, "n_head": heads}


def train_tokens_per_s(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], bf16: bool) -> float:
    """Input tokens per second over ``batches`` (one warm-up step first)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(b: dict[str, torch.Tensor]) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**b).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step(batches[0])
    tokens, t0 = 0, time.perf_counter()
    for b in batches[1:]:
        step(b)
        tokens += int(b["attention_mask"].sum())
    return tokens / (time.perf_counter() - t0)


def generation_rates(writer: Any, prompts: list[str], runs: int) -> dict[str, tuple[float, float]]:
    """``label -> (ours tokens/s, plain generate tokens/s)`` for 1 and 16 prompts, 128 tokens per row.

    Ours is the family's sampling loop over the KV cache (one seeded generator per row); plain is
    ``model.generate`` with the same sampling settings. Both write exactly 128 tokens per row.
    """
    from transformers import GenerationConfig

    settings = GenerationSettings(max_new_tokens=128, seed=0, repetition_penalty=1.0)
    plain_cfg = GenerationConfig(do_sample=True, temperature=settings.temperature, top_k=settings.top_k,
                                 top_p=settings.top_p, max_new_tokens=128, min_new_tokens=128,
                                 pad_token_id=writer.pad_id, eos_token_id=writer.eos_id)
    out = {}
    for label, batch in (("1 prompt", prompts[:1]), ("16 prompts", prompts[:16])):
        ids, mask, _ = writer._prefixes(batch, settings)
        ours, plain = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            steps = sum(1 for _ in writer._sample_iter(batch, settings, ignore_end=True))
            ours.append(steps * len(batch) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            with torch.inference_mode():
                torch.manual_seed(0)
                writer.model.generate(input_ids=ids, attention_mask=mask, generation_config=plain_cfg)
            plain.append(128 * len(batch) / (time.perf_counter() - t0))
        out[label] = (statistics.median(ours), statistics.median(plain))
    return out


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints tables and one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="source spec(s); default: built-in, 1500 pieces")
    parser.add_argument("--profile", default="configs/default.yaml")
    parser.add_argument("--sizes", default="2x128x4,profile,6x384x6", help="comma-separated LxWxH or 'profile'")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4, help="optimizer steps per timed run")
    parser.add_argument("--skip-bf16", action="store_true", help="only fp32")
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, dataset=None, runs=1, batches=1, sizes="profile,2x32x2")
    data = prepare(args.profile, args.dataset or ["builtin?n=1500"])
    params = data.steps["train_transformer"]["parameters"]
    batch_size = params["train_config"]["batch_size"]
    train_part = data.part("train")
    peak = matmul_peak()
    print(f"matmul peak (fp32, 2048³): {peak:.1f} GFLOP/s; bf16 (1024³): {matmul_peak(1024, torch.bfloat16, 3):.1f}"
          f" GFLOP/s; memory bandwidth {memory_bandwidth():.1f} GB/s")
    print(f"\n{'size (LxWxH)':<14}{'params':>9}{'T':>6}{'fp32 tok/s':>12}{'MFU':>7}{'MFU+attn':>10}"
          f"{'bf16 tok/s':>12}{'bf16/fp32':>11}")
    default_row: dict[str, float] = {}
    for size in args.sizes.split(","):
        cfg = TransformerConfig(**parse_size(size.strip(), params["model"]))
        torch.manual_seed(0)
        writer = build_transformer(data.tokenizer, cfg)
        n = parameter_count(writer.model)
        rows = [writer.encode_example(p, t, f, g) for p, t, f, g in
                zip(train_part["prompt"], train_part["text"], train_part["form"], train_part["genre"], strict=True)]
        rows.sort(key=lambda r: len(r[0]))  # length-grouped like the Trainer's sampler: little padding
        stride = max(1, len(rows) // (args.batches + 1) // batch_size)
        batches = [collate_examples(rows[i * stride * batch_size: i * stride * batch_size + batch_size], writer.pad_id)
                   for i in range(args.batches + 1)]
        seq = statistics.mean(int(b["attention_mask"].sum()) / b["input_ids"].size(0) for b in batches)
        fp32, bf16 = [], []
        for _ in range(args.runs):
            fp32.append(train_tokens_per_s(writer.model, batches, bf16=False))
            if not args.skip_bf16:
                bf16.append(train_tokens_per_s(writer.model, batches[:3], bf16=True))
        f_med = statistics.median(fp32)
        mfu = 6 * n * f_med / (peak * 1e9)
        mfu_attn = (6 * n + 12 * cfg.n_layer * cfg.n_embd * seq) * f_med / (peak * 1e9)
        b_med = statistics.median(bf16) if bf16 else 0.0
        b_text = f"{b_med:>12.0f}{b_med / f_med:>11.2f}" if bf16 else f"{'-':>12}{'-':>11}"
        label = f"{cfg.n_layer}x{cfg.n_embd}x{cfg.n_head}" + (" *" if size.strip() == "profile" else "")
        print(f"{label:<14}{n / 1e6:>8.2f}M{seq:>6.0f}{f_med:>12.0f}{mfu:>7.1%}{mfu_attn:>10.1%}{b_text}")
        if size.strip() == "profile":
            default_row = {"tok_s": f_med, "mfu": mfu, "mfu_attn": mfu_attn, "params": n}
            gen_writer = writer
    print("* the profile's size")
    if not default_row:
        print("summary: (no 'profile' size measured)")
        return 0
    gen_writer.model.eval()
    prompts = list(data.part("validation")["prompt"][:16])
    gen = generation_rates(gen_writer, prompts, args.runs)
    bound = memory_bandwidth() * 1e9 / (4 * default_row["params"])
    print(f"\n{'generation':<12}{'ours tok/s':>12}{'plain generate':>16}{'ours/plain':>12}")
    for label, (ours, plain) in gen.items():
        print(f"{label:<12}{ours:>12.0f}{plain:>16.0f}{ours / plain:>12.2f}")
    print(f"bandwidth bound for 1 prompt (weights read once per step): {bound:.0f} tokens/s")
    one, sixteen = gen["1 prompt"], gen["16 prompts"]
    print(f"summary: default size trains at {default_row['tok_s']:.0f} tokens/s fp32 ({default_row['mfu']:.1%} MFU, "
          f"{default_row['mfu_attn']:.1%} with attention FLOPs); generation {one[0]:.0f} tokens/s for 1 prompt "
          f"({one[0] / one[1]:.2f}× plain generate), {sixteen[0]:.0f} for 16 ({sixteen[0] / sixteen[1]:.2f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
