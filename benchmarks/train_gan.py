"""Benchmark: GAN generator and discriminator update throughput for each reward estimator.

Usage:
    python -m benchmarks.train_gan                       # the default profile's seq2seq + GAN settings
    python -m benchmarks.train_gan --runs 5 --steps 4 --rollouts 2 4

A freshly initialised generator of the profile's seq2seq size (speed does not depend on training).
Generator: tokens of the sampled sequences per second of a whole policy-gradient update (sampling,
rewards, teacher-forced log-probs, MLE term, backward, step) with ``dense`` rewards and with
``rollout`` rewards at each ``--rollouts`` count. Discriminator: real + generated tokens per second of
one update (sampling the fakes included). Only tokens actually sampled (up to ``<eos>``) count.
Medians of ``--runs`` runs of ``--steps`` updates each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import SMOKE_PROFILE, parse_args, prepare
from models.gan import Discriminator, DiscriminatorConfig, GanConfig
from models.seq2seq import build_writer
from training.gan import _Batches, discriminator_step, generator_step


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints a table and one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="source spec(s); default: built-in, 600 pieces")
    parser.add_argument("--profile", default="configs/default.yaml")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="updates per timed run")
    parser.add_argument("--rollouts", type=int, nargs="+", default=[2, 4])
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, dataset=["builtin?n=200&seed=13"], runs=1, steps=1,
                      rollouts=[2])
    data = prepare(args.profile, args.dataset or ["builtin?n=600"])
    params = data.steps["train_gan"]["parameters"]
    base = GanConfig(**params["gan"])
    torch.manual_seed(0)
    writer = build_writer(data.tokenizer, **data.steps["train_seq2seq"]["parameters"]["model"])
    disc = Discriminator(writer.config.vocab_size, writer.config.pad_id,
                         DiscriminatorConfig(**params.get("discriminator", {})))
    g_opt, d_opt = torch.optim.Adam(writer.net.parameters(), lr=1e-5), torch.optim.Adam(disc.parameters(), lr=1e-5)
    batches = _Batches(writer, data.part("train"), base.batch_size, 0)
    gen = torch.Generator().manual_seed(0)

    def timed(fn, cfg: GanConfig) -> float:  # noqa: ANN001 - a step function
        rates = []
        for _ in range(args.runs):
            fn(cfg)  # warm-up
            t0, tokens = time.perf_counter(), 0.0
            for _ in range(args.steps):
                tokens += fn(cfg)
            rates.append(tokens / (time.perf_counter() - t0))
        return statistics.median(rates)

    def g_update(cfg: GanConfig) -> float:
        return generator_step(writer, g_opt, disc, batches, cfg, gen)["g_tokens"]

    def d_update(cfg: GanConfig) -> float:
        return discriminator_step(disc, d_opt, writer, batches, cfg, gen)["d_tokens"]

    rows = [("dense", timed(g_update, base.__class__(**{**base.__dict__, "reward": "dense"})))]
    for n in args.rollouts:
        rows.append((f"rollout ×{n}", timed(g_update, base.__class__(**{**base.__dict__, "reward": "rollout",
                                                                          "rollouts": n}))))
    d_rate = timed(d_update, base)
    n_gen = sum(p.numel() for p in writer.net.parameters())
    n_disc = sum(p.numel() for p in disc.parameters())
    print(f"generator {n_gen / 1e6:.2f} M parameters, discriminator {n_disc / 1e6:.2f} M; batch {base.batch_size} × "
          f"up to {base.max_len} tokens (the sampled tokens are counted)")
    print(f"\n{'update':<22}{'tokens/s (median)':>20}{'vs dense':>10}")
    for label, rate in rows:
        print(f"{'generator, ' + label:<22}{rate:>20.0f}{rate / rows[0][1]:>10.2f}")
    print(f"{'discriminator':<22}{d_rate:>20.0f}")
    print("summary: generator " + ", ".join(f"{label} {rate:.0f}" for label, rate in rows)
          + f" tokens/s; discriminator {d_rate:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
