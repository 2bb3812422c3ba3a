"""Live per-stage progress while a pipeline runs locally: rows done, rows/s, and an estimate of the
time left once the input's size is known.

Beam's Metrics are exact but only readable when a run ends (or in the runner's UI on
Dataflow/Flink). For local runs on a terminal the launcher sets KEYE_PROGRESS_S (and
KEYE_PROGRESS_FILES, the number of input files it listed); each worker process then keeps its own
counts and prints one line per interval to stderr:

    [progress pid 123] ingest 12,400 (2,480/s, files 3/10, ~36 s left) | text 12,100 (2,420/s) | ...

The estimate extrapolates rows from the share of files read. Quiet where nobody watches: off on
remote runners, when stderr is not a terminal, and when CI is set (`--progress_s 0` turns it off).
"""
from __future__ import annotations

import collections
import os
import sys
import threading
import time
from typing import Optional

_ENV = "KEYE_PROGRESS_S"
_FILES_ENV = "KEYE_PROGRESS_FILES"
FILES = "files"          # the pseudo-outcome ingest counts files under
_lock = threading.Lock()
_counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
_first_seen: dict[str, float] = {}
_started = False
_last_line = ""


def wanted(interval_s: float, stream=None) -> bool:
    """Progress is shown on a terminal only, never in CI logs."""
    stream = stream if stream is not None else sys.stderr
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return interval_s > 0 and not ci and bool(getattr(stream, "isatty", lambda: False)())


def enable(interval_s: float, total_files: Optional[int] = None) -> None:
    """Called by the launcher; worker subprocesses inherit the setting."""
    os.environ[_ENV] = str(interval_s)
    if total_files:
        os.environ[_FILES_ENV] = str(total_files)


def count(stage: str, outcome: str, n: int = 1) -> None:
    if _ENV not in os.environ:
        return
    with _lock:
        _counts[stage][outcome] += n
        _first_seen.setdefault(stage, time.monotonic())
    _ensure_thread()


def snapshot() -> dict[str, dict[str, int]]:
    with _lock:
        return {s: dict(c) for s, c in _counts.items()}


def line(snap: dict[str, dict[str, int]], first_seen: dict[str, float], now: float,
         total_files: Optional[int]) -> str:
    """One progress line: per stage rows done (kept/-rejected), rows/s, time left when estimable."""
    ingest = snap.get("ingest", {})
    files = ingest.get(FILES, 0)
    est_rows = None
    if total_files and files:
        est_rows = (sum(v for k, v in ingest.items() if k != FILES)) * total_files / files
    parts = []
    for stage, c in snap.items():
        kept = c.get("kept", 0)
        rejected = sum(v for k, v in c.items() if k not in ("kept", FILES))
        done = kept + rejected
        rate = done / max(1e-6, now - first_seen.get(stage, now))
        text = f"{stage} {done:,}" + (f" (-{rejected:,})" if rejected else "") + f" ({rate:,.0f}/s"
        if stage == "ingest" and total_files:
            text += f", files {files}/{total_files}"
        if est_rows is not None and rate > 0 and est_rows > done:
            text += f", ~{(est_rows - done) / rate:,.0f} s left"
        parts.append(text + ")")
    return " | ".join(parts)


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
    with _lock:
        first_seen = dict(_first_seen)
    total = int(os.environ.get(_FILES_ENV, "0") or 0) or None
    text = line(snapshot(), first_seen, time.monotonic(), total)
    if text and text != _last_line:
        _last_line = text
        print(f"[progress pid {os.getpid()}] {text}", file=sys.stderr, flush=True)
