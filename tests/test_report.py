"""The run report: written at the end of a run, regenerated from the output alone, rendered by
headless Chromium without console errors and with charts on the screenshot; --what-if counts
from stored scores match a direct count over the shards."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter

from pipelines.curate import build_curate
from pipelines.launch import run
from pipelines.report import main as report_main
from pipelines.report import what_if
from schemas.manifest import Manifest, read_shard_index

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """A small curated output: textured pictures of several sharpnesses, a dark one, text rows."""
    src = tmp_path_factory.mktemp("report_in")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(8):
        noise = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        img = Image.fromarray(noise).resize((128 + 16 * k, 96 + 8 * k)).filter(
            ImageFilter.GaussianBlur(k * 0.4))
        if k == 7:
            img = Image.new("RGB", (64, 64), (2, 2, 2))      # too dark
        img.save(src / f"img{k}.png")
        rows.append({"image": f"img{k}.png", "caption": f"a picture number {k} of coloured noise"})
    rows += [{"text": f"plain text row {k} " * (k + 1)} for k in range(5)]
    (src / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path_factory.mktemp("report_out")
    manifest = run("curate", build_curate, ["--input", str(src / "rows.jsonl"), "--output", str(out),
                                            "--progress_s", "0", "--set", "output.shard_max_rows=5"])
    return manifest, out


def test_report_is_written_with_the_run_and_regenerated(output):
    manifest, out = output
    first = (out / "report.html").read_text()
    assert "Funnel" in first and "media/too_dark" in first
    t = manifest.totals     # exact token totals by task and mode, from the manifest's combiner
    assert sum(t.tokens_by_task.values()) == sum(t.tokens_by_mode.values()) == t.text_tokens + t.visual_tokens > 0
    assert f"{t.tokens_by_task['caption']:,}" in first
    (out / "report.html").unlink()
    assert report_main([str(out)]) == 0
    again = (out / "report.html").read_text()
    assert again.count("<img") == first.count("<img") and again.count("<img") >= 8
    assert "http://" not in again and "https://" not in again and "<script" not in again   # self-contained


def test_report_renders_in_headless_chromium(output, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    _, out = output
    shot = tmp_path / "shot.png"
    proc = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--window-size=1300,2600", f"--screenshot={shot}",
                           (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines()
               if "CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line]
    assert not console, console
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = (abs(pixels[..., 0] - 0x4C) < 12) & (abs(pixels[..., 1] - 0x8B) < 12) & (abs(pixels[..., 2] - 0xD6) < 12)
    red = (abs(pixels[..., 0] - 0xE0) < 12) & (abs(pixels[..., 1] - 0x7B) < 12) & (abs(pixels[..., 2] - 0x5F) < 12)
    assert blue.sum() > 5000, "no kept bars (funnel, histograms) on the screenshot"
    assert red.sum() > 500, "no rejected bars on the screenshot"
    assert (pixels.sum(axis=2) < 200).mean() > 0.002, "no text or axes on the screenshot"


def test_what_if_counts_match_the_shards(output, capsys):
    manifest, out = output
    m = Manifest.load(str(out))
    sharp = [r["scores"]["media_min_sharpness"] for s in read_shard_index(str(out))["parquet"]
             for r in pq.read_table(out / s.path, columns=["scores"]).to_pylist()
             if r["scores"]["media_min_sharpness"] is not None]
    cut = sorted(sharp)[len(sharp) // 2]
    result = what_if(str(out), m, {"media.quality.min_sharpness": cut, "media.quality.min_brightness": 0.0})
    by_key = {t["key"]: t for t in result["thresholds"]}
    assert by_key["media.quality.min_sharpness"]["kept_lost"] == sum(v < cut for v in sharp) > 0
    assert by_key["media.quality.min_brightness"]["rejected_recovered"] == 1     # the dark picture
    assert result["kept_rows"] == manifest.totals.kept
    assert result["kept_passing_all_new_thresholds"] == manifest.totals.kept - sum(v < cut for v in sharp)
    assert report_main([str(out), "--what-if", f"media.quality.min_sharpness={cut}"]) == 0
    assert json.loads(capsys.readouterr().out)["thresholds"][0]["new"] == cut
    with pytest.raises(SystemExit, match="not a threshold"):
        report_main([str(out), "--what-if", "media.quality.nonsense=1"])
    assert os.path.exists(out / "shards.parquet")
