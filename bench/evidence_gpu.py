"""`python -m bench.evidence_gpu --data OUT --work DIR --budget-s S`: the evidence run's training on one
GPU, several model sizes side by side, each fitted to a wall-time budget; scored afterwards anywhere.

    OUT (curated elsewhere: `trainer.evidence --phase train` on a CPU machine, or any curate run)
      ─▶ one process per variant, all sharing the GPU (a tiny model leaves it mostly idle):
           untrained ─ stage 1 (projector; its step time measured) ─ [--primer: its steps on one-shape
           clips] ─ stage 2 (as many steps as fit the rest of the budget, so its cosine schedule ends)
           ─▶ DIR/VARIANT/{stage1,primer,stage2}/checkpoints
      ─▶ --pack-to P: one tar per checkpoint (weights, configs, state, logs), small enough to copy back
    then, on a machine with the pipeline's media code: `python -m trainer.evidence --work DIR/VARIANT
    --phase score` (it rebuilds the untrained model from DIR/VARIANT/overrides.json).

A GPU image needs the trainer's packages only (torch, transformers, webdataset, the tokenizer), not Beam
or PyAV. Variants are model sizes, vision learning rates, Keye's mRoPE and a stage-0 SigLIP pre-training of the
vision tower (README, "Evidence"); prints one JSON line
per variant: steps, step time, final loss, seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from typing import Optional

SMALL = ["model.vision_config.hidden_size=128", "model.vision_config.intermediate_size=256",
         "model.vision_config.num_hidden_layers=4", "model.vision_config.num_attention_heads=4",
         "model.llm_config.hidden_size=192", "model.llm_config.intermediate_size=512",
         "model.llm_config.num_hidden_layers=4", "model.llm_config.num_attention_heads=4",
         "model.llm_config.num_key_value_heads=2", "model.llm_config.head_dim=48", "optim.lr=0.001"]
VARIANTS: dict[str, tuple[list[str], int]] = {          # name -> (recipe overrides, stage-0 steps)
    "tiny": ([], 0),                                                   # the CPU evidence model, longer
    "small": (SMALL, 0),                                               # 4 layers each, wider
    "small_vlr": (SMALL + ['optim.lr_scale={"vision.*": 0.3}'], 0),    # ... its vision tower learning faster
    "tiny_mrope": (["model.visual_positions=mrope"], 0),               # Keye-VL's multimodal RoPE
    "tiny_s0": ([], 600),                                              # SigLIP pre-training of the tower first
    "tiny_s0_mrope": (["model.visual_positions=mrope"], 600),          # both
}
STAGE0_BATCH = 256
STAGE2_COST = 1.5        # a stage-2 step (vision trained too) against a stage-1 step, measured on CPU: 1.3-1.5x
SAVE_MARGIN_S = 25       # process start, the final checkpoint
STAGES = ("stage1", "primer", "stage2")     # trainer.evidence's trained stages, in order


def fit_steps(stage1_dir: str, deadline: float, lo: int = 50, hi: int = 200_000) -> int:
    """Stage-2 steps that end by `deadline`, from stage 1's median logged step time."""
    with open(os.path.join(stage1_dir, "log.jsonl"), encoding="utf-8") as f:
        times = [json.loads(line)["step_s"] for line in f if '"step_s"' in line]
    per_step = statistics.median(times[len(times) // 2:] or times) * STAGE2_COST
    return max(lo, min(hi, int((deadline - time.time() - SAVE_MARGIN_S) / per_step)))


def run_variant(name: str, data: str, work: str, deadline: float, stage1_steps: int, pack_length: int,
                workers: int, device: str, extra: list[str], stage0_steps: Optional[int] = None,
                primer: Optional[tuple[str, int]] = None) -> dict:
    from trainer.evidence import recipe_overrides, train_all
    from trainer.vision_pretrain import PretrainConfig

    t0 = time.time()
    folder = os.path.join(work, name)
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, "data")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(data), link)
    stage0_override = stage0_steps
    sets, stage0_steps = VARIANTS[name]
    overrides = recipe_overrides(0, pack_length, device, [*sets, f"data.workers={workers}", "run.log_every=5", *extra])
    stage0 = PretrainConfig(steps=stage0_steps if stage0_override is None else stage0_override,
                            batch_size=STAGE0_BATCH, workers=workers)
    ckpts = train_all(folder, link, overrides, stage1_steps, lambda s1: fit_steps(s1, deadline),
                      ["optim.warmup_steps=100"], stage0, primer)
    out = {"variant": name, "seconds": round(time.time() - t0, 1), "checkpoints": ckpts}
    for stage in ("stage0", *STAGES):
        if not os.path.exists(os.path.join(folder, stage, "log.jsonl")):
            continue
        with open(os.path.join(folder, stage, "log.jsonl"), encoding="utf-8") as f:
            recs = [json.loads(line) for line in f if '"loss"' in line]
        out[stage] = {"steps": recs[-1]["step"], "loss": round(recs[-1]["loss"], 4),
                      "step_s": round(statistics.median(r["step_s"] for r in recs), 4),
                      "tokens_per_s": round(statistics.median(r.get("tokens_per_s", 0) for r in recs))}
    return out


