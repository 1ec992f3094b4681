"""Continue on a long manuscript: how much of it the model reads, and the time to its first words.

The champion (or ``--model DIR``) on llama.cpp with the serving context (``--context``, the serving
profile's ``model.context`` by default) and with the context it was trained with, side by side. The
manuscript is a real tale from ``../shared/datasets`` (or built-in pieces when that is absent), cut to
``--tokens`` tokens. For each context it measures, with medians over ``--runs``:

- **first Continue**: the time to the first streamed chunk with nothing of the manuscript cached (another
  request ran just before);
- **next Continue**: the same after the model's words were added to the manuscript, as the UI's next
  Continue sends it: llama.cpp keeps the prefix both share, so only the new words are read;
- how many tokens of the manuscript the model read.

    python -m benchmarks.long_manuscript                    # the champion, 2,000-token manuscript, 5 runs
    python -m benchmarks.long_manuscript --context 4096 --tokens 3000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import parse_args
from benchmarks.runtimes import champion_dir
from core.paths import PROJECT_ROOT

TALES = PROJECT_ROOT.parent / "shared" / "datasets" / "fairy_tales" / "grimm_fairy_tales.txt"
PROMPT = "Go on with the tale."


def manuscript(tokenizer: Any, tokens: int) -> str:
    """About ``tokens`` tokens of real prose: Grimm's tales from ../shared, else built-in pieces."""
    if TALES.is_file():
        text = TALES.read_text(encoding="utf-8", errors="replace")
        text = text[len(text) // 3:]  # past the front matter
    else:
        from corpus.builtin import generate_corpus

        text = "\n\n".join(generate_corpus(200, seed=5)["text"])
    ids = tokenizer(text[: tokens * 8], add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def first_chunk_s(writer: Any, prompt: str, settings: Any) -> tuple[float, str]:
    """Seconds to the first streamed chunk, and the whole text written."""
    started, first, pieces = time.perf_counter(), None, []
    for piece in writer.stream(prompt, settings):
        if first is None:
            first = time.perf_counter() - started
        pieces.append(piece)
    return (first if first is not None else time.perf_counter() - started), "".join(pieces)


def measure(writer: Any, text: str, runs: int, new_tokens: int) -> dict[str, Any]:
    """Medians of the first and the next Continue's time to the first chunk on ``text``."""
    from models.contract import GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens, seed=0, temperature=0.8, top_k=40)
    firsts, nexts = [], []
    for run in range(runs):
        writer.generate(["An unrelated prompt, so the manuscript is not cached."], settings.replace(max_new_tokens=1))
        took, written = first_chunk_s(writer, PROMPT, settings.replace(lead=text, seed=run))
        firsts.append(took)
        grown = text.rstrip() + written
        took, _ = first_chunk_s(writer, PROMPT, settings.replace(lead=grown, seed=run + 100))
        nexts.append(took)
    return {"context": writer.config.context, "read_tokens": len(writer.lead_ids(text)),
            "first_s": statistics.median(firsts), "next_s": statistics.median(nexts), "firsts": firsts,
            "nexts": nexts}


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison; prints the table and one summary line; writes ``--json`` when asked."""
    from serving.config import load_serving_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved Transformer model directory (default: the champion)")
    parser.add_argument("--context", type=int, default=load_serving_config().model.context,
                        help="the serving context in tokens (default: the serving profile's model.context)")
    parser.add_argument("--tokens", type=int, default=2000, help="the manuscript's length in tokens")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens each Continue writes")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parse_args(parser, argv, context=1024, tokens=600, new_tokens=4, runs=1)
    from models.llama_cpp import LlamaCppWriter

    with tempfile.TemporaryDirectory(prefix="cw-long-") as work:
        directory = Path(args.model) if args.model else champion_dir(Path(work))
        if directory is None:
            parser.error("no Transformer champion in the registry: train one, or name a saved model with --model")
        rows = []
        for context in dict.fromkeys([0, args.context]):  # the trained context, then the serving one
            writer = LlamaCppWriter.load(directory, threads=args.threads, context=context)
            text = manuscript(writer.tokenizer, args.tokens)
            rows.append(measure(writer, text, args.runs, args.new_tokens))
            del writer
    print(f"\nContinue on a {args.tokens}-token manuscript, llama.cpp, {args.threads} threads, medians of {args.runs}")
    print("| context | manuscript tokens read | first Continue, first chunk | next Continue, first chunk |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['context']} | {r['read_tokens']} | {r['first_s']:.2f} s | {r['next_s']:.2f} s |")
    last = rows[-1]
    print(f"summary: with a {last['context']}-token context a Continue reads {last['read_tokens']} tokens of the "
          f"manuscript; first chunk {last['first_s']:.2f} s the first time, {last['next_s']:.2f} s the next")
    if args.json:
        args.json.write_text(json.dumps({"tokens": args.tokens, "threads": args.threads, "runs": args.runs,
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
