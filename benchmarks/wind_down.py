r"""What wind-down does to a writer's endings and story quality on the open prompts, against its base.

Usage:
    python -m benchmarks.wind_down                                   # @champion and @previous-champion
    python -m benchmarks.wind_down --profile configs/quality.yaml --writer 5 --base 6 --values 0 0.3 0.6

Two registered versions (``--writer`` and ``--base``: a version number or an alias) write one piece per
open prompt with the profile's evaluation settings (sampling, seed, asked length, token limit, runtime),
once for each wind-down value (``SamplingParams.wind_down``: past the asked length, the end token's logit
gains that much per token). Each is scored by the evaluation's checked story-quality measures (the same
check and cache as the evaluation); the table gives story quality, complete endings, fables with their
form, prompt use and words per value, and the writer is compared with its base at the same value (and
with itself at the first value) by a paired bootstrap over prompts. Two prompts are shown side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.common import SMOKE_PROFILE, parse_args


def scored(writer: Any, suite: Any, prompts: pd.DataFrame, judge: Any,
           trust: list[str]) -> tuple[dict[str, Any], list[str], list[float]]:
    """One writer's open-prompt pieces under ``suite`` and their figures."""
    from evaluation.candidates import story_scores
    from evaluation.suite import open_samples
    from evaluation.writing import form_ok, open_prompt_metrics

    texts, seconds = open_samples(writer, prompts, suite)
    metrics, _ = open_prompt_metrics(prompts, texts)
    quality, per_piece = story_scores(judge, trust, prompts, texts, suite.seed)
    fables = [form_ok("fable", t) for f, t in zip(prompts["form"], texts, strict=True) if f == "fable"]
    return ({**{k: round(v, 4) for k, v in quality.items()}, "open_use": metrics["open_use"],
             "open_complete": metrics["open_complete"], "open_form": metrics["open_form"],
             "fable_form": sum(fables) / len(fables) if fables else float("nan"),
             "words": round(metrics["open_words"], 1), "write_s": round(seconds, 1)}, texts, per_piece)


def main(argv: list[str] | None = None) -> int:
    """Writes with each value, scores, prints the table; writes ``--json`` when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="configs/default.yaml", help="whose data and evaluation settings")
    parser.add_argument("--writer", default="champion", help="registry version or alias of the writer")
    parser.add_argument("--base", default="previous-champion", help="registry version or alias it is compared with")
    parser.add_argument("--values", type=float, nargs="+", default=[0.0, 0.3], help="wind-down values")
    parser.add_argument("--open-limit", type=int, default=0, help="open prompts written (0 = the profile's)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, open_limit=2, writer="champion", base="champion")
    if any(v < 0 or v > 2 for v in args.values):
        parser.error("--values: each wind-down is from 0 to 2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from benchmarks.common import prepare
    from core.threads import configure_threads
    from evaluation.candidates import measure_check, reference_model
    from evaluation.config import SuiteConfig
    from evaluation.measure_check import trusted
    from evaluation.quality import Judge, paired_bootstrap
    from evaluation.suite import open_prompts
    from serving.champion import load
    from serving.config import ModelSource

    data = prepare(args.profile)
    suite_params = data.steps["evaluate"]["parameters"]["suite"]
    suite = SuiteConfig(**{**suite_params, "open_limit": args.open_limit or suite_params.get("open_limit", 0)})
    configure_threads(suite.torch_threads)

    def registered(ref: str) -> Any:
        source = ModelSource(version=ref) if ref.isdigit() else ModelSource(alias=ref)
        return load(dataclasses.replace(source, runtime=suite.runtime))

    writers = {"writer": registered(args.writer), "base": registered(args.base)}
    for name, loaded in writers.items():
        print(f"{name}: {loaded.provenance.short()}", flush=True)
    reference = reference_model(suite)
    judge = Judge(reference) if reference is not None else None
    check, _ = measure_check(data.part("test"), judge, reference, suite)
    trust = trusted(check)
    prompts = open_prompts(suite)
    rows, texts, quality = [], {}, {}
    for value in args.values:
        at = dataclasses.replace(suite, sampling=suite.sampling.model_copy(update={"wind_down": value}))
        for name, loaded in writers.items():
            row, texts[(name, value)], quality[(name, value)] = scored(loaded.model, at, prompts, judge, trust)
            rows.append({"writer": name, "wind_down": value, **row})
            print(f"  {name} at wind-down {value}: done", flush=True)
    table = pd.DataFrame(rows)
    versus = {f"writer - base at {v}": paired_bootstrap(quality[("writer", v)], quality[("base", v)], seed=suite.seed)
              for v in args.values}
    first = args.values[0]
    versus |= {f"writer at {v} - writer at {first}": paired_bootstrap(quality[("writer", v)],
                                                                      quality[("writer", first)], seed=suite.seed)
               for v in args.values[1:]}
    pd.set_option("display.width", 220)
    print(table.to_string(index=False))
    for name, b in versus.items():
        print(f"{name}: story quality {b['mean_diff']:+.4f} (95 % {b['low']:+.4f} … {b['high']:+.4f}), "
              f"{b['pairs']} prompts")
    print(f"trusted measures: {', '.join(trust) or 'none'}")
    for i in range(min(2, len(prompts))):
        print(f"\n### {prompts['prompt'].iloc[i]} ({prompts['form'].iloc[i]})")
        for (name, value), pieces in texts.items():
            print(f"--- {name}, wind-down {value} (story quality {quality[(name, value)][i]:.2f})\n{pieces[i]}")
    if args.json:
        args.json.write_text(json.dumps({
            "profile": args.profile, "writer": writers["writer"].provenance.short(),
            "base": writers["base"].provenance.short(), "open_prompts": len(prompts), "trusted": trust,
            "table": table.to_dict("records"), "versus": versus,
            "samples": [{"prompt": prompts["prompt"].iloc[i], **{f"{n} {v}": t[i] for (n, v), t in texts.items()}}
                        for i in range(min(6, len(prompts)))]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
