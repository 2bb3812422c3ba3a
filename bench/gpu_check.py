"""`python -m bench.gpu_check [--cpu-only]`: exercise every GPU path of the engine on a small input and
print one JSON line per path: {"path", "ok", "device", "seconds", "cpu_seconds", "ratio_vs_cpu", ...}.

    decord_nvdec         decord VideoReader on gpu(0) vs cpu(0): the same frames (mean abs diff), time
    faiss_gpu            filters.semantic.range_pairs on the GPU vs the CPU: the same pairs, time
    clip_cuda            captioners.clip.ClipModel (ViT-B-32, random weights) on cuda vs cpu: cosines, time
    recaption_cuda       captioners.backends.TransformersBackend (a tiny Qwen2-VL built here) on cuda vs cpu
    trainer_bf16         the tiny Keye recipe, 20 steps, bf16 autocast on cuda vs float32 on the cpu
    trainer_fsdp         the same under torchrun with FSDP2 (cuda only)

Each path runs its CPU twin too, so `--cpu-only` (CI) checks that every path's CPU side still
works and prints ok with device "cpu"; a GPU path with no GPU prints ok null and why.
`bench/gpu_check.sh` installs what the GPU paths need first. Keep the total under 8 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Optional

import numpy as np


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken CUDA install counts as none
        return False


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _clip(path: str, seconds: int = 4) -> str:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:d={seconds}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", path], check=True)
    return path


def check_decord(tmp: str, gpu: bool) -> dict:
    import decord

    path = _clip(os.path.join(tmp, "clip.mp4"))
    idx = list(range(0, 120, 4))
    cpu_s, ref = _timed(lambda: decord.VideoReader(path, ctx=decord.cpu(0)).get_batch(idx).asnumpy())
    out = {"cpu_seconds": round(cpu_s, 3), "frames": len(idx)}
    if not gpu:
        return {**out, "ok": ref.shape[0] == len(idx), "device": "cpu"}
    gpu_s, got = _timed(lambda: decord.VideoReader(path, ctx=decord.gpu(0)).get_batch(idx).asnumpy())
    diff = float(np.abs(got.astype(np.int16) - ref.astype(np.int16)).mean())
    return {**out, "ok": got.shape == ref.shape and diff < 4.0, "device": "cuda", "seconds": round(gpu_s, 3),
            "mean_abs_diff": round(diff, 3), "ratio_vs_cpu": round(cpu_s / gpu_s, 2)}


def check_faiss(tmp: str, gpu: bool) -> dict:
    from filters.semantic import gpu_available, range_pairs

    rng = np.random.default_rng(0)
    n, d = (20_000, 256) if gpu else (2_000, 64)
    base = rng.standard_normal((n, d)).astype(np.float32)
    x = np.concatenate([base, base[:n // 10] + 0.05 * rng.standard_normal((n // 10, d)).astype(np.float32)])
    cpu_s, (qi, qj) = _timed(lambda: range_pairs(x, 0.95, use_gpu=False))
    want = set(zip(qi.tolist(), qj.tolist()))
    out = {"cpu_seconds": round(cpu_s, 3), "pairs": len(want)}
    if not gpu:
        return {**out, "ok": len(want) >= n // 10, "device": "cpu"}
    if not gpu_available():
        return {**out, "ok": False, "device": "cuda", "error": "faiss has no GPU support (install faiss-gpu)"}
    gpu_s, (gi, gj) = _timed(lambda: range_pairs(x, 0.95, use_gpu=True))
    got = set(zip(gi.tolist(), gj.tolist()))
    return {**out, "ok": got == want, "device": "cuda", "seconds": round(gpu_s, 3),
            "ratio_vs_cpu": round(cpu_s / gpu_s, 2), "recall": round(len(got & want) / max(1, len(want)), 4)}


def check_clip(tmp: str, gpu: bool) -> dict:
    from captioners.clip import ClipRef, ClipScorer

    # ViT-B-32 with random weights on a GPU machine (a real model's compute, no download); CI: the bundled tiny CLIP
    ref = ClipRef("ViT-B-32", None) if gpu else ClipRef("builtin:tiny-clip-synth", None)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(128 if gpu else 8)]
    cpu_model = ClipScorer(ref, device="cpu")
    cpu_s, want = _timed(lambda: cpu_model.embed_images(pictures))
    out = {"cpu_seconds": round(cpu_s, 3), "images": len(pictures)}
    if not gpu:
        return {**out, "ok": want.shape[0] == len(pictures) and bool(np.isfinite(want).all()), "device": "cpu"}
    model = ClipScorer(ref, device="cuda")
    model.embed_images(pictures[:32])                      # warm-up: CUDA context, kernels
    gpu_s, got = _timed(lambda: model.embed_images(pictures))
    cos = float(np.min(np.sum(got * want, axis=1)))
    return {**out, "ok": cos > 0.999, "device": "cuda", "seconds": round(gpu_s, 3), "min_cosine_vs_cpu": round(cos, 5),
            "ratio_vs_cpu": round(cpu_s / gpu_s, 2)}


def check_recaption(tmp: str, gpu: bool) -> dict:
    import io

    from PIL import Image

    from captioners.backends import CaptionRequest, TransformersBackend
    from captioners.tiny_vlm import build
    from schemas.config import TransformersBackendConfig

    model_dir = build(os.path.join(tmp, "tiny-vlm"))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    reqs = [CaptionRequest(f"r{i}", "p", "Describe the picture.", [buf.getvalue()], seed=i) for i in range(8 if gpu else 2)]

    def run(device: str):
        cfg = TransformersBackendConfig(model=model_dir, device=device, dtype="float32", trust_remote_code=False,
                                        batch_size=8, max_retries=0)
        # sampled: greedy decoding of the random tiny model writes only newlines (an empty caption)
        backend = TransformersBackend(cfg, max_new_tokens=16, temperature=0.8, captioner_id="gpu_check")
        backend.setup()
        return _timed(lambda: backend.caption(reqs))

    cpu_s, cpu_res = run("cpu")
    out = {"cpu_seconds": round(cpu_s, 3), "requests": len(reqs)}
    if not gpu:
        return {**out, "ok": all(r.ok for r in cpu_res), "device": "cpu"}
    gpu_s, res = run("cuda")
    return {**out, "ok": all(r.ok for r in res), "device": "cuda", "seconds": round(gpu_s, 3),
            "same_text_as_cpu": sum(a.text == b.text for a, b in zip(res, cpu_res)),
            "ratio_vs_cpu": round(cpu_s / gpu_s, 2)}


TRAINER_DATA_ENV = "GPU_CHECK_TRAINER_DATA"


def _trainer_data(tmp: str) -> str:
    """A small curated output (the synthetic demo through `curate`), built once per check run; or a folder
    built elsewhere (--trainer-data), for a GPU image that has the trainer's packages but not Beam's."""
    given = os.environ.get(TRAINER_DATA_ENV)
    if given:
        return given
    out = os.path.join(tmp, "trainer_data")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        subprocess.run([sys.executable, "-m", "pipelines.curate", "--demo", "--output", out, "--progress_s", "0"],
                       check=True, capture_output=True, timeout=600)
    return out


def _train(tmp: str, name: str, device: str, steps: int, extra: list[str], launcher: list[str]) -> dict:
    """One short run of the tiny recipe; its last log record and wall time."""
    run_dir = os.path.join(tmp, f"train-{name}")
    sets = [f"optim.max_steps={steps}", "optim.warmup_steps=2", f"run.device={device}", "run.tensorboard=false",
            "run.progress=never", f"run.checkpoint_every={steps}", "run.log_every=1", *extra]
    cmd = [*launcher, "trainer.train", "--config", os.path.join("configs", "train_tiny.yaml"),
           "--data", _trainer_data(tmp), "--output", run_dir]
    for kv in sets:
        cmd += ["--set", kv]
    seconds, proc = _timed(lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=600))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {proc.stderr[-600:]}")
    with open(os.path.join(run_dir, "log.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps_done = [r for r in records if "loss" in r]
    return {"seconds": seconds, "loss": steps_done[-1]["loss"], "first_loss": steps_done[0]["loss"],
            "tokens_per_s": steps_done[-1].get("tokens_per_s")}


def check_trainer(tmp: str, gpu: bool, mode: str) -> dict:
    """bf16: the tiny recipe a few steps on CUDA under bf16 autocast against float32 on the CPU (the loss
    must fall on both). fsdp: the same under torchrun with FSDP2 (GPU only; DDP on CPU is covered by
    tests/test_trainer_train.py)."""
    py = [sys.executable, "-m"]
    if mode == "fsdp":
        if not gpu:
            return {"ok": None, "device": "cpu", "skipped": "FSDP shards over GPUs; CPU DDP is tested in tests/"}
        run = _train(tmp, "fsdp", "cuda", 20, ["model.dtype=bfloat16", "run.distributed=fsdp"],
                     [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m"])
        return {"ok": run["loss"] < run["first_loss"], "device": "cuda", "seconds": round(run["seconds"], 3),
                "first_loss": round(run["first_loss"], 4), "loss": round(run["loss"], 4)}
    cpu = _train(tmp, "cpu", "cpu", 20 if gpu else 3, ["model.dtype=float32"], py)
    out = {"cpu_seconds": round(cpu["seconds"], 3), "cpu_loss": round(cpu["loss"], 4)}
    if not gpu:
        return {**out, "ok": bool(np.isfinite(cpu["loss"])), "device": "cpu"}
    run = _train(tmp, "bf16", "cuda", 20, ["model.dtype=bfloat16"], py)
    return {**out, "ok": run["loss"] < run["first_loss"] and abs(run["loss"] - cpu["loss"]) < 0.5,
            "device": "cuda", "seconds": round(run["seconds"], 3), "loss": round(run["loss"], 4),
            "ratio_vs_cpu": round(cpu["seconds"] / run["seconds"], 2)}


CHECKS: dict[str, tuple[Callable, bool]] = {   # path -> (check, needs a GPU to mean anything)
    "decord_nvdec": (check_decord, True),
    "faiss_gpu": (check_faiss, True),
    "clip_cuda": (check_clip, True),
    "recaption_cuda": (check_recaption, True),
    "trainer_bf16": (lambda tmp, gpu: check_trainer(tmp, gpu, "bf16"), True),
    "trainer_fsdp": (lambda tmp, gpu: check_trainer(tmp, gpu, "fsdp"), True),
}


def run_check(name: str, gpu: bool, tmp: str) -> dict:
    fn, _ = CHECKS[name]
    started = time.perf_counter()
    try:
        result = fn(tmp, gpu)
    except Exception as e:  # noqa: BLE001 - one broken path is reported, the others still run
        result = {"ok": False, "device": "cuda" if gpu else "cpu", "error": f"{type(e).__name__}: {e}",
                  "trace": traceback.format_exc(limit=-3)[-800:]}
    return {"path": name, **result, "wall_s": round(time.perf_counter() - started, 3)}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-only", action="store_true", help="run each path's CPU side only (CI)")
    ap.add_argument("--only", nargs="*", default=list(CHECKS), choices=list(CHECKS))
    ap.add_argument("--trainer-data", default=None,
                    help="a curated output folder for the trainer paths (default: build the demo with curate)")
    args = ap.parse_args(argv)
    if args.trainer_data:
        os.environ[TRAINER_DATA_ENV] = os.path.abspath(args.trainer_data)
    gpu = not args.cpu_only and _cuda()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        if not args.cpu_only and not gpu:
            print(json.dumps({"path": "cuda", "ok": False, "error": "no CUDA device: every GPU path untested"}))
            failed += 1
        for name in args.only:
            result = run_check(name, gpu, tmp)
            print(json.dumps(result), flush=True)
            failed += result["ok"] is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
