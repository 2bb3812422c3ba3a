"""Stage 0: continued pre-training of the vision encoder with SigLIP's sigmoid loss (keye.md 2.8).

    OUT (pipeline shards) ─ rows with one picture and an assistant caption of >= 3 words
      ─ per data-loader worker: the trainer's row stream (its shards, verified, shuffled), one frame
        per row (a video's middle frame) resized to image_size², caption -> Qwen BPE ids hashed into
        the text tower's vocabulary
      ─▶ SiglipModel (the recipe's model.vision_config + attention-pool head; a small text tower)
         trained with the pairwise sigmoid loss ─▶ RUN/vision: a SiglipVisionModel folder
    stage 1 then loads it like any pretrained SigLIP: `--set model.vision=RUN/vision` (build_vision
    drops the pooling head, which only the contrastive loss uses).

Keye-VL starts from a pretrained SigLIP and continues it this way on 500B tokens. Here it gives a
random tower what a captioning loss through a frozen-then-slow tower does not, in a few minutes:
features that tell shapes apart (README, "Evidence"). One worker holds its shuffle buffer of rows.
No resume: a short stage whose output is one folder, rewritten when rerun.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from schemas.sample import Sample
from schemas.train import DataConfig, load_train_config
from trainer.data import mixed_rows, open_sources, pixel_tensor

VISION_FOLDER = "vision"


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    image_size: int = 224            # every picture resized to a square (SigLIP's pre-training input)
    text_vocab: int = 8192           # Qwen BPE ids hashed into this many rows
    text_tokens: int = 48            # captions padded / cut to this length (SigLIP pools the last token)
    text_hidden: int = 128
    text_layers: int = 2
    workers: int = 2
    shuffle_buffer: int = 1024
    seed: int = 0


def caption_of(sample: Sample) -> Optional[str]:
    """The assistant text of a one-picture row, when it is a caption-like sentence (>= 3 words)."""
    if len(sample.media) != 1:
        return None
    text = " ".join(p.text or "" for m in sample.messages if m.role == "assistant" for p in m.content
                    if p.type == "text").strip()
    return text if len(text.split()) >= 3 else None


def frame_member(sample: Sample) -> Optional[str]:
    frames = [m for m in sample.media[0].members if m.endswith((".jpg", ".png")) and m in sample.blobs]
    return frames[len(frames) // 2] if frames else None


class Pairs(torch.utils.data.IterableDataset):
    """(pixels (3, S, S), caption ids (L,)) pairs, endlessly: the trainer's row streams (`mixed_rows`:
    shards split per worker, verified, shuffled), kept to the rows `caption_of` accepts."""

    def __init__(self, data: list[str], cfg: PretrainConfig, tokenizer_spec: str,
                 data_cfg: Optional[DataConfig] = None) -> None:
        self.sources = open_sources([(d, 1.0) for d in data])
        self.cfg, self.tokenizer_spec = cfg, tokenizer_spec
        base = data_cfg or load_train_config().data          # the recipe's reading rules (verify, format)
        self.data_cfg = dataclasses.replace(base, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from PIL import Image

        from keye.tokenizer import load_tokenizer

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        tok = load_tokenizer(self.tokenizer_spec)
        size = (self.cfg.image_size, self.cfg.image_size)
        for _, sample in mixed_rows(self.sources, self.data_cfg, worker, workers):
            text = caption_of(sample)
            member = frame_member(sample) if text else None
            if member is None:
                continue
            img = Image.open(io.BytesIO(sample.blobs[member])).convert("RGB").resize(size, Image.BICUBIC)
            ids = [1 + t % (self.cfg.text_vocab - 1) for t in tok.encode(text)][:self.cfg.text_tokens]
            ids += [0] * (self.cfg.text_tokens - len(ids))          # 0: padding
            yield pixel_tensor(img), torch.tensor(ids)


def build_siglip(vision_config, cfg: PretrainConfig):
    from transformers import SiglipConfig, SiglipModel

    v = vision_config
    vision = dict(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                  num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
                  patch_size=v.patch_size, image_size=v.image_size, vision_use_head=True)
    text = dict(vocab_size=cfg.text_vocab, hidden_size=cfg.text_hidden, intermediate_size=2 * cfg.text_hidden,
                num_hidden_layers=cfg.text_layers, num_attention_heads=max(1, cfg.text_hidden // 64),
                max_position_embeddings=cfg.text_tokens, projection_size=v.hidden_size, pad_token_id=0,
                bos_token_id=None, eos_token_id=None)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():           # SigLIP's initial temperature and bias (t' = log 10, b = -10); 0 and 0
        model.logit_scale.fill_(math.log(10.0))     # leave the loss near N log 2 for many steps
        model.logit_bias.fill_(-10.0)
    return model


def save_vision(model, folder: str) -> str:
    """The trained tower as a SiglipVisionModel folder (with its pooling head: build_vision drops it)."""
    from transformers import SiglipVisionModel

    vision = SiglipVisionModel(model.config.vision_config)
    getattr(vision, "vision_model", vision).load_state_dict(model.vision_model.state_dict())   # 4.x nests it
    vision.save_pretrained(folder)
    return folder


def pretrain(recipe: str, overrides: list[str], data: list[str], run_dir: str, cfg: PretrainConfig,
             device: Optional[str] = None) -> str:
    """Train, write RUN/vision and RUN/log.jsonl; returns the vision folder. The device is the recipe's
    `run.device` unless given."""
    from trainer.train import autocast, lr_lambda, make_optimizer, resolve_device

    train_cfg = load_train_config(recipe, overrides)
    device = resolve_device(device or train_cfg.run.device)
    torch.manual_seed(cfg.seed)
    model = build_siglip(train_cfg.model.vision_config, cfg).to(device)
    # the trainer's AdamW groups (no decay on norms, biases, the logit scale and bias), schedule and autocast
    run_cfg = dataclasses.replace(train_cfg, optim=dataclasses.replace(
        train_cfg.optim, lr=cfg.lr, warmup_steps=cfg.warmup_steps, max_steps=cfg.steps, schedule="cosine",
        min_lr_ratio=0.0, weight_decay=cfg.weight_decay, lr_scale={}))
    opt = make_optimizer(model, run_cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(run_cfg))
    loader = torch.utils.data.DataLoader(Pairs(data, cfg, train_cfg.model.tokenizer, train_cfg.data),
                                         batch_size=cfg.batch_size, num_workers=cfg.workers,
                                         persistent_workers=cfg.workers > 0)
    amp = autocast(run_cfg, device)
    os.makedirs(run_dir, exist_ok=True)
    batches = iter(loader)
    with open(os.path.join(run_dir, "log.jsonl"), "w", encoding="utf-8") as log:
        for step in range(cfg.steps):
            t0 = time.perf_counter()
            pixels, ids = next(batches)
            with amp:
                out = model(input_ids=ids.to(device), pixel_values=pixels.to(device), return_loss=True)
            out.loss.backward()
            if run_cfg.optim.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), run_cfg.optim.clip_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if (step + 1) % 10 == 0 or step + 1 == cfg.steps:
                log.write(json.dumps({"step": step + 1, "loss": out.loss.item(), "lr": sched.get_last_lr()[0],
                                      "step_s": time.perf_counter() - t0}) + "\n")
    return save_vision(model, os.path.join(run_dir, VISION_FOLDER))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.vision_pretrain", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.path.join("configs", "train_tiny_stage1.yaml"),
                    help="trainer recipe whose model.vision_config (and tokenizer) the tower takes")
    ap.add_argument("--data", action="append", required=True, help="pipeline output folder")
    ap.add_argument("--output", required=True, help="run folder: log.jsonl and vision/")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override")
    ap.add_argument("--device", default=None, help="default: the recipe's run.device")
    for name, default in PretrainConfig().__dict__.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = ap.parse_args(argv)
    cfg = PretrainConfig(**{k: getattr(args, k) for k in PretrainConfig().__dict__})
    folder = pretrain(args.config, args.set, args.data, args.output, cfg, args.device)
    print(json.dumps({"event": "done", "vision": folder}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
