"""The monitoring pipeline's settings: the window read and the thresholds a breach is judged by."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.validation import STRICT

_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Thresholds:
    """The ``monitoring_report`` step's ``thresholds``: a breach fails the step with a message (or only warns).

    Judged only when the window holds at least ``min_requests`` requests (fewer say too little). ``max_p95_ms``
    is the 95th-percentile latency of served requests; ``max_error_rate`` the share answered 5xx;
    ``max_length_drift`` the Kolmogorov-Smirnov statistic between served and training prompt lengths (0 the
    same, 1 disjoint); ``max_mix_shift`` the total-variation distance between the served and the trained
    form mix (0 the same, 1 disjoint).
    """

    __pydantic_config__ = STRICT

    min_requests: int = 20
    max_p95_ms: float = 60_000.0
    max_error_rate: float = 0.05
    max_length_drift: float = 0.5
    max_mix_shift: float = 0.5
    fail_on_breach: bool = True


def parse_since(since: str, now: datetime | None = None) -> datetime | None:
    """The start of the window: ``30m``, ``24h``, ``7d``, ``2w`` back from now, an ISO date/time, or '' (all).

    Raises:
        ValueError: Naming the value when it is none of those.
    """
    now = now or datetime.now(UTC)
    if not since.strip():
        return None
    match = _RELATIVE.match(since)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(since.strip())
    except ValueError:
        raise ValueError(f"--since {since!r}: use 30m, 24h, 7d, 2w or an ISO date such as 2026-12-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
