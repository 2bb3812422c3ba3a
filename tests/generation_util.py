"""Fixtures for the mixture builders' tests: a small corpus the synthetic reasoner knows, its rows as
Samples, and a TEST FAKE of the code sandbox.

`FakeSandbox` is NOT a sandbox: it runs the snippet in a plain subprocess (with `/input/` rewritten to a
temporary folder) so the think-with-image builder can be tested where the real one (mixture/sandbox/,
bubblewrap) is not available. It implements the same interface: `setup()`, `run(code, inputs) ->
result(ok, reason, detail, stdout, files, wall_s)`.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image

from schemas.input import normalize_row
from synthetic import coldstart
from synthetic import language as lang
from synthetic.scenes import Clip, Scene, Shape, clip_frames, draw, encode_image, random_scene
from tests.conftest import row_context


@dataclass
class FakeResult:
    ok: bool
    reason: Optional[str]
    detail: str
    stdout: str
    files: dict = field(default_factory=dict)
    wall_s: float = 0.0


class FakeSandbox:
    """TEST FAKE, no isolation: a plain subprocess with a timeout (see the module docstring)."""

    def __init__(self, timeout_s: float = 20.0) -> None:
        self.timeout_s = timeout_s
        self.runs = 0

    def setup(self) -> None:
        pass

    def run(self, code: str, inputs: dict) -> FakeResult:
        self.runs += 1
        t = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "input"))
            os.makedirs(os.path.join(tmp, "output"))
            for name, data in inputs.items():
                with open(os.path.join(tmp, "input", name), "wb") as f:
                    f.write(data)
            code = code.replace("/input/", os.path.join(tmp, "input") + "/")
            try:
                p = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(tmp, "output"), capture_output=True,
                                   timeout=self.timeout_s, text=True)
            except subprocess.TimeoutExpired:
                return FakeResult(False, "code_timeout", "timeout", "", {}, time.monotonic() - t)
            if p.returncode:
                return FakeResult(False, "code_error", p.stderr[-300:], p.stdout, {}, time.monotonic() - t)
            out = os.path.join(tmp, "output")
            files = {}
            for name in sorted(os.listdir(out)):
                with open(os.path.join(out, name), "rb") as f:
                    files[name] = f.read()
            return FakeResult(True, None, "", p.stdout, files, time.monotonic() - t)


def _save(root: str, rel: str, img: Image.Image) -> None:
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    with open(os.path.join(root, rel), "wb") as f:
        f.write(encode_image(img, "png"))


def mini_corpus(root: str, n_qa: int = 14, seed: int = 7) -> dict[str, list]:
    """scenes.jsonl + pictures under root; returns {"image": [...], "traced": [...], "agentic": [...],
    "video": [...]} Samples (as the validate stage makes them; videos with their sampled frames)."""
    rng = np.random.default_rng(seed)
    records, out = [], {"image": [], "traced": [], "agentic": [], "video": []}

    def sample(payload: dict, ref: str):
        s = normalize_row(payload, row_context(base_dir=root, source_ref=ref, source="mini"))
        assert not hasattr(s, "reason"), s
        return s

    for i in range(n_qa):
        scene = random_scene(rng, int(rng.integers(160, 320)), int(rng.integers(120, 240)), int(rng.integers(1, 5)))
        rel = f"media/qa_{i}.png"
        _save(root, rel, draw(scene))
        records.append(coldstart.scene_record(rel, scene))
        q, a, reasoning = lang.image_qa(scene, rng)
        payload = {"image": rel, "question": q, "answer": a}
        out["image"].append(sample(payload, f"qa:{i}"))
        if i < 2:
            out["traced"].append(sample({**payload, "reasoning": reasoning}, f"traced:{i}"))
    for i in range(4):
        task = (coldstart.low_contrast_ocr if i % 2 == 0 else coldstart.rotated_scene)(rng, f"agentic_{i}")
        rel = f"media/{task.name}.png"
        _save(root, rel, task.image)
        records.append({**task.record, "path": rel})
        out["agentic"].append(sample({"image": rel, "question": task.question, "answer": task.answer,
                                      "task": task.task}, f"agentic:{i}"))
    for i in range(2):
        scene = Scene(192, 144, "white", False, (Shape("circle", ("red", "blue")[i], 60.0, 70.0, 20.0),))
        clip = Clip(scene, (("left to right", "top to bottom")[i],), 10, 12)
        rel = f"media/clip_{i}.mp4"
        records.append(coldstart.scene_record(rel, scene, clip))
        q, a, reasoning = lang.video_qa(clip)
        s = sample({"video": rel, "question": q, "answer": a, **({"reasoning": reasoning} if i else {})}, f"vid:{i}")
        frames = list(clip_frames(clip))[::3]
        item = s.media[0]
        item.members = [f"{s.id}.0.{k:03d}.jpg" for k in range(len(frames))]
        item.frame_timestamps = [k * 0.3 for k in range(len(frames))]
        item.width, item.height, item.visual_tokens = 196, 140, 35 * len(frames)
        for name, f in zip(item.members, frames):
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, "JPEG", quality=90)
            s.blobs[name] = buf.getvalue()
        out["video"].append(s)
    with open(os.path.join(root, "scenes.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
    return out
