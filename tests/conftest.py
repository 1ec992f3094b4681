"""Shared fixtures: paths, the shared real datasets, and small corpus frames."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

from core.paths import PROJECT_ROOT

os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `-n 2` (CI): two test processes share the cores, so each one, and every run.py, server and benchmark
    # it starts, gets one torch thread (two torch processes that each use every core collapse: core.threads)
    os.environ.setdefault("CW_TORCH_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"


def names(*parts: str) -> str:
    """A ``pytest.raises(match=...)`` pattern: the message names every one of ``parts``, in any order.

    Tests check that an error names what was wrong (the setting, the value, the file, the line, the limit),
    not how its sentence is worded, so a message can be reworded without breaking them. A part that starts
    or ends with a letter or digit must stand as a whole word there (``"n"`` does not match inside "none").
    """
    def one(part: str) -> str:
        left = r"(?<!\w)" if part[:1].isalnum() else ""
        right = r"(?!\w)" if part[-1:].isalnum() else ""
        return f"(?=.*{left}{re.escape(part)}{right})"

    if not parts:
        raise ValueError("names() needs at least one part")
    return "(?s)" + "".join(one(part) for part in parts)


@pytest.fixture
def shared_datasets() -> Path:
    """``../shared/datasets``, or a skip when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (they live beside the project, not in it)")
    return SHARED_DATASETS


def frame(rows: list[dict]) -> pd.DataFrame:
    """A corpus frame from partial rows (defaults for the columns a test does not care about)."""
    out = []
    for i, row in enumerate(rows):
        base = {"id": f"t-{i}", "source": "test", "form": "story", "genre": "", "prompt": "Write a story about a cat.",
                "text": "The cat sat on the mat and looked at the garden for a very long time."}
        base.update(row)
        out.append(base)
    return pd.DataFrame(out)


STORY = (
    "Once upon a time there was a small fox who lived in the woods. "
    "She was clever and she was kind, and all of the other animals liked her. "
    "One day she found a key under an old stone and wondered what it could open. "
    "She asked the owl, and the owl told her to follow the river to the sea."
)


@pytest.fixture(scope="session")
def tiny_corpus() -> pd.DataFrame:
    """300 built-in pieces with their split."""
    from corpus.builtin import generate_corpus
    from corpus.split import assign_splits

    return assign_splits(generate_corpus(300, seed=11))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus):
    """A small shared tokenizer trained on the tiny corpus's train split."""
    from models.tokenizer import train_on_split

    return train_on_split(tiny_corpus, vocab_size=500)


def tiny_writer(tokenizer, **overrides):
    """A freshly initialised tiny seq2seq writer (seeded)."""
    import torch

    from models.seq2seq import build_writer

    torch.manual_seed(0)
    cfg = {"emb_dim": 24, "hidden": 32, "attn_dim": 16, "dropout": 0.0, **overrides}
    return build_writer(tokenizer, **cfg)


@pytest.fixture(scope="session")
def served(tmp_path_factory, tiny_tokenizer):
    """A real ``bentoml serve`` of the service on a loopback port, serving a tiny registered champion."""
    from infra.local_server import Server
    from tests.serving_support import register_tiny_champion

    folder = tmp_path_factory.mktemp("served")
    uri = register_tiny_champion(folder, tiny_tokenizer)
    server = Server({"MLFLOW_TRACKING_URI": uri, "BENTOML_HOME": str(folder / "bentoml"), "CW_API_TOKEN": "",
                     "CW_DATABASE_URL": f"sqlite:///{folder}/workspace.db"}, folder / "server.log")
    try:
        server.wait(ready=True)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def guarded_empty(tmp_path_factory):
    """A server with a bearer token and an empty registry (nothing to serve)."""
    from infra.local_server import Server

    folder = tmp_path_factory.mktemp("guarded")
    server = Server({"MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "BENTOML_HOME": str(folder / "bentoml"),
                     "CW_API_TOKEN": "s3cret", "CW_DATABASE_URL": f"sqlite:///{folder}/workspace.db"},
                    folder / "server.log")
    try:
        server.wait(ready=False)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """An end-to-end test file's own copy of the project (``tests/e2e_support.py``), one per file."""
    from tests.e2e_support import make_project

    return make_project(tmp_path_factory)


@pytest.fixture(scope="module")
def first_run(project) -> str:
    """Trains the file's copy once; every end-to-end test asks for it, so each also runs alone."""
    from tests.e2e_support import train

    return train(project)


def postgres_folder(prefix: str) -> Path:
    """A fresh folder the postgres user can reach (for a cluster under it), or a skip when PostgreSQL is absent."""
    import tempfile

    from infra.team import TeamError, pg_bin

    try:
        pg_bin("initdb")
    except TeamError as exc:
        pytest.skip(f"PostgreSQL is not installed ({exc}); .ci/run installs it")
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # reachable by the postgres user
    base.chmod(0o755)
    return base
