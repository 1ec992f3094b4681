"""One policy for torch's CPU threads, for training, serving, evaluation and tests.

Two torch processes that each use every core collapse on a small machine (a training step ran 4–16×
slower while another torch job ran), so the thread count is set on purpose, in one place:

1. ``$CW_TORCH_THREADS`` when set (an integer ≥ 1) — what a user or a test runner says wins;
2. else the profile's setting (``torch_threads`` in a training or evaluation config,
   ``server.torch_threads`` in ``configs/serving.yaml``) when it is ≥ 1;
3. else every core (torch's own default), which is fastest when the process runs alone.

docs/models.md ("Threads") gives the figures measured for 1 and 2 threads.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
ENV = "CW_TORCH_THREADS"


def thread_count(requested: int = 0) -> int:
    """The thread count the policy picks (see the module docstring); 0 means torch's default.

    Raises:
        ValueError: If ``$CW_TORCH_THREADS`` is set to something other than an integer ≥ 1.
    """
    raw = os.environ.get(ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{ENV} must be an integer ≥ 1, got {raw!r}")
        return int(raw)
    return requested if requested and requested > 0 else 0


def configure_threads(requested: int = 0) -> int:
    """Applies the policy to torch's intra-op threads and returns the count in force."""
    import torch

    count = thread_count(requested)
    if count and torch.get_num_threads() != count:
        torch.set_num_threads(count)
        log.info("torch uses %d thread(s)%s", count, f" (from ${ENV})" if os.environ.get(ENV) else "")
    return torch.get_num_threads()
