"""Progress lines: rows, rates and an estimate; shown on a terminal only, never in CI logs."""
from __future__ import annotations

import io

from pipelines import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert progress.wanted(5, _Tty())
    assert not progress.wanted(5, io.StringIO())          # a log file or a pipe
    assert not progress.wanted(0, _Tty())                 # --progress_s 0
    monkeypatch.setenv("CI", "true")
    assert not progress.wanted(5, _Tty())
    monkeypatch.setenv("CI", "false")
    assert progress.wanted(5, _Tty())


def test_line_has_rows_rates_and_time_left():
    snap = {"ingest": {"kept": 1000, progress.FILES: 2}, "text": {"kept": 600, "text_too_short": 200}}
    text = progress.line(snap, {"ingest": 0.0, "text": 2.0}, now=10.0, total_files=8)
    ingest, stage = text.split(" | ")
    # 1,000 rows from 2 of 8 files: about 4,000 rows in all, at 100 rows/s: 30 s left
    assert ingest == "ingest 1,000 (100/s, files 2/8, ~30 s left)"
    # text: 800 done (200 rejected) in 8 s, 3,200 left of the estimate at 100/s
    assert stage == "text 800 (-200) (100/s, ~32 s left)"
    assert "left" not in progress.line(snap, {"ingest": 0.0}, now=10.0, total_files=None)
