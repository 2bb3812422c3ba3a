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
_last_seen: dict[str, float] = {}
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
        now = time.monotonic()
        _first_seen.setdefault(stage, now)
        _last_seen[stage] = now
    _ensure_thread()


def snapshot() -> dict[str, dict[str, int]]:
    with _lock:
        return {s: dict(c) for s, c in _counts.items()}


def line(snap: dict[str, dict[str, int]], seen: dict[str, tuple[float, float]], total_files: Optional[int]) -> str:
    """One progress line, stages in the order they first counted (the pipeline's): rows done
    (rejected in brackets), rows/s while the stage ran, and the time left once ingest has read
    some files: the rows a stage will see are the rows read, scaled by the share of files read,
    less those rejected upstream (scaled alike)."""
    ingest = snap.get("ingest", {})
    files, read = ingest.get(FILES, 0), ingest.get("kept", 0)
    scale = total_files / files if total_files and files else None
    parts, upstream_rejected = [], 0
    for stage, c in snap.items():
        kept = c.get("kept", 0)
        rejected = sum(v for k, v in c.items() if k not in ("kept", FILES))
        done = kept if stage == "ingest" else kept + rejected   # ingest's rejections are counted downstream
        first, last = seen.get(stage, (0.0, 0.0))
        rate = done / max(1e-3, last - first)
        text = f"{stage} {done:,}" + (f" (-{rejected:,})" if rejected else "") + f" ({rate:,.0f}/s"
        if stage == "ingest" and total_files:
            text += f", files {files}/{total_files}"
        if scale is not None:
            left = (read - upstream_rejected) * scale - done
            if left >= 1 and rate > 0:
                text += f", ~{left / rate:,.0f} s left"
        upstream_rejected += rejected
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
        seen = {s: (_first_seen[s], _last_seen[s]) for s in _first_seen}
    total = int(os.environ.get(_FILES_ENV, "0") or 0) or None
    text = line(snapshot(), seen, total)
    if text and text != _last_line:
        _last_line = text
        print(f"[progress pid {os.getpid()}] {text}", file=sys.stderr, flush=True)
