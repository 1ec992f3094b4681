r"""Which training makes a better writer than its own base: untuned base, LoRA, distilled LoRA, LoRA + DPO.

Usage:
    python -m benchmarks.distill                                   # the default profile, k 4 on 48 prompts
    python -m benchmarks.distill --k 4 --prompts 48 --json docs/distill.json
    python -m benchmarks.distill --open-limit 12 --prompts 8 --k 2   # a quick look (~10 min)

From one split (the profile's data, cleaning and seed) it makes three writers on the profile's
Transformer settings: the **untuned base**; **LoRA on the corpus** (what the training pipeline does by
default); and **distilled LoRA** (best-of-``k`` self-distillation, ``training.distill``: the base writes ``k``
pieces for each of ``--prompts`` training prompts, the best by the checked story-quality measures become
the training pieces); and **LoRA + DPO**: the corpus LoRA trained further with DPO (``training.dpo``) on
the distillation's best-against-worst pairs. Each writes one piece per open prompt on the profile's
runtime with the suite's settings and seed, and is scored by the evaluation's measures (the trusted ones:
the same check and cache as the evaluation). The table gives each writer's story quality, the measures, prompt use, form
(fables on their own), complete endings and the minutes it cost; each trained writer is compared with
the base by a paired bootstrap over prompts; two prompts are shown side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.common import SMOKE_PROFILE, parse_args


def write_and_score(name: str, directory: Path, suite: Any, prompts: pd.DataFrame, judge: Any,
                    trust: list[str]) -> tuple[dict[str, Any], list[str], list[float]]:
    """One writer's open-prompt pieces and figures (story quality, measures, use, form, endings)."""
    from evaluation.candidates import story_scores
    from evaluation.suite import open_samples
    from evaluation.writing import form_ok, open_prompt_metrics
    from models.families import load_model

    writer = load_model(directory, suite.runtime, suite.torch_threads)
    texts, seconds = open_samples(writer, prompts, suite)
    metrics, _ = open_prompt_metrics(prompts, texts)
    quality, per_piece = story_scores(judge, trust, prompts, texts, suite.seed)
    fables = [form_ok("fable", t) for f, t in zip(prompts["form"], texts, strict=True) if f == "fable"]
    row = {"writer": name, **{k: round(v, 4) for k, v in quality.items()},
           "open_use": metrics["open_use"], "open_form": metrics["open_form"],
           "fable_form": sum(fables) / len(fables) if fables else float("nan"),
           "open_complete": metrics["open_complete"], "words": metrics["open_words"],
           "write_s": round(seconds, 1)}
    return row, texts, per_piece


