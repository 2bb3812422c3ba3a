"""`python -m bench.train [--data OUT_DIR]`: the bundled trainer's overhead, data loader and packing.

In one run, on the tiny model (configs/train_tiny.yaml) and a pipeline output (default: the demo,
built into a temporary folder by `python -m pipelines.curate --demo`: the pre-training rows):

* tokens/s of `trainer.train.train` against a plain PyTorch loop (forward, backward, AdamW step)
  over the same pre-tokenised, pre-packed batches and the same initial weights; the first steps
  (warm-up) are not timed; each is timed per step, best of `--repeat` interleaved runs. Target >= 0.9.
* data loader samples/s (reading, verifying, shuffling, packing, tokenising, decoding frames) against
  the samples/s a training step consumes: above 1, the loader is not the bottleneck.
* packing efficiency (non-padding tokens / pack tokens) of the data's rows at 2,048 and 8,192 tokens.
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time

from bench.common import emit, peak_rss_mb, ratio


def demo_output(work: str) -> str:
    out = os.path.join(work, "demo")
    subprocess.run([sys.executable, "-m", "pipelines.curate", "--demo", "--output", out, "--progress_s", "0"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def plain_loop(cfg, batches, vocab) -> list[float]:
    """Seconds per step of the minimal loop: the same model, the same batches, no trainer around it."""

    from keye.tokenizer import load_tokenizer
    from trainer.model import build_model, set_trainable
    from trainer.train import make_optimizer

    model = build_model(cfg.model, load_tokenizer(cfg.model.tokenizer), "cpu", cfg.run.seed, vocab)
    set_trainable(model, cfg.stage.trainable)
    opt = make_optimizer(model, cfg)
    times = []
    for b in batches:
        t0 = time.perf_counter()
        loss, n = model(b["input_ids"], b["labels"], b["position_ids"], b["seq_lens"], b["pixels"])
        (loss / max(n, 1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def trainer_loop(cfg, batches, data, run_dir) -> list[float]:
    from trainer.train import train

    records = train(cfg, run_dir, [(data, 1.0)], batches={0: iter(batches)})
    return [r["step_s"] for r in records]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="a pipeline output folder (default: build the demo)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--loader-packs", type=int, default=12)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from keye.tokenizer import load_tokenizer
    from schemas.train import load_train_config
    from trainer.data import data_vocab, make_loader, open_sources, pack_efficiency

    with tempfile.TemporaryDirectory() as work:
        data = args.data or demo_output(work)
        sources = open_sources([(data, 1.0)])
        n = args.steps
        cfg = load_train_config(None, [f"optim.max_steps={n}", f"run.checkpoint_every={10 * n}",
                                       "run.tensorboard=false", "run.progress=never", f"run.log_every={n}"])
        vocab = data_vocab(sources, load_tokenizer(cfg.model.tokenizer))
        # the loader on its own: packs and samples per second
        t0 = time.perf_counter()
        loader = make_loader(sources, cfg.data, cfg.model.tokenizer, 0, 1, 1)
        batches = list(itertools.islice(iter(loader), max(n, args.loader_packs)))
        loader_s = time.perf_counter() - t0
        loader_samples = sum(len(lens) - (1 if b["real_tokens"] < b["input_ids"].numel() else 0)
                             for b in batches for lens in b["seq_lens"])
        batches = batches[:n]
        plain, ours = [], []
        for r in range(args.repeat):   # interleaved, each from the same initial weights and batches
            torch.manual_seed(0)
            plain.append(sum(plain_loop(cfg, batches, vocab)[args.warmup:]))
            ours.append(sum(trainer_loop(cfg, batches, data, os.path.join(work, f"run{r}"))[args.warmup:]))
        tokens = sum(b["real_tokens"] for b in batches[args.warmup:])
        samples_per_step = loader_samples / len(batches[:max(n, args.loader_packs)]) if batches else 0
        step_s = min(ours) / (n - args.warmup)
        rows = []
        for shard in sources[0].folder.list("parquet"):
            from trainer.folders import parquet_rows, read_verified

            rows += [s.text_tokens + s.visual_tokens
                     for s in parquet_rows(read_verified(data, shard), None, need_media=False)]
        emit("train", {
            "model": "configs/train_tiny.yaml", "pack_length": cfg.data.pack_length, "steps_timed": n - args.warmup,
            "tokens_per_s": {"trainer": round(tokens / min(ours), 1), "plain_loop": round(tokens / min(plain), 1),
                             "trainer_vs_plain": ratio(min(plain), min(ours))},
            "loader": {"samples_per_s": round(loader_samples / loader_s, 1),
                       "packs_per_s": round(max(n, args.loader_packs) / loader_s, 2),
                       "step_consumes_samples_per_s": round(samples_per_step / step_s, 1),
                       "loader_vs_step": ratio(loader_samples / loader_s, samples_per_step / step_s)},
            "packing_efficiency": {"rows": len(rows),
                                   "2048": round(pack_efficiency(rows, cfg.data), 4),
                                   "8192": round(pack_efficiency(rows, load_train_config(
                                       None, ["data.pack_length=8192"]).data), 4)},
            "peak_rss_mb": round(peak_rss_mb(), 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
