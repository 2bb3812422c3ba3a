"""Live per-stage counts while a pipeline runs locally.

Beam's Metrics are exact but only readable when a run ends (or from the runner's UI on
Dataflow/Flink). For local runs the launcher sets KEYE_PROGRESS_S; each worker process
then keeps its own counts and prints one line per interval to stderr. On remote runners
the variable is unset and this module does nothing.
"""
from __future__ import annotations

import collections
import os
import sys
import threading
import time

_ENV = "KEYE_PROGRESS_S"
_lock = threading.Lock()
_counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
_started = False
_last_line = ""


def enable(interval_s: float) -> None:
    """Called by the launcher; worker subprocesses inherit the setting."""
    os.environ[_ENV] = str(interval_s)


def count(stage: str, outcome: str, n: int = 1) -> None:
    if _ENV not in os.environ:
        return
    with _lock:
        _counts[stage][outcome] += n
    _ensure_thread()


def snapshot() -> dict[str, dict[str, int]]:
    with _lock:
        return {s: dict(c) for s, c in _counts.items()}


def _ensure_thread() -> None:
    global _started
    if _started:
        return
    with _lock:
        if _started:
            return
        _started = True
    t = threading.Thread(target=_loop, name="keye-progress", daemon=True)
    t.start()


def _loop() -> None:
    interval = float(os.environ.get(_ENV, "5") or 5)
    while True:
        time.sleep(interval)
        _print_line()


def _print_line() -> None:
    global _last_line
    snap = snapshot()
    parts = []
    for stage, c in snap.items():
        rejected = sum(v for k, v in c.items() if k != "kept")
        parts.append(f"{stage} {c.get('kept', 0)}" + (f"/-{rejected}" if rejected else ""))
    line = " | ".join(parts)
    if line and line != _last_line:
        _last_line = line
        print(f"[progress pid {os.getpid()}] kept/-rejected: {line}", file=sys.stderr, flush=True)