def main(argv: list[str] | None = None) -> int:
    """Makes the three writers, scores them, prints the table; writes ``--json`` when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="configs/default.yaml")
    parser.add_argument("--k", type=int, default=4, help="pieces sampled per training prompt")
    parser.add_argument("--prompts", type=int, default=48, help="training prompts distilled")
    parser.add_argument("--keep-corpus", type=int, default=0, help="corpus pieces trained on beside the distilled")
    parser.add_argument("--open-limit", type=int, default=0, help="open prompts written (0 = all 66)")
    parser.add_argument("--dpo-epochs", type=int, default=3, help="DPO epochs over the distilled pairs")
    parser.add_argument("--dpo-lr", type=float, default=1e-4, help="DPO learning rate (the LoRA's weights)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, k=2, prompts=2, open_limit=2, dpo_epochs=1)
    if args.k < 2 or args.prompts < 1 or args.open_limit < 0:
        parser.error("--k must be ≥ 2, --prompts ≥ 1 and --open-limit ≥ 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from benchmarks.common import prepare
    from core.threads import configure_threads
    from evaluation.candidates import measure_check, reference_model
    from evaluation.config import SuiteConfig
    from evaluation.measure_check import trusted
    from evaluation.quality import Judge, paired_bootstrap
    from evaluation.suite import open_prompts
    from models.configs import TransformerConfig
    from models.transformer import build_transformer
    from training.config import DPOConfig, TransformerTrainConfig
    from training.distill import DistillConfig, distill, training_pieces
    from training.dpo import train_dpo
    from training.tracking import save_untuned
    from training.transformer_ddp import train

    data = prepare(args.profile)
    params = data.steps["train_transformer"]["parameters"]
    model_cfg = TransformerConfig(**params["model"])
    train_cfg = TransformerTrainConfig(**{**params["train_config"], "progress_bar": False})
    suite_params = data.steps["evaluate"]["parameters"]["suite"]
    suite = SuiteConfig(**{**suite_params, "open_limit": args.open_limit or suite_params.get("open_limit", 0)})
    configure_threads(suite.torch_threads)
    train_part, val_part, test_part = data.part("train"), data.part("validation"), data.part("test")
    forms, genres = sorted(train_part["form"].unique()), sorted(train_part["genre"].unique())

    def fresh() -> Any:
        return build_transformer(data.tokenizer, model_cfg, forms=forms, genres=genres)

    minutes: dict[str, float] = {}
    started = time.perf_counter()
    base_dir = save_untuned(fresh(), "bench-base")
    minutes["base"] = (time.perf_counter() - started) / 60
    started = time.perf_counter()
    lora = fresh()
    train(lora, train_part, val_part, train_cfg)
    lora_dir = lora.save(Path(base_dir).parent / f"{Path(base_dir).name}-lora")
    minutes["lora"] = (time.perf_counter() - started) / 60
    started = time.perf_counter()
    settings = DistillConfig(k=args.k, prompts=args.prompts, seed=suite.seed, runtime=suite.runtime,
                             check_pairs=suite.check_pairs, check_min_accuracy=suite.check_min_accuracy,
                             check_composite_pairs=suite.check_composite_pairs,
                             check_sources=list(suite.check_sources))
    writers = {"base": base_dir, "lora": lora_dir}
    try:
        made = distill(base_dir, train_part, test_part, settings, model_cfg.base_model, suite.torch_threads)
    except ValueError as error:  # nothing passed the checks: a finding of this run, reported with the rest
        made, not_distilled = None, str(error)
        print(f"no distilled LoRA: {not_distilled}", flush=True)
    else:
        distilled = fresh()
        train(distilled, training_pieces(made, train_part, args.keep_corpus, suite.seed), val_part, train_cfg)
        writers["distilled"] = distilled.save(Path(base_dir).parent / f"{Path(base_dir).name}-distilled")
        minutes["distilled"] = (time.perf_counter() - started) / 60
        if len(made.pairs):  # the corpus LoRA, trained further on the best-against-worst pairs
            started = time.perf_counter()
            dpo_stats = train_dpo(lora, made.pairs, DPOConfig(epochs=args.dpo_epochs, lr=args.dpo_lr,
                                                             seed=suite.seed))
            print(f"DPO on {len(made.pairs)} distilled pairs: {json.dumps(dpo_stats)}", flush=True)
            writers["lora_dpo"] = lora.save(Path(base_dir).parent / f"{Path(base_dir).name}-lora-dpo")
            minutes["lora_dpo"] = minutes["lora"] + minutes["distilled"] + (time.perf_counter() - started) / 60

    reference = reference_model(suite)
    judge = Judge(reference) if reference is not None else None
    check, _ = measure_check(test_part, judge, reference, suite)
    trust = trusted(check)
    prompts = open_prompts(suite)
    rows, texts, quality = [], {}, {}
    for name, directory in writers.items():
        row, texts[name], quality[name] = write_and_score(name, Path(directory), suite, prompts, judge, trust)
        rows.append({**row, "minutes_to_make": round(minutes[name], 2)})
    table = pd.DataFrame(rows)
    versus = {name: paired_bootstrap(quality[name], quality["base"], seed=suite.seed)
              for name in writers if name != "base"}
    pd.set_option("display.width", 220)
    print(table.to_string(index=False))
    for name, b in versus.items():
        print(f"{name} − base: story quality {b['mean_diff']:+.4f} (95 % {b['low']:+.4f} … {b['high']:+.4f}), "
              f"better in {b['p_better']:.1%} of resamples, {b['pairs']} prompts")
    stats = made.stats if made is not None else {"not_distilled": not_distilled}
    if made is not None and len(made.pairs):
        stats = {**stats, "dpo": dpo_stats}
    print(f"distillation: {json.dumps(stats)}; trusted measures: {', '.join(trust) or 'none'}")
    for i in range(min(2, len(prompts))):
        print(f"\n### {prompts['prompt'].iloc[i]}")
        for name in texts:
            print(f"--- {name} (story quality {quality[name][i]:.2f})\n{texts[name][i]}")
    if args.json:
        args.json.write_text(json.dumps({
            "profile": args.profile, "k": args.k, "prompts": args.prompts, "keep_corpus": args.keep_corpus,
            "open_prompts": len(prompts), "trusted": trust, "table": table.to_dict("records"),
            "versus_base": versus, "distillation": stats,
            "samples": [{"prompt": prompts["prompt"].iloc[i], **{n: texts[n][i] for n in texts}}
                        for i in range(min(6, len(prompts)))]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
