"""CorDA / CorDA++ against LoRA, PiSSA and MiLoRA on a CPU-sized forgetting experiment, and the cost of
our preprocessing against PEFT's `preprocess_corda` on the same model and data.

Experiment (several seeds): a tiny Qwen3 LM (random init) is pre-trained on "knowledge": two
Markov-chain languages K1, K2 over one vocabulary. It is then fine-tuned, every method at the same
trainable-parameter budget (rank r on every linear layer, or the same count redistributed), on a
new task: two other chains T1, T2 over the same tokens, which conflict with the knowledge. Reported
per method: knowledge loss before/after (forgetting), task loss after (learning), and the steps to
reach a target task loss (halfway from the pre-trained task loss to the best final one of the seed).
KPM methods calibrate on knowledge data, IPM methods on task data; CorDA++ chooses per layer among
the modes (K1, K2 or T1, T2) and their union, and allocates ranks by the metric (greedy); `_pooled`
scores each candidate on all candidates' data (`corda.score_on: pooled`). Forgetting is also read at
equal learning: the knowledge loss at the step a method first reaches the target task loss.

Cost: a bigger tiny model; wall time and peak RSS growth of each preprocessing in its own process
(the model and data built first), PEFT's batch-1 hooks against ours (batched, shared inputs).

    python -m bench.corda [--seeds 3] [--steps 120] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from bench.common import emit, peak_rss_mb, ratio

VOCAB, LENGTH = 64, 32
METHODS = ("lora", "pissa", "milora", "corda_kpm", "corda++_kpm", "corda++_kpm_pooled", "corda_ipm", "corda++_ipm",
           "corda++_ipm_pooled")


def chain(seed: int, branching: int = 3) -> torch.Tensor:
    """A sparse transition table: every token has `branching` successors with random probabilities."""
    g = torch.Generator().manual_seed(seed)
    table = torch.zeros(VOCAB, VOCAB)
    for t in range(VOCAB):
        nxt = torch.randperm(VOCAB, generator=g)[:branching]
        table[t, nxt] = torch.rand(branching, generator=g) + 0.2
    return table / table.sum(dim=1, keepdim=True)


def sample(table: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, LENGTH, dtype=torch.long)
    out[:, 0] = torch.randint(0, VOCAB, (n,), generator=g)
    for i in range(1, LENGTH):
        out[:, i] = torch.multinomial(table[out[:, i - 1]], 1, generator=g)[:, 0]
    return out


def model_for(seed: int, hidden: int = 64, inter: int = 128, layers: int = 2, vocab: int = VOCAB):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                      max_position_embeddings=256, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    return Qwen3ForCausalLM(cfg)


def loss_on(model, data: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(input_ids=data, labels=data).loss)


def train(model, data: torch.Tensor, steps: int, lr: float, seed: int, batch: int = 16, evals=None, every: int = 5,
          knowledge=None):
    """AdamW steps; with `evals`, the curve [(step, eval loss, knowledge loss)] every `every` steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        if evals is not None and step % every == 0:
            curve.append((step, loss_on(model, evals), knowledge is not None and loss_on(model, knowledge)))
        model.train()
        idx = torch.randint(0, data.shape[0], (batch,), generator=g)
        loss = model(input_ids=data[idx], labels=data[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    if evals is not None:
        curve.append((steps, loss_on(model, evals), knowledge is not None and loss_on(model, knowledge)))
    return curve


def calib(data: torch.Tensor, batch: int = 16):
    from trainer.corda.calibration import token_batches
    return token_batches(list(data), batch)


def lm_config(**over):
    from schemas.corda import corda_config
    from trainer.corda.calibration import LM_TARGETS
    return corda_config(**{"target_modules": LM_TARGETS, **over})


def adapt(method: str, model, rank: int, knowledge: dict, task: dict):
    """The PEFT model for one method, all at the budget of rank `rank` on every linear layer."""
    from peft import LoraConfig, get_peft_model

    from trainer.corda.adapter import attach, plan
    if method == "lora":
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules="all-linear")), {}
    mode = "kpm" if method == "milora" or "kpm" in method else "ipm"
    source = knowledge if mode == "kpm" else task
    over = dict(rank=rank, mode=mode, use_label_mask=False)
    if method in ("pissa", "milora"):
        over["covariance"] = "identity"
    if method.startswith("corda++"):
        over.update(selection="modes", allocation="greedy", max_rank=4 * rank,
                    score_on="pooled" if method.endswith("pooled") else "own")
        cands = {**{k: calib(v) for k, v in source.items()}, "all": calib(torch.cat(list(source.values())))}
    else:
        cands = {"all": calib(torch.cat(list(source.values())))}
    p = plan(model, lm_config(**over), cands)
    return attach(model, p), p.report


def at_target(curve, target: float):
    """(first step whose task loss is <= target, the knowledge loss then): forgetting at equal learning."""
    return next(((s, k) for s, v, k in curve if v <= target), (None, None))


