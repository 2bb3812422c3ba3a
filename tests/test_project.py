"""bench.project: rates from benchmark reports, hours that scale with the corpus, a cluster shape."""
from __future__ import annotations

import json

from bench.project import main, parse_args, project


def test_rates_come_from_benchmark_reports(tmp_path, capsys):
    decode = tmp_path / "decode.json"
    decode.write_text(json.dumps({"bench": "decode", "throughput": {"video_seconds_per_s_per_core": 30.4}}))
    assert main(["--tokens", "600e9", "--from", str(decode), "--markdown"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[:out.index("\n| stage")])
    assert report["assumptions"]["video_s_per_core_s"] == 30.4
    assert "decode.json" in report["rates_from_benchmarks"]["video_s_per_core_s"]
    base = project(parse_args(["--tokens", "600e9"]))
    video = lambda r: next(s for s in r["stages"] if s["stage"].startswith("media: video"))["core_hours"]
    assert abs(video(report) * 2 - video(base)) <= 1      # twice the rate: half the core-hours
    assert "| **total** |" in out and "CPU nodes" in out


def test_hours_scale_with_tokens_and_mix():
    a = project(parse_args(["--tokens", "100e9"]))
    b = project(parse_args(["--tokens", "200e9"]))
    assert abs(b["core_hours"] - 2 * a["core_hours"]) <= len(a["stages"])
    assert abs(b["gpu_hours"] - 2 * a["gpu_hours"]) <= len(a["stages"])
    text_only = project(parse_args(["--mix", "text=1"]))
    assert text_only["gpu_hours"] == 0 and text_only["kept_samples"]["video"] == 0
    fast = project(parse_args(["--days", "1"]))
    assert fast["cluster"]["cpu_nodes"] >= 14 * project(parse_args([]))["cluster"]["cpu_nodes"] - 14
