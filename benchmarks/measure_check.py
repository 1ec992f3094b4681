r"""Checks the story-quality measures on real creative writing: each measure's accuracy on known-order pairs.

Usage:
    python -m benchmarks.measure_check                      # ../shared/datasets: WritingPrompts, TinyStories, Aesop
    python -m benchmarks.measure_check --pairs 20 --json docs/measure_check.json
    python -m benchmarks.measure_check --dataset "builtin?n=400&seed=13" --pairs 10   # the built-in corpus

Builds, per measure, ``--pairs`` pairs from each source (a real piece of 40–300 words against the same piece
made worse in one known way: ``evaluation.measure_check``) and reports the share each measure orders right,
per source and over all, with the judge named in the profile's suite (``reference_model``). It also prints
each measure's median raw score on the real pieces: what ``evaluation.quality.SCALES`` is calibrated on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import SMOKE_PROFILE, parse_args

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DEFAULT_SOURCES = (
    f"writingprompts:{SHARED / 'writingprompts'}",
    f"tinystories:{SHARED / 'tinystories' / 'TinyStories-train_first2MiB.txt'}?limit=300",
    f"text:{SHARED / 'fairy_tales' / 'aesop_townsend.txt'}?form=fable",
)


def pieces_from(specs: list[str], per_source: int, seed: int) -> pd.DataFrame:
    """Up to ``per_source`` pieces of 40–300 words from each source, each row tagged with its source spec's kind."""
    from corpus.loaders import load_sources

    frames = []
    for spec in specs:
        frame = load_sources([spec])
        words = frame["text"].str.split().str.len()
        frame = frame[(words >= 40) & (words <= 300)]
        frame = frame.sample(n=min(len(frame), per_source), random_state=seed)
        frames.append(frame.assign(source=spec.split(":", 1)[0].split("?", 1)[0]))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    """Runs the check; prints the table and one summary line; writes ``--json`` when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="source spec(s); default: three sets in ../shared")
    parser.add_argument("--profile", default="configs/default.yaml", help="the profile whose suite names the judge")
    parser.add_argument("--pairs", type=int, default=20, help="pairs per measure and source")
    parser.add_argument("--composite-pairs", type=int, default=5, help="pairs per measure and source for the composite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, dataset=["builtin?n=60&seed=2"], pairs=1, composite_pairs=1)
    if args.pairs < 1 or args.composite_pairs < 0:
        parser.error("--pairs must be ≥ 1 and --composite-pairs ≥ 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    specs = args.dataset or list(DEFAULT_SOURCES)
    if not args.dataset and not SHARED.is_dir():
        print(f"the default sources live in {SHARED}, which is absent; name sources with --dataset", file=sys.stderr)
        return 2

    from core.threads import configure_threads
    from evaluation.measure_check import build_pairs, check_measures
    from evaluation.quality import MEASURES, Judge, score_pieces
    from evaluation.writing import ReferenceModel
    from infra.profiles import load_profile
    from pipelines import training_pipeline
    from pipelines.settings import resolve_settings

    steps = resolve_settings(load_profile(Path(args.profile)), training_pipeline, args.profile)["steps"]
    suite = steps["evaluate"]["parameters"]["suite"]
    configure_threads(int(suite.get("torch_threads") or 0))
    pieces = pieces_from(specs, 4 * args.pairs, args.seed)
    started = time.perf_counter()
    judge = Judge(ReferenceModel(suite["reference_model"])) if suite.get("reference_model") else None
    pairs = [p for source, part in pieces.groupby("source", sort=False)
             for p in build_pairs(part, args.seed, args.pairs)]
    check = check_measures(pairs, judge, float(suite["check_min_accuracy"]), 10, args.seed,
                           args.composite_pairs * pieces["source"].nunique())
    sample = pieces.groupby("source", sort=False).head(args.pairs)
    raw = score_pieces(list(sample["prompt"]), list(sample["text"]), judge, MEASURES, args.seed).frame()
    medians = raw.assign(source=list(sample["source"])).groupby("source").median().round(3)
    seconds = time.perf_counter() - started
    pd.set_option("display.width", 200)
    print(check.drop(columns=["why"]).round(3).to_string(index=False))
    print("\nmedian raw score of the real pieces, per source:")
    print(medians.to_string())
    trusted = list(check.loc[check["trusted"] & (check["measure"] != "story_quality"), "measure"])
    print(f"\n{len(pairs)} pairs from {pieces['source'].nunique()} sources, judge "
          f"{suite.get('reference_model') or 'none'}, {seconds:.0f} s; trusted: {', '.join(trusted) or 'none'}")
    if args.json:
        args.json.write_text(json.dumps({"sources": specs, "pairs_per_measure": args.pairs, "seconds": round(seconds),
                                         "judge": suite.get("reference_model"), "check": check.to_dict("records"),
                                         "medians": medians.reset_index().to_dict("records")}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
