"""Data-parallel training of the Transformer family in several processes (``processes`` > 1 in its settings).

The same ``Trainer`` loop as one process, in N: :func:`train_distributed` writes the job to a folder (the
writer as it is before training, the pieces, the settings), launches N workers with
``torch.distributed.run`` (torchrun, which ``accelerate launch --multi_gpu`` also runs underneath), and
each worker (:func:`worker`) loads that writer and runs :func:`training.transformer.train_transformer`.
:func:`train` is the entry point for one process or several.
The ``Trainer``'s Accelerate backend wraps the model in ``DistributedDataParallel`` — gloo on CPU, NCCL
when ``use_cpu`` is false on a GPU node — so every step averages the gradients of the processes' shares
of the global batch, and rank 0's copy of the weights is everyone's. Rank 0 saves the trained writer and
the history; the caller's writer then takes the trained model in place, as after one process.

On CPU every worker uses ``torch_threads`` threads (1 unless the settings say otherwise; ``$CW_TORCH_THREADS``
wins, as everywhere): N processes × 1 thread on N cores. On a node with N GPUs the same settings with
``use_cpu: false`` put one process on each GPU; nothing else changes.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from core.paths import PROJECT_ROOT
from core.threads import ENV as THREADS_ENV
from models.transformer import TransformerWriter
from training.config import TransformerTrainConfig
from training.transformer import EpochCallback, train_transformer

log = logging.getLogger(__name__)
COLUMNS = ["prompt", "text", "form", "genre"]


def train(writer: TransformerWriter, train_frame: pd.DataFrame, val_frame: pd.DataFrame,
          cfg: TransformerTrainConfig, on_epoch: EpochCallback | None = None) -> pd.DataFrame:
    """Trains ``writer`` in place in ``cfg.processes`` processes (one: this process) and returns the history.

    What the training step calls; see :func:`training.transformer.train_transformer` for the
    arguments.
    """
    if cfg.processes == 1:
        return train_transformer(writer, train_frame, val_frame, cfg, on_epoch)
    return train_distributed(writer, train_frame, val_frame, cfg, on_epoch)


def train_distributed(writer: TransformerWriter, train_frame: pd.DataFrame, val_frame: pd.DataFrame,
                      cfg: TransformerTrainConfig, on_epoch: EpochCallback | None = None) -> pd.DataFrame:
    """Trains ``writer`` in ``cfg.processes`` data-parallel processes; the trained model replaces its own.

    Args:
        writer: The writer to train (its current weights are every worker's start).
        train_frame: Training pieces.
        val_frame: Validation pieces.
        cfg: The settings; ``cfg.batch_size`` is the global batch.
        on_epoch: Called with ``(epoch, metrics)`` for each epoch once the workers finish.

    Returns:
        The per-epoch history, as from one process (``tokens_per_s`` counts every process's tokens).

    Raises:
        RuntimeError: If a worker fails (with the end of the workers' output).
    """
    with tempfile.TemporaryDirectory(prefix="transformer-ddp-") as folder:
        job = Path(folder)
        writer.save(job / "initial")
        train_frame[COLUMNS].to_parquet(job / "train.parquet")
        val_frame[COLUMNS].to_parquet(job / "val.parquet")
        (job / "config.json").write_text(json.dumps(asdict(cfg)))
        threads = str(cfg.torch_threads or 1)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get(THREADS_ENV, threads),
               THREADS_ENV: os.environ.get(THREADS_ENV, threads),
               "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   str(cfg.processes), "-m", "training.transformer_ddp", str(job)]
        log.info("training in %d processes (torchrun), %s torch thread(s) each", cfg.processes, env[THREADS_ENV])
        tail: collections.deque[str] = collections.deque(maxlen=40)
        with subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1) as process:
            assert process.stdout is not None
            for line in process.stdout:  # the workers' progress, as it comes
                sys.stderr.write(line)
                tail.append(line)
        if process.returncode != 0:
            errors = sorted(job.glob("error-rank*.txt"))
            said = (f"{errors[0].stem.removeprefix('error-')}: {errors[0].read_text().strip()}" if errors
                    else "the workers' last output:\n" + "".join(tail))
            raise RuntimeError(f"multi-process training failed (torchrun exit {process.returncode}) in {said}")
        trained = TransformerWriter.load(job / "trained", trainable=True)
        writer.model = trained.model.eval()
        history = pd.read_json(job / "history.json", orient="records")
    for row in history.to_dict("records"):
        if on_epoch:
            on_epoch(int(row["epoch"]), {k: float(v) for k, v in row.items() if k != "epoch"})
    return history


def worker(job: Path) -> None:
    """One training process: loads the job, trains, and (rank 0) saves the trained writer and the history.

    An error is also written to ``error-rank<N>.txt`` in the job folder, for the caller to report.
    """
    rank = int(os.environ.get("RANK", "0"))
    try:
        _work(job, rank)
    except Exception as exc:
        (job / f"error-rank{rank}.txt").write_text(f"{type(exc).__name__}: {exc}")
        raise


def _work(job: Path, rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(message)s")
    cfg = TransformerTrainConfig(**json.loads((job / "config.json").read_text()))
    if rank != 0:
        cfg.progress_bar = False
    writer = TransformerWriter.load(job / "initial", trainable=True)
    train_frame, val_frame = pd.read_parquet(job / "train.parquet"), pd.read_parquet(job / "val.parquet")
    history = train_transformer(writer, train_frame, val_frame, cfg, output_dir=str(job / "trainer"))
    if rank == 0:
        writer.save(job / "trained")
        history.to_json(job / "history.json", orient="records")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
