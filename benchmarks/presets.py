"""What the sampling presets, DRY, XTC and banned phrases do to the champion's writing, on the open prompts.

For the serving profile's default settings, each preset (``models/presets.py``), and the default settings
with DRY (multiplier 0.8, base 1.75, allowed length 2), XTC (threshold 0.1, probability 0.5) or the
stock phrases of :data:`STOCK_PHRASES` banned (``--only`` picks some), the champion writes
one piece per open prompt (the first ``--prompts`` of ``evaluation/data/open_prompts.jsonl``, in one
batch, asking about ``--target-words`` words) for each of ``--seeds`` seeds, and the evaluation's open-prompt
metrics are averaged over the seeds: how many pieces use their prompt, prompt coverage, form, complete
ending, repeated 4-grams, distinct bigrams across pieces, length, and stock phrases per piece.

    python -m benchmarks.presets                  # the project's models:/creative-writer@champion
    python -m benchmarks.presets --prompts 12 --seeds 1
    python -m benchmarks.presets --prompts 66 --only "profile default" "default + DRY" "default + XTC"
    python -m benchmarks.presets --only "profile default" "default + DRY" --max-new-tokens 480 --target-words 300
    python -m benchmarks.presets --only "profile default" "default + banned phrases"
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.common import parse_args

METRICS = ("open_use", "open_coverage", "open_form", "open_complete", "open_repetition", "open_distinct2",
           "open_words", "stock")
STOCK_PHRASES = ("once upon a time", "in a small village", "little did", "suddenly", "a sense of", "the end",
                 "from that day on", "testament to", "tapestry", "shivers down")  # stock phrases small models lean on


def stock_per_piece(texts: list[str]) -> float:
    """Mean number of :data:`STOCK_PHRASES` occurrences per piece (as the banned-phrase sampler matches them)."""
    from models.banning import phrase_pattern

    pattern = phrase_pattern(STOCK_PHRASES)
    return sum(len(pattern.findall(t)) for t in texts) / max(1, len(texts)) if pattern else 0.0


def main(argv: list[str] | None = None) -> int:
    """Writes with each preset and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24, help="open prompts used (the first N)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per setting (metrics averaged)")
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--target-words", type=int, default=80, help="the length asked for, in words")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--only", nargs="+", help="the settings to run, by name (default: all)")
    args = parse_args(parser, argv, prompts=2, seeds=1, max_new_tokens=8)

    from core.threads import configure_threads
    from evaluation.writing import load_open_prompts, open_prompt_metrics
    from models.contract import GenerationSettings
    from models.presets import PRESETS, SAMPLING_FIELDS
    from serving.champion import load
    from serving.config import ModelSource, load_serving_config

    configure_threads(0)
    loaded = load(ModelSource())
    prompts = load_open_prompts().head(args.prompts)
    defaults = load_serving_config().defaults.model_dump()
    print(f"{loaded.provenance.short()}; {len(prompts)} open prompts × {args.seeds} seeds, "
          f"{args.max_new_tokens} new tokens, about {args.target_words} words asked")
    default = {k: defaults[k] for k in SAMPLING_FIELDS}
    settings_by_name = {"profile default": default, **{name: {"preset": name} for name in PRESETS},
                        "default + DRY": {**default, "dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2},
                        "default + XTC": {**default, "xtc_threshold": 0.1, "xtc_probability": 0.5},
                        "default + banned phrases": {**default, "banned_phrases": STOCK_PHRASES}}
    unknown = set(args.only or ()) - set(settings_by_name)
    if unknown:
        parser.error(f"--only: no setting named {', '.join(sorted(unknown))}; known: {', '.join(settings_by_name)}")
    settings_by_name = {k: v for k, v in settings_by_name.items() if not args.only or k in args.only}
    results: dict[str, dict[str, float]] = {}
    requests = list(zip(prompts["prompt"], prompts["form"], prompts["genre"], strict=True))
    for name, values in settings_by_name.items():
        runs, seconds = [], 0.0
        for seed in range(args.seeds):
            settings = GenerationSettings.from_dict({**values, "max_new_tokens": args.max_new_tokens, "seed": seed,
                                                     "target_words": args.target_words})
            started = time.perf_counter()
            texts = loaded.model.generate_requests(requests, settings)
            seconds += time.perf_counter() - started
            runs.append({**open_prompt_metrics(prompts, texts)[0], "stock": stock_per_piece(texts)})
        results[name] = {m: statistics.mean(r[m] for r in runs) for m in METRICS}
        results[name]["seconds"] = seconds / args.seeds
        print(f"  {name}: done in {seconds:.0f} s", flush=True)

    print("\n| setting | use their prompt | coverage | form | complete ending | repeated 4-grams | distinct-2 | "
          "words | stock phrases per piece | seconds |\n|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['open_use']:.0%} | {r['open_coverage']:.0%} | {r['open_form']:.0%} | "
              f"{r['open_complete']:.0%} | {r['open_repetition']:.3f} | {r['open_distinct2']:.3f} | "
              f"{r['open_words']:.0f} | {r['stock']:.2f} | {r['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"model": loaded.provenance.as_dict(), "settings": settings_by_name,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
