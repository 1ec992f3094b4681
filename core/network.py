"""Whether a host answers: the one network probe, for the code paths that would fetch from the hub."""

from __future__ import annotations

import socket


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds (nothing is fetched)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
