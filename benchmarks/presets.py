"""What the sampling presets, DRY and XTC do to the champion's writing, on the open prompts.

For the serving profile's default settings, each preset (``models/presets.py``), and the default settings
with DRY (multiplier 0.8, base 1.75, allowed length 2) or XTC (threshold 0.1, probability 0.5) on
(``--only`` picks some), the champion writes
one piece per open prompt (the first ``--prompts`` of ``evaluation/data/open_prompts.jsonl``, in one
batch, asking about 80 words) for each of ``--seeds`` seeds, and the evaluation's open-prompt metrics
are averaged over the seeds: how many pieces use their prompt, prompt coverage, form, complete ending,
repeated 4-grams, distinct bigrams across pieces, and length.

    python -m benchmarks.presets                  # the project's models:/creative-writer@champion
    python -m benchmarks.presets --prompts 12 --seeds 1
    python -m benchmarks.presets --prompts 66 --only "profile default" "default + DRY" "default + XTC"
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.common import parse_args

METRICS = ("open_use", "open_coverage", "open_form", "open_complete", "open_repetition", "open_distinct2",
           "open_words")


def main(argv: list[str] | None = None) -> int:
    """Writes with each preset and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24, help="open prompts used (the first N)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per setting (metrics averaged)")
    parser.add_argument("--max-new-tokens", type=int, default=120)
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
          f"{args.max_new_tokens} new tokens, about 80 words asked")
    default = {k: defaults[k] for k in SAMPLING_FIELDS}
    settings_by_name = {"profile default": default, **{name: {"preset": name} for name in PRESETS},
                        "default + DRY": {**default, "dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2},
                        "default + XTC": {**default, "xtc_threshold": 0.1, "xtc_probability": 0.5}}
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
                                                     "target_words": 80})
            started = time.perf_counter()
            texts = loaded.model.generate_requests(requests, settings)
            seconds += time.perf_counter() - started
            runs.append(open_prompt_metrics(prompts, texts)[0])
        results[name] = {m: statistics.mean(r[m] for r in runs) for m in METRICS}
        results[name]["seconds"] = seconds / args.seeds
        print(f"  {name}: done in {seconds:.0f} s", flush=True)

    print("\n| setting | use their prompt | coverage | form | complete ending | repeated 4-grams | distinct-2 | "
          "words |\n|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['open_use']:.0%} | {r['open_coverage']:.0%} | {r['open_form']:.0%} | "
              f"{r['open_complete']:.0%} | {r['open_repetition']:.3f} | {r['open_distinct2']:.3f} | "
              f"{r['open_words']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"model": loaded.provenance.as_dict(), "settings": settings_by_name,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
