"""The Transformer champion on PyTorch and on llama.cpp, side by side in one run.

For the same saved model (the registry's champion, a saved model directory, or the default base with a
seeded random LoRA adapter when neither is given) and each GGUF export asked for (``--quants``), it
measures, with medians over ``--runs``: batch-1 tokens/s writing ``--tokens`` new tokens, the time to the
first streamed text chunk, the per-word perplexity of fixed pieces (so a faster runtime that reads worse
is visible), and the memory-bandwidth bound of the bytes each runtime reads per token (PyTorch: every
Linear weight and the output head; llama.cpp: every tensor of the GGUF file), then the ratio to torch.

    python -m benchmarks.runtimes                           # the champion (or the base + an adapter)
    python -m benchmarks.runtimes --quants keep q8_0 f16 --runs 5 --threads 2
    python -m benchmarks.runtimes --model DIR               # a saved model directory
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import memory_bandwidth, parse_args
from benchmarks.generate_speed import DEFAULT_SPEC, PIECES, PROMPTS, weight_bytes
from models.configs import GGUF_EXPORTS
from models.contract import GenerationSettings
from models.transformer import TransformerConfig, TransformerWriter, build_transformer

MORE_PIECES = [("A tortoise who wants to fly asks the eagle for lessons.",
                "The eagle laughed, but it took the tortoise up all the same. High over the valley it let go, and "
                "the tortoise learned on the way down what it had not learned on the ground: to be content with "
                "the shell you have."),
               ("A colony ship wakes its crew a hundred years too early.",
                "Mara woke to the hum of the ship and a clock that said ninety-eight years remained. The others "
                "were still asleep. She walked the long corridor alone, counting the doors, and wondered who had "
                "pressed the button, and why.")]


def model_dirs(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """The saved model directory for each quant (re-exported from the torch model where it differs)."""
    if args.model:
        source = TransformerWriter.load(Path(args.model))
        label = str(args.model)
    else:
        champion = champion_dir(work)
        if champion is not None:
            source, label = TransformerWriter.load(champion), "the registry's champion"
        else:
            torch.manual_seed(0)
            config = TransformerConfig(base_model=args.spec, context=1024,
                                       lora_targets=["q_proj", "k_proj", "v_proj", "o_proj"])
            source = build_transformer(None, config, forms=["story", "fable", "poem"])
            for name, weights in source.model.named_parameters():
                if "lora_B" in name:  # a trained adapter is not zero: make this one change the model too
                    weights.data.normal_(0, 0.002)
            label = f"{args.spec} + a seeded random LoRA adapter (no champion in the registry)"
    print(f"model: {label}", flush=True)
    out = {}
    for quant in args.quants:
        source.config.gguf = quant
        out[quant] = source.save(work / f"model-{quant}")
    return out


def champion_dir(work: Path) -> Path | None:
    """The champion's saved model directory from the project's registry, if it is a Transformer."""
    try:
        from serving.champion import resolve_registry, saved_model_dir
        from serving.config import ModelSource

        provenance = resolve_registry(ModelSource())
    except Exception:  # no registry, no champion: the caller builds a model instead
        return None
    if provenance.family != "transformer":
        return None
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=provenance.source, dst_path=str(work / "champion"))
    return saved_model_dir(Path(local))


def written_ids(writer: Any, prompt: str, settings: GenerationSettings) -> list[int]:
    """The ids one request writes (either runtime)."""
    if writer.runtime == "torch":
        return writer._generate_ids([prompt], settings)[0]
    return list(writer._sample_ids(writer.request_prefix(prompt, settings), settings, settings.seed))


def measure(writer: Any, tokens: int, runs: int) -> dict[str, float]:
    """Median batch-1 tokens/s, first chunk and per-word perplexity of one runtime."""
    rates, firsts = [], []
    for i in range(runs):
        settings = GenerationSettings(max_new_tokens=tokens, seed=i, temperature=0.8, top_k=50, top_p=0.95)
        started = time.perf_counter()
        count = len(written_ids(writer, PROMPTS[i % len(PROMPTS)], settings))
        rates.append(count / (time.perf_counter() - started))
        started = time.perf_counter()
        stream = writer.stream(PROMPTS[(i + 1) % len(PROMPTS)], settings.replace(max_new_tokens=8))
        next(stream, None)
        firsts.append(time.perf_counter() - started)
        stream.close()
    pieces = PIECES + MORE_PIECES
    scored = writer.score([p for p, _ in pieces], [t for _, t in pieces])
    return {"tok_s": statistics.median(rates), "first_ms": 1000 * statistics.median(firsts),
            "ppl_word": math.exp(sum(n for n, _ in scored) / sum(w for _, w in scored))}


def main(argv: list[str] | None = None) -> int:
    """Runs the measurements and prints the table and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved Transformer model directory (default: the champion)")
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="the base when there is no champion")
    parser.add_argument("--quants", nargs="+", default=["keep", "q8_0"],
                        choices=[q for q in GGUF_EXPORTS if q != "none"], help="GGUF exports to measure")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parse_args(parser, argv, runs=1, tokens=4)
    if args.model and not (Path(args.model) / "manifest.json").is_file():
        parser.error(f"--model {args.model}: not a saved model directory (no manifest.json)")
    from models.llama_cpp import LlamaCppWriter

    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cw-runtimes-") as folder:
        dirs = model_dirs(args, Path(folder))
        bandwidth = memory_bandwidth() * 1e9
        writer: Any = TransformerWriter.load(next(iter(dirs.values())))
        read = weight_bytes(writer.model)
        rows.append({"runtime": "torch fp32", **measure(writer, args.tokens, args.runs), "mb": read / 1e6,
                     "bound": bandwidth / read})
        del writer
        for quant, directory in dirs.items():
            writer = LlamaCppWriter.load(directory, threads=args.threads)
            read = writer.gguf_path.stat().st_size
            rows.append({"runtime": f"llama.cpp {quant}", **measure(writer, args.tokens, args.runs),
                         "mb": read / 1e6, "bound": bandwidth / read})
            del writer
    torch_row = rows[0]
    print(f"\n{args.threads} thread(s); memory bandwidth {bandwidth / 1e9:.1f} GB/s (copy, read + write); "
          f"{args.tokens} new tokens; medians of {args.runs}")
    print("| runtime | batch 1 tok/s | × torch | first chunk | per-word ppl | Δ ppl vs torch | bytes read/token | "
          "bound | of bound |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['runtime']} | {r['tok_s']:.1f} | {r['tok_s'] / torch_row['tok_s']:.2f}× | {r['first_ms']:.0f} ms"
              f" | {r['ppl_word']:.3f} | {100 * (r['ppl_word'] / torch_row['ppl_word'] - 1):+.2f} % | {r['mb']:.0f} MB"
              f" | {r['bound']:.0f} tok/s | {r['tok_s'] / r['bound']:.0%} |")
    best = max(rows[1:], key=lambda r: r["tok_s"])
    print(f"\nfastest: {best['runtime']} at {best['tok_s']:.1f} tok/s, {best['tok_s'] / torch_row['tok_s']:.1f}× torch "
          f"in the same run (first chunk {best['first_ms']:.0f} ms, per-word ppl "
          f"{100 * (best['ppl_word'] / torch_row['ppl_word'] - 1):+.2f} % vs torch)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
