"""The rules both stores apply to replay guards and rate limits, so that SQLite and Tables agree.

A rate limit is a sliding window log: a bucket keeps the times of its takes within the last
`window_s` seconds, at most `limit` of them. A take is allowed when fewer than `limit` are kept;
otherwise the wait is until the oldest kept take leaves the window. Refused takes are not kept, so
a caller that keeps asking waits exactly as long as it was told.
"""

from __future__ import annotations

import json
from datetime import datetime

MAX_LIMIT = 1000
"""The most takes a bucket keeps: its log stays one small value (a Tables string property holds 64 KiB)."""


def check_take(limit: int, window_s: float) -> None:
    """Refuse a limit the stores cannot keep (a programming error, not the caller's input)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1 to {MAX_LIMIT}, not {limit}")
    if not window_s > 0:
        raise ValueError(f"window_s must be positive, not {window_s}")


def read_takes(text: str | None) -> list[float]:
    """Read a bucket's log (epoch seconds); an unreadable one counts as empty."""
    if not text:
        return []
    try:
        values = json.loads(text)
    except ValueError:
        return []
    return [float(v) for v in values if isinstance(v, int | float)] if isinstance(values, list) else []


def write_takes(takes: list[float]) -> str:
    """Write a bucket's log."""
    return json.dumps([round(t, 6) for t in takes], separators=(",", ":"))


def slide(takes: list[float], *, now: datetime, limit: int, window_s: float) -> tuple[list[float], float | None]:
    """Return the log after one take at `now` and None, or the log unchanged but trimmed and the wait."""
    at = now.timestamp()
    # Takes "in the future" (another instance's clock runs ahead) are kept: they count until they leave.
    kept = sorted(t for t in takes if t > at - window_s)
    if len(kept) < limit:
        return [*kept, at], None
    wait = kept[-limit] + window_s - at
    return kept, max(wait, 0.001)
