"""What the benchmarks share: the ``--smoke`` mode, a profile's cleaning, split and tokenizer, machine peaks."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from corpus.cleaning import CleaningConfig, clean_corpus
from corpus.loaders import load_sources
from corpus.split import assign_splits
from models.tokenizer import train_on_split

SMOKE_PROFILE = "configs/smoke.yaml"
SMOKE_HELP = ("a tiny run of the same code (the smoke profile, tiny sizes, --json into a temporary folder): it "
              "checks that the command works; its figures mean nothing. The tests run every documented command so")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None, **tiny: Any) -> argparse.Namespace:
    """Parses ``argv`` with a ``--smoke`` flag added; under ``--smoke`` the options in ``tiny`` take those values.

    The documented options are parsed as given first (a renamed option still fails), then ``tiny`` shrinks the
    sizes so the whole command runs in seconds. ``--json`` is redirected into a temporary folder, so a smoke
    run never overwrites the recorded figures in ``docs/``.

    Raises:
        AttributeError: ``tiny`` names an option the parser does not have (a mistake in the benchmark).
    """
    from infra.stack import quiet_defaults

    quiet_defaults()  # as run.py: plain logs into a file or a pipe (no colour codes), no analytics
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    parser.add_argument("--parse-only", action="store_true", help=argparse.SUPPRESS)  # the tests: options only
    args = parser.parse_args(argv)
    if args.parse_only:
        print(json.dumps(vars(args), default=str))
        raise SystemExit(0)
    if not args.smoke:
        return args
    for name, value in tiny.items():
        if not hasattr(args, name):
            raise AttributeError(f"--smoke sets {name!r}, which {parser.prog} has no option for")
        setattr(args, name, value)
    if getattr(args, "json", None) is not None:
        args.json = Path(tempfile.mkdtemp(prefix="cw-smoke-")) / Path(args.json).name
    return args


@dataclass
class Prepared:
    """A profile's step settings, the split corpus and the shared tokenizer trained on it."""

    steps: dict[str, Any]
    specs: list[str]
    split: pd.DataFrame
    tokenizer: Any

    def part(self, name: str) -> pd.DataFrame:
        """The rows of one split (train, validation, test)."""
        return self.split[self.split["split"] == name]


def prepare(profile_path: str, specs: list[str] | None = None) -> Prepared:
    """Cleans, splits and tokenizes data exactly as the profile's pipeline steps would.

    ``specs`` default to the profile's dataset; the tokenizer uses the profile's ``train_tokenizer``
    parameters. Every step's settings are resolved as ``run.py`` resolves them (the profile over the code's
    defaults), so a setting the profile leaves to its default is there too.
    """
    import pipelines
    from infra.profiles import load_profile
    from pipelines.settings import resolve_settings

    profile = load_profile(Path(profile_path))  # with what an `extends:` profile inherits
    steps = resolve_settings(profile, pipelines.training_pipeline, profile_path)["steps"]
    specs = specs or profile["parameters"]["dataset"]
    clean, _ = clean_corpus(load_sources(specs), CleaningConfig(**steps["clean_data"]["parameters"]["config"]))
    split_params = {k: v for k, v in steps["split_data"]["parameters"].items() if k != "min_rows"}
    split = assign_splits(clean, **split_params)
    return Prepared(steps, specs, split, train_on_split(split, **steps["train_tokenizer"]["parameters"]))


def scratch_settings(model: dict[str, Any]) -> dict[str, Any]:
    """A profile's Transformer settings for GPT-2 from scratch: no base, no adapter or LoRA settings.

    The default profile's Transformer fine-tunes a pretrained base; the benchmarks that measure the
    from-scratch option keep only what applies to it (sizes, context, dropout, prompt length).
    """
    return {**{k: v for k, v in model.items() if k != "adapter" and not k.startswith("lora")}, "base_model": ""}


def matmul_peak(n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Median GFLOP/s of an ``n × n`` matmul (this machine's practical peak, timed in the same run)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Median GB/s of copying a ``megabytes`` fp32 tensor (read + write counted)."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(times) / 1e9
