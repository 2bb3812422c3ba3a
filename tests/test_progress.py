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
    snap = {"ingest": {"kept": 1000, progress.FILES: 2, "malformed_json": 100},
            "text": {"kept": 600, "text_too_short": 200}}
    text = progress.line(snap, {"ingest": (0.0, 10.0), "text": (2.0, 10.0)}, total_files=8)
    ingest, stage = text.split(" | ")
    # 1,000 rows from 2 of 8 files: about 4,000 rows in all, at 100 rows/s: 30 s left
    assert ingest == "ingest 1,000 (-100) (100/s, files 2/8, ~30 s left)"
    # text sees the rows ingest did not reject: (1,000 - 100) x 4 = 3,600; 800 done at 100/s
    assert stage == "text 800 (-200) (100/s, ~28 s left)"
    # a stage that stopped keeps the rate it ran at; nothing left: no estimate
    done = {"ingest": {"kept": 1000, progress.FILES: 8}, "text": {"kept": 1000}}
    assert progress.line(done, {"ingest": (0.0, 10.0), "text": (0.0, 5.0)}, total_files=8) == \
        "ingest 1,000 (100/s, files 8/8) | text 1,000 (200/s)"
    assert "left" not in progress.line(snap, {"ingest": (0.0, 10.0)}, total_files=None)