def pack(work: str, name: str, dest: str) -> list[str]:
    """One tar per stage: the last checkpoint's weights, configs and state, the run's log, the overrides."""
    from trainer.checkpoint import latest

    os.makedirs(dest, exist_ok=True)
    made = []
    for stage in STAGES:
        ckpt = latest(os.path.join(work, name, stage))
        if ckpt is None:
            continue
        path = os.path.join(dest, f"{name}-{stage}.tar")
        with tarfile.open(path, "w") as tar:
            for f in ("model.safetensors", "keye_model.json", "state.json"):
                tar.add(os.path.join(ckpt, f), arcname=os.path.relpath(os.path.join(ckpt, f), work))
            for f in (os.path.join(name, stage, "log.jsonl"), os.path.join(name, "overrides.json"),
                      os.path.join(name, "stage0", "log.jsonl")):
                if os.path.exists(os.path.join(work, f)):
                    tar.add(os.path.join(work, f), arcname=f)
        made.append(path)
    return made


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.evidence_gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a curated output folder (the evidence data)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--budget-s", type=float, required=True, help="wall seconds for every variant, start to end")
    ap.add_argument("--variants", nargs="*", default=["tiny_mrope", "tiny_s0", "tiny_s0_mrope"], choices=list(VARIANTS))
    ap.add_argument("--stage0-steps", type=int, default=None, help="replace each variant's stage-0 steps")
    ap.add_argument("--stage1-steps", type=int, default=40)
    ap.add_argument("--pack-length", type=int, default=4096)
    ap.add_argument("--primer", default=None, help="a curated folder of one-shape clips (trainer.evidence's "
                                                   "WORK/primer_data) to train on between stage 1 and stage 2")
    ap.add_argument("--primer-steps", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=4, help="data-loader processes per variant")
    ap.add_argument("--device", default="cuda", help="cpu: a quick check of this script without a GPU")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--pack-to", default=None, help="folder for the checkpoint tars")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)         # internal: run one variant
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print(json.dumps(run_variant(args.one, args.data, args.work, args.deadline, args.stage1_steps,
                                     args.pack_length, args.workers, args.device, args.set, args.stage0_steps,
                                     (args.primer, args.primer_steps) if args.primer else None)),
              flush=True)
        return 0
    deadline = time.time() + args.budget_s
    procs = {}
    for name in args.variants:
        cmd = [sys.executable, "-m", "bench.evidence_gpu", "--data", args.data, "--work", args.work, "--budget-s", "0",
               "--one", name, "--deadline", str(deadline), "--stage1-steps", str(args.stage1_steps),
               "--pack-length", str(args.pack_length), "--workers", str(args.workers), "--device", args.device]
        for kv in args.set:
            cmd += ["--set", kv]
        if args.stage0_steps is not None:
            cmd += ["--stage0-steps", str(args.stage0_steps)]
        if args.primer:
            cmd += ["--primer", args.primer, "--primer-steps", str(args.primer_steps)]
        os.makedirs(os.path.join(args.work, name), exist_ok=True)
        with open(os.path.join(args.work, name, "stderr.log"), "w", encoding="utf-8") as log:
            procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    failed = 0
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.time() + 40))
        except subprocess.TimeoutExpired:      # the last periodic checkpoint is still packed
            proc.kill()
            proc.wait()
            out = json.dumps({"variant": name, "error": "over budget: killed"})
            failed += 1
        if proc.returncode != 0 and not out.strip():
            with open(os.path.join(args.work, name, "stderr.log"), encoding="utf-8") as f:
                out = json.dumps({"variant": name, "error": f.read()[-1500:]})
            failed += 1
        print(out.strip().splitlines()[-1] if out.strip() else json.dumps({"variant": name, "error": "no output"}),
              flush=True)
        if args.pack_to:
            print(json.dumps({"variant": name, "packed": pack(args.work, name, args.pack_to)}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
