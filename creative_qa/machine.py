"""What this machine gives the process: one home for the core count every part sizes its workers by."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """Cores this process may run on (its affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
