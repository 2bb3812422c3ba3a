"""`python -m trainer.train --config configs/train_tiny.yaml --data OUT_DIR[:weight] ... --output RUN`

    recipe ─ build_model (pretrained or tiny) ─ set_trainable(stage.trainable) ─ apply_adapter ─ DDP / FSDP
    for each step: grad_accum micro-batches, micro-batch k from this rank's stream k mod (streams per rank)
       loss = Σ token losses / Σ label tokens of the GLOBAL batch (all ranks, all micro-batches)
       ─ clip ─ AdamW ─ warmup + cosine | linear | constant ─ log (JSONL, TensorBoard, progress bar)
       ─ checkpoint (model, optimizer, scheduler, RNG, packs consumed per stream)

Under `torchrun` each rank holds the model (DDP) or a shard of it (FSDP, GPU) and one DataLoader
per data stream it owns. The token-weighted global loss makes 2 ranks x 1 micro-batch equal to
1 rank x 2 micro-batches over the same streams (tests/test_trainer_train.py checks it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from schemas.train import TrainConfig, load_train_config
from trainer import checkpoint
from trainer.data import data_vocab, make_loader, open_sources, owned_streams, parse_data_arg, resolve_streams
from trainer.model import apply_adapter, build_model, checkpoint_vocab, set_trainable, unwrap

KILL_ENV = "KEYE_TRAIN_KILL_AFTER_STEP"    # tests: SIGKILL this process after that step (a crash)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.tolist()


def init_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    torch.distributed.init_process_group(backend)
    return Dist(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(spec: str, local_rank: int = 0) -> str:
    """A device with its index: `cuda` alone is each rank's own GPU (torch.cuda.set_device needs the index)."""
    if spec == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return f"cuda:{local_rank}" if spec == "cuda" else spec


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    o = cfg.optim

    def f(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        t = min(1.0, (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * t)) if o.schedule == "cosine" else 1.0 - t
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape
    return f


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and 1-d parameters; `optim.lr_scale` per name pattern."""
    import fnmatch

    o = cfg.optim
    groups: dict[tuple[float, bool], list] = {}
    for name, p in unwrap(model).named_parameters():   # names as the recipe writes them, not DDP's "module."
        if p.requires_grad:
            name = name.removeprefix("module.").removeprefix("base_model.model.")   # DDP / PEFT wrappers
            scale = next((v for pat, v in o.lr_scale.items() if fnmatch.fnmatchcase(name, pat)), 1.0)
            groups.setdefault((scale, p.ndim >= 2), []).append(p)
    params = [{"params": ps, "lr": o.lr * scale, "weight_decay": o.weight_decay if decay else 0.0}
              for (scale, decay), ps in sorted(groups.items())]
    return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)


def autocast(cfg: TrainConfig, device: str):
    kind = "cuda" if device.startswith("cuda") else "cpu"
    use_bf16 = cfg.model.dtype == "bfloat16" or (
        cfg.model.dtype == "auto" and kind == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=use_bf16)


@dataclass
class Logger:
    run_dir: str
    enabled: bool
    tensorboard: bool
    progress: str
    total: int
    start: int
    _tb: object = None
    _bar: object = None
    _f: object = None
    records: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        os.makedirs(self.run_dir, exist_ok=True)
        self._f = open(os.path.join(self.run_dir, "log.jsonl"), "a", encoding="utf-8")
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self.run_dir, "tensorboard"))
        if self.progress == "always" or (self.progress == "auto" and sys.stderr.isatty()):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.start, unit="step", dynamic_ncols=True)

    def log(self, rec: dict, write: bool) -> None:
        if not self.enabled:
            return
        self.records.append(rec)
        if write:
            self._f.write(json.dumps(rec, sort_keys=True) + "\n")
            self._f.flush()
            if self._tb is not None:
                for k in ("loss", "lr", "tokens_per_s", "packing_efficiency", "grad_norm"):
                    self._tb.add_scalar(f"train/{k}", rec[k], rec["step"])
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}")

    def close(self) -> None:
        for h in (self._bar, self._tb, self._f):
            if h is not None:
                h.close()


def wrap_distributed(model: torch.nn.Module, cfg: TrainConfig, dist: Dist, device: str) -> torch.nn.Module:
    if dist.world == 1:
        return model
    if cfg.run.distributed == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in list(model.vision.encoder.layers) + list(model.llm.model.layers):
            fully_shard(layer)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[dist.local_rank] if device.startswith("cuda") else None)


def full_states(model, optimizer, cfg: TrainConfig) -> tuple[Optional[dict], Optional[dict]]:
    """FSDP: gathered full model / optimizer state dicts (on every rank; rank 0 writes them)."""
    if cfg.run.distributed != "fsdp" or not torch.distributed.is_initialized():
        return None, None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=opts)


def train(cfg: TrainConfig, run_dir: str, data: Optional[list[tuple[str, float]]] = None,
          model_hook: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None,
          batches: Optional[dict[int, object]] = None) -> list[dict]:
    """Train per the recipe, resuming from RUN/checkpoints when one exists; returns the log records.
    `model_hook` (after freezing and the recipe's adapter) lets callers wrap the model in-process;
    `batches` (stream -> iterator of collated micro-batches) replaces the loaders (bench.train)."""
    from keye.tokenizer import load_tokenizer

    dist = init_distributed(resolve_device(cfg.run.device))
    device = resolve_device(cfg.run.device, dist.local_rank)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.run.seed)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    sources = open_sources(data if data is not None else [(i.path, i.weight) for i in cfg.data.inputs])
    vocab = None
    if cfg.model.vocab_subset:
        used = data_vocab(sources, tokenizer)
        vocab = (checkpoint_vocab(cfg.model.init) if cfg.model.init else None) or used
        missing = set(used) - set(vocab)
        if missing:     # they would silently read another token's row
            raise ValueError(f"the data uses {len(missing)} token ids outside {cfg.model.init}'s vocabulary "
                             f"subset (e.g. {tokenizer.decode(sorted(missing)[:5])!r}): build the first stage's "
                             "model on every stage's folders")
    model = build_model(cfg.model, tokenizer, "cpu", cfg.run.seed, vocab)
    trainable, total = set_trainable(model, cfg.stage.trainable)
    model = apply_adapter(model, cfg)
    if model_hook is not None:
        model = model_hook(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)   # an adapter changes it
    if getattr(model, "corda_report", None) is not None and dist.main:        # each layer's candidate and rank
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "corda.json"), "w", encoding="utf-8") as f:
            json.dump(model.corda_report, f, indent=1, sort_keys=True)
    model = model.to(device)
    resume = checkpoint.latest(run_dir)
    if resume:
        checkpoint.load_weights(model, resume)
    model = wrap_distributed(model, cfg, dist, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    streams = resolve_streams(cfg.data, dist.world)
    mine = owned_streams(streams, dist.rank, dist.world)
    state = {"positions": {str(s): 0 for s in range(streams)}, "tokens": 0}
    if resume:
        state = checkpoint.load(resume, model, optimizer, scheduler, rank=dist.rank, load_model=False,
                                fsdp=cfg.run.distributed == "fsdp" and dist.world > 1)
        if int(state.get("streams", streams)) != streams:
            raise ValueError(f"{resume}: written with {state.get('streams')} data streams, this run has {streams}")
    start = int(state.get("step", 0))
    loaders = batches or {s: iter(make_loader(sources, cfg.data, cfg.model.tokenizer, s, streams,
                                              cfg.optim.micro_batch, int(state["positions"][str(s)])))
                          for s in mine}
    log = Logger(run_dir, dist.main, cfg.run.tensorboard, cfg.run.progress, cfg.optim.max_steps, start)
    if dist.main:
        print(json.dumps({"event": "start", "run": run_dir, "resume": resume, "step": start, "world": dist.world,
                          "device": device, "streams": streams, "trainable": trainable, "parameters": total,
                          "stage": cfg.stage.name}), file=sys.stderr)
    kill_after = int(os.environ.get(KILL_ENV, "0"))
    params = [p for p in model.parameters() if p.requires_grad]
    amp = autocast(cfg, device)
    try:
        for step in range(start, cfg.optim.max_steps):
            t0 = time.perf_counter()
            micro = [(s, next(loaders[s])) for s in (mine[k % len(mine)] for k in range(cfg.optim.grad_accum))]
            local_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for _, b in micro)
            global_targets = dist.all_sum([float(local_targets)])[0]
            loss_sum = 0.0
            for k, (s, b) in enumerate(micro):
                sync = k == len(micro) - 1 or dist.world == 1
                ctx = model.no_sync() if (not sync and hasattr(model, "no_sync")) else _null()
                with ctx, amp:
                    loss, _ = model(b["input_ids"].to(device), b["labels"].to(device), b["position_ids"].to(device),
                                    b["seq_lens"], [p.to(device) for p in b["pixels"]])
                    scaled = loss * dist.world / max(global_targets, 1.0)
                scaled.backward()
                loss_sum += float(loss.detach())
                state["positions"][str(s)] += b["input_ids"].shape[0]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_norm) if cfg.optim.clip_norm > 0 else \
                torch.tensor(0.0)
            lr = max(scheduler.get_last_lr())
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            real = sum(b["real_tokens"] for _, b in micro)
            slots = sum(b["input_ids"].numel() for _, b in micro)
            g_loss, g_real, g_slots = dist.all_sum([loss_sum, float(real), float(slots)])
            state["tokens"] += int(g_real)
            dt = time.perf_counter() - t0
            rec = {"step": step + 1, "loss": g_loss / max(global_targets, 1.0), "lr": lr, "grad_norm": float(grad_norm),
                   "tokens_per_s": g_real / dt, "packing_efficiency": g_real / g_slots, "target_tokens": global_targets,
                   "tokens": state["tokens"], "too_long": max(b["too_long"] for _, b in micro), "step_s": dt}
            log.log(rec, write=(step + 1) % cfg.run.log_every == 0 or step + 1 == cfg.optim.max_steps)
            last = step + 1 == cfg.optim.max_steps
            if (step + 1) % cfg.run.checkpoint_every == 0 or last:
                m_state, o_state = full_states(model, optimizer, cfg)
                checkpoint.save(run_dir, step + 1, model, optimizer, scheduler,
                                {**state, "streams": streams, "recipe": cfg.name, "stage": cfg.stage.name},
                                rank=dist.rank, world=dist.world, tokenizer_spec=cfg.model.tokenizer,
                                merge=cfg.model.merge, data=sources[0].folder.render_info(),
                                model_state=m_state, optim_state=o_state,
                                keep=cfg.run.keep_checkpoints)
            if kill_after and step + 1 == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        log.close()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return log.records


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="trainer recipe (default configs/train_tiny.yaml)")
    ap.add_argument("--data", action="append", default=[], help="pipeline output folder, optionally DIR:weight")
    ap.add_argument("--output", required=True, help="run folder: checkpoints/, log.jsonl, tensorboard/")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one recipe key")
    ap.add_argument("--corda_data", default=None, help="CorDA calibration rows: a pipeline output folder "
                    "(default: the first --data); for kpm, the knowledge data to preserve")
    ap.add_argument("--corda_samples", type=int, default=None, help="CorDA calibration rows (corda.samples)")
    args = ap.parse_args(argv)
    cfg = load_train_config(args.config, args.set)
    if args.corda_data or args.corda_samples is not None or (args.data and not cfg.corda.data and cfg.model.adapter):
        data = args.corda_data or cfg.corda.data or (parse_data_arg(args.data[0])[0] if args.data else None)
        extra = [f"corda.data={data}"] if data else []
        extra += [f"corda.samples={args.corda_samples}"] if args.corda_samples is not None else []
        cfg = load_train_config(args.config, [*args.set, *extra])
    records = train(cfg, args.output, [parse_data_arg(d) for d in args.data] or None)
    if records:
        last = records[-1]
        print(json.dumps({"event": "done", "step": last["step"], "loss": round(last["loss"], 4),
                          "tokens": last["tokens"]}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