def experiment(seeds: int, steps: int, pre_steps: int, rank: int, lr: float) -> dict:
    torch.set_num_threads(1)
    k_tables = {"K1": chain(1), "K2": chain(2)}
    t_tables = {"T1": chain(3), "T2": chain(4)}
    rows = {m: [] for m in METHODS}
    choices = {}
    for seed in range(seeds):
        know = {k: sample(t, 256, 100 * seed + i) for i, (k, t) in enumerate(k_tables.items())}
        task = {k: sample(t, 256, 100 * seed + 10 + i) for i, (k, t) in enumerate(t_tables.items())}
        k_eval = torch.cat([sample(t, 32, 100 * seed + 50 + i) for i, t in enumerate(k_tables.values())])
        t_eval = torch.cat([sample(t, 32, 100 * seed + 60 + i) for i, t in enumerate(t_tables.values())])
        base = model_for(seed)
        train(base, torch.cat(list(know.values())), pre_steps, 3e-3, seed)
        k0, t0 = loss_on(base, k_eval), loss_on(base, t_eval)
        curves = {}
        for method in METHODS:
            t_start = time.perf_counter()
            pm, report = adapt(method, copy.deepcopy(base), rank, {k: v[:64] for k, v in know.items()},
                               {k: v[:64] for k, v in task.items()})
            prep = time.perf_counter() - t_start
            trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
            assert abs(loss_on(pm, k_eval) - k0) < 1e-4, f"{method}: init changed the model"
            curve = train(pm, torch.cat(list(task.values())), steps, lr, seed, evals=t_eval, knowledge=k_eval)
            curves[method] = curve
            rows[method].append(dict(seed=seed, knowledge_before=k0, knowledge_after=loss_on(pm, k_eval),
                                     task_before=t0, task_after=curve[-1][1], trainable=trainable,
                                     prep_s=round(prep, 3)))
            if seed == 0 and report.get("layers"):
                chosen = [v["candidate"] for v in report["layers"].values()]
                choices[method] = {c: chosen.count(c) for c in sorted(set(chosen))}
                choices[method + " ranks"] = sorted(v["rank"] for v in report["layers"].values())
        target = t0 - 0.5 * (t0 - min(r[-1]["task_after"] for r in rows.values()))
        for method in METHODS:
            step, k_at = at_target(curves[method], target)
            rows[method][-1].update(steps_to_target=step, knowledge_at_target=k_at)

    def spread(method, key):
        vals = [r[key] for r in rows[method] if r[key] is not None]
        if not vals:
            return None
        return dict(mean=round(statistics.mean(vals), 4), sd=round(statistics.pstdev(vals), 4), n=len(vals))
    table = {m: {"forgetting": spread(m, "knowledge_after") and dict(
                    spread(m, "knowledge_after"),
                    delta=round(statistics.mean(r["knowledge_after"] - r["knowledge_before"] for r in rows[m]), 4)),
                 "task_after": spread(m, "task_after"), "steps_to_target": spread(m, "steps_to_target"),
                 "knowledge_at_target": spread(m, "knowledge_at_target"),
                 "trainable": rows[m][0]["trainable"]}
             for m in METHODS}
    return dict(table=table, knowledge_before=spread("lora", "knowledge_before"),
                task_before=spread("lora", "task_before"), seed0_choices=choices, runs=rows)


# --- cost: ours vs PEFT, each in a fresh process ---------------------------------------------------------------
def _cost_worker(which: str, mode: str, rank: int, samples: int, length: int, hidden: int = 256,
                 layers: int = 4) -> dict:
    torch.set_num_threads(1)
    model = model_for(0, hidden=hidden, inter=int(2.75 * hidden), layers=layers, vocab=512).eval()
    data = torch.randint(0, 512, (samples, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=data[:1])
    base = peak_rss_mb()
    t0 = time.perf_counter()
    if which == "peft":
        from peft import LoraConfig
        from peft.tuners.lora.config import CordaConfig
        from peft.tuners.lora.corda import preprocess_corda
        cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules="all-linear", init_lora_weights="corda",
                         corda_config=CordaConfig(corda_method=mode))
        cfg.target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

        def run_model():
            for row in data:
                model(input_ids=row[None])
        preprocess_corda(model, cfg, run_model=run_model)
    else:
        from trainer.corda.adapter import plan
        plan(model, lm_config(rank=rank, mode=mode, use_label_mask=False, batch_size=8),
             {"all": calib(data, 8)})
    return dict(seconds=time.perf_counter() - t0, peak_mb=peak_rss_mb() - base)


def cost(mode: str, rank: int, samples: int, length: int, repeat: int, hidden: int = 256, layers: int = 4) -> dict:
    out = {"model": f"Qwen3 hidden {hidden}, ffn {int(2.75 * hidden)}, {layers} layers; {samples} x {length} tokens"}
    for which in ("peft", "ours"):
        runs = []
        for _ in range(repeat):
            arg = json.dumps([which, mode, rank, samples, length, hidden, layers])
            proc = subprocess.run([sys.executable, "-m", "bench.corda", "--worker", arg], capture_output=True,
                                  text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        out[which] = dict(seconds=round(min(r["seconds"] for r in runs), 3),
                          peak_mb=round(min(r["peak_mb"] for r in runs), 1))
    out["time_ratio"] = ratio(out["ours"]["seconds"], out["peft"]["seconds"])
    out["memory_ratio"] = ratio(out["ours"]["peak_mb"], out["peft"]["peak_mb"])
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--pre_steps", type=int, default=300)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--quick", action="store_true", help="1 seed, 40 steps: a smoke run")
    ap.add_argument("--cost_only", action="store_true", help="only ours vs PEFT's preprocess_corda")
    ap.add_argument("--cost_hidden", type=int, default=256)
    ap.add_argument("--cost_layers", type=int, default=4)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_cost_worker(*json.loads(args.worker))))
        return {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.quick:
        args.seeds, args.steps, args.pre_steps = 1, 40, 100
    t0 = time.perf_counter()
    results = dict(cost={m: cost(m, 16, 64 if not args.quick else 16, 128, 1 if args.quick else 2,
                                 args.cost_hidden, args.cost_layers) for m in ("ipm", "kpm")}, settings=vars(args))
    if not args.cost_only:
        results["experiment"] = experiment(args.seeds, args.steps, args.pre_steps, args.rank, args.lr)
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    return emit("corda", results)


if __name__ == "__main__":
    main()
