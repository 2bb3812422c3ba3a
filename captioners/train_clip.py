"""`python -m captioners.train_clip --data DIR [--out PATH]`: a tiny open_clip model for the synthetic corpus.

No CLIP weights can be downloaded here, so the demo's scores come from a model trained in a
few minutes on a CPU. What it trains on and how it is judged:

* The corpus in DIR (generated with synthetic.corpus.generate if DIR holds none) is read with
  the pipeline's own readers and steps. Its caption pairs with `caption_correct: false` and
  a share (`--holdout`) of the correct ones are held out: the model never sees those images.
* The corpus has about 60 correct image-caption pairs at scale 1, far too few to learn which
  colour goes with which shape. Training adds `--extra` pairs drawn from the corpus's own
  scene generator (synthetic.scenes + synthetic.language.caption) under a different seed.
* Three hard negatives (NegCLIP-style) are made from each training caption's text alone: a
  colour swapped, a shape's kind swapped, a shape dropped (or added). They sit in the batch's
  contrastive softmax, and a second loss ranks each image's caption above its own three. The
  corpus's wrong captions are made by synthetic.language.wrong_caption, which training never calls.
* Reported (JSON on stdout, and train_report.json beside the weights): ROC AUC of held-out
  correct pairs against the corpus's deliberately wrong pairs, and against mismatched pairs
  (each held-out image with another held-out image's caption), computed on the saved
  checkpoint loaded back the way the pipeline loads it (captioners.clip.ClipScorer).

The output folder is an open_clip `local-dir:` model: open_clip_config.json (model and
preprocessing config), open_clip_model.safetensors (fp16 weights), and a word-level Hugging
Face tokenizer (tokenizer.json) built from the training captions.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from typing import Optional

import numpy as np

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "tiny-clip-synth")
IMAGE_SIZE = 64
CONTEXT = 32
PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"
ITEM_RE = re.compile(r"\b(an?) (\w+) (circle|square|triangle)\b")


VISION = {
    # open_clip's ModifiedResNet (CLIP's RN towers) at width 8: learns which shape is which in a
    # few hundred steps, where a ViT of the same cost learns colours but barely shapes
    "rn": {"layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
    "vit": {"patch_size": 8, "width": 96, "layers": 3, "head_width": 32, "mlp_ratio": 2.0},
    "vit4": {"patch_size": 4, "width": 96, "layers": 3, "head_width": 32, "mlp_ratio": 2.0},
    "convnext": {"timm_model_name": "test_convnext2", "timm_model_pretrained": False, "timm_pool": "avg",
                 "timm_proj": "linear"},
    "resnet": {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "avg",
               "timm_proj": "linear"},
}


def model_config(vocab_size: int, vision: str = "rn", image_size: int = IMAGE_SIZE) -> dict:
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": image_size, **VISION[vision]},
        "text_cfg": {"context_length": CONTEXT, "vocab_size": vocab_size, "width": 64, "heads": 2,
                     "layers": 2, "mlp_ratio": 2.0, "pool_type": "eos", "eos_id": 2, "pad_id": 0,
                     "hf_tokenizer_name": "local"},
    }


PREPROCESS_CFG = {"size": IMAGE_SIZE, "mode": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                  "interpolation": "bicubic", "resize_mode": "squash", "fill_color": 0}


# --- data ------------------------------------------------------------------------------------------
def corpus_pairs(data_dir: str) -> list[dict]:
    """The corpus's image caption pairs: {id, image (RGB array), caption, correct}."""
    from ingest.readers import read_file
    from ingest.validate import ValidateRows
    from media.fetch import MediaFetch
    from media.frames import item_frames
    from ingest.inputs import file_tasks
    from schemas.config import load_config
    from synthetic.corpus import corpus_recipe
    from schemas.rejected import Rejected

    truth = {}
    with open(os.path.join(data_dir, "truth.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["kind"] == "caption_image" and row["expect"] is None:
                truth[row["id"]] = row["caption_correct"]
    cfg = corpus_recipe(load_config(), data_dir)
    steps = [ValidateRows(cfg), MediaFetch(cfg)]
    pairs, seen = [], set()
    for spec in cfg.inputs:
        for task in file_tasks(spec, cfg):
            for raw in read_file(task):
                item = raw
                for step in steps:
                    item = step(item)
                    if isinstance(item, Rejected):
                        break
                if isinstance(item, Rejected) or item.id not in truth or len(item.media) != 1:
                    continue
                digest = item.media[0].sha256
                if digest in seen:     # exact copies across files: one pair
                    continue
                seen.add(digest)
                caption = next(p.text for m in item.messages if m.role == "assistant" for p in m.content
                               if p.type == "text")
                pairs.append({"id": item.id, "image": item_frames(item, 0)[0], "caption": caption,
                              "correct": truth[item.id]})
    return sorted(pairs, key=lambda p: p["id"])


def generated_pairs(n: int, seed: int) -> list[dict]:
    """n pairs from the corpus's scene generator (same size and shape-count ranges as its captions)."""
    from synthetic import language as lang
    from synthetic.scenes import draw, random_scene

    rng = np.random.default_rng([seed, 7919])
    out = []
    for i in range(n):
        scene = random_scene(rng, int(rng.integers(64, 321)), int(rng.integers(64, 321)), int(rng.integers(1, 5)))
        out.append({"id": f"gen_{i}", "image": np.asarray(draw(scene).convert("RGB")),
                    "caption": lang.caption(scene), "correct": True})
    return out


def held_out(pair_id: str, share: float) -> bool:
    return int(hashlib.sha1(pair_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def hard_negatives(caption: str, rng: np.random.Generator) -> list[str]:
    """Three versions of the caption with one fact changed, from its text alone: a colour swapped,
    a shape's kind swapped, and a shape dropped (or, for a single shape, one added)."""
    from synthetic.scenes import COLOURS, SHAPES

    items = list(ITEM_RE.finditer(caption))
    if not items:
        return [caption] * 3

    def article(word: str) -> str:
        return "an" if word[0] in "aeiou" else "a"

    def listing(names: list[str]) -> str:
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def replace(m, new: str) -> str:
        return caption[:m.start()] + new + caption[m.end():]

    names = [f"{x.group(1)} {x.group(2)} {x.group(3)}" for x in items]
    tail = caption[items[-1].end():]
    m = items[int(rng.integers(len(items)))]
    colours = [c for c in COLOURS if c != m.group(2)]
    colour = colours[int(rng.integers(len(colours)))]
    kinds = [k for k in SHAPES if k != m.group(3)]
    kind = kinds[int(rng.integers(len(kinds)))]
    if len(names) > 1:
        drop = int(rng.integers(len(names)))
        count = listing(names[:drop] + names[drop + 1:]) + tail
    else:
        c, k = list(COLOURS)[int(rng.integers(len(COLOURS)))], SHAPES[int(rng.integers(len(SHAPES)))]
        extra = names + [f"{article(c)} {c} {k}"]
        count = listing(extra if rng.random() < 0.5 else extra[::-1]) + tail
    return [replace(m, f"{article(colour)} {colour} {m.group(3)}"), replace(m, f"{m.group(1)} {m.group(2)} {kind}"),
            count]


# --- tokenizer and model -----------------------------------------------------------------------------
def build_tokenizer(captions: list[str], out_dir: str) -> int:
    """A lowercase word-level tokenizer over the training captions, saved in HF format; returns its size."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for c in captions for w in re.findall(r"\w+|[^\w\s]", c.lower())})
    vocab = {PAD: 0, UNK: 1, EOS: 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD, eos_token=EOS,
                                   model_max_length=CONTEXT)
    fast.save_pretrained(out_dir)
    return len(vocab)


def save_config(out_dir: str, vocab_size: int, vision: str = "rn", image_size: int = IMAGE_SIZE) -> None:
    with open(os.path.join(out_dir, "open_clip_config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_cfg": model_config(vocab_size, vision, image_size),
                   "preprocess_cfg": dict(PREPROCESS_CFG, size=image_size)}, f, indent=2)


def save_weights(model, out_dir: str) -> str:
    from safetensors.torch import save_file

    path = os.path.join(out_dir, "open_clip_model.safetensors")
    save_file({k: v.detach().to("cpu").half().contiguous() for k, v in model.state_dict().items()}, path)
    return path


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg): probability a positive outscores a negative (ties count half)."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):           # average ranks of ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


# --- training --------------------------------------------------------------------------------------
def train(data_dir: str, out_dir: str = DEFAULT_OUT, *, seed: int = 0, steps: int = 1500, batch: int = 96,
          extra: int = 4000, holdout: float = 0.3, lr: float = 3e-3, scale: int = 4,
          threads: Optional[int] = None, vision: str = "rn", image_size: int = IMAGE_SIZE,
          log=sys.stderr) -> dict:
    import torch
    import torch.nn.functional as F

    import open_clip
    from captioners.clip import ClipPreprocessor, ClipRef

    started = time.time()
    if not os.path.exists(os.path.join(data_dir, "truth.jsonl")):
        from synthetic.corpus import generate

        generate(data_dir, seed=seed, scale=scale)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)

    corpus = corpus_pairs(data_dir)
    eval_correct = [p for p in corpus if p["correct"] and held_out(p["id"], holdout)]
    eval_wrong = [p for p in corpus if not p["correct"]]
    train_pairs = [p for p in corpus if p["correct"] and not held_out(p["id"], holdout)]
    train_pairs += generated_pairs(extra, seed)
    print(f"train_clip: {len(train_pairs)} training pairs ({len(train_pairs) - extra} from the corpus), "
          f"held out {len(eval_correct)} correct and {len(eval_wrong)} wrong", file=log, flush=True)

    os.makedirs(out_dir, exist_ok=True)
    vocab_size = build_tokenizer([p["caption"] for p in train_pairs], out_dir)
    save_config(out_dir, vocab_size, vision, image_size)
    ref = ClipRef(out_dir)
    model = open_clip.create_model(ref.open_clip_name, pretrained=None)
    pre = ClipPreprocessor(ref)
    pixels = torch.from_numpy(pre.images([p["image"] for p in train_pairs]))
    captions = [p["caption"] for p in train_pairs]
    tokens = torch.from_numpy(pre.texts(captions))
    prepared_s = time.time() - started

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    labels = torch.arange(batch)
    t0 = time.time()
    rows = torch.arange(batch)
    for step in range(steps):
        idx = rng.choice(len(train_pairs), batch, replace=False)
        negs = torch.from_numpy(pre.texts([n for i in idx for n in hard_negatives(captions[i], rng)]))
        img = F.normalize(model.encode_image(pixels[idx]), dim=-1)
        txt = F.normalize(model.encode_text(torch.cat([tokens[idx], negs])), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T          # (B, B + 3B)
        contrastive = F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :batch].T, labels)
        own = batch + 3 * rows[:, None] + torch.arange(3)[None, :]              # each image's own negatives
        ranking = F.cross_entropy(torch.cat([logits[rows, rows][:, None], logits[rows[:, None], own]], dim=1),
                                  torch.zeros(batch, dtype=torch.long))
        loss = contrastive + ranking
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 10) == 0:
            print(f"train_clip: step {step + 1}/{steps} loss {loss.item():.3f} "
                  f"({time.time() - t0:.0f} s)", file=log, flush=True)
    train_s = time.time() - t0
    save_weights(model, out_dir)

    metrics = evaluate(out_dir, eval_correct, eval_wrong)
    files = sorted(os.listdir(out_dir))
    report = {
        **metrics,
        "train_pairs": len(train_pairs), "train_pairs_from_corpus": len(train_pairs) - extra,
        "steps": steps, "batch": batch, "lr": lr, "seed": seed, "vision": vision, "image_size": image_size,
        "corpus_pairs": len(corpus),
        "params": int(sum(p.numel() for p in model.parameters())),
        "prepare_s": round(prepared_s, 1), "train_s": round(train_s, 1),
        "total_s": round(time.time() - started, 1), "threads": torch.get_num_threads(),
        "checkpoint_bytes": sum(os.path.getsize(os.path.join(out_dir, f)) for f in files),
        "out": out_dir,
    }
    with open(os.path.join(out_dir, "train_report.json"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in report.items() if k != "out"}, f, indent=2, sort_keys=True)
        f.write("\n")
    return report


def evaluate(model_dir: str, correct: list[dict], wrong: list[dict]) -> dict:
    """AUCs of a saved model, loaded as the pipeline loads it: correct pairs against wrong
    pairs, and against mismatched pairs (each image with the next correct pair's caption)."""
    from captioners.clip import ClipRef, ClipScorer

    scorer = ClipScorer(ClipRef(model_dir), device="cpu")
    img = scorer.embed_images([p["image"] for p in correct])
    pos = np.sum(img * scorer.embed_texts([p["caption"] for p in correct]), axis=1)
    neg = scorer.similarity([p["image"] for p in wrong], [p["caption"] for p in wrong])
    shifted = [correct[(i + 1) % len(correct)]["caption"] for i in range(len(correct))]
    mismatched = np.sum(img * scorer.embed_texts(shifted), axis=1)
    return {
        "auc_correct_vs_wrong": round(roc_auc(pos, neg), 4),
        "auc_correct_vs_mismatched": round(roc_auc(pos, mismatched), 4),
        "mean_cosine": {"correct": round(float(pos.mean()), 4), "wrong": round(float(neg.mean()), 4),
                        "mismatched": round(float(mismatched.mean()), 4)},
        "heldout_correct": len(correct), "wrong": len(wrong),
    }


def evaluate_on_corpus(model_dir: str, data_dir: str, seed: int = 0, scale: int = 1) -> dict:
    """The model against every caption pair of a corpus it was not trained on (generated if missing)."""
    if not os.path.exists(os.path.join(data_dir, "truth.jsonl")):
        from synthetic.corpus import generate

        generate(data_dir, seed=seed, scale=scale)
    pairs = corpus_pairs(data_dir)
    return {**evaluate(model_dir, [p for p in pairs if p["correct"]], [p for p in pairs if not p["correct"]]),
            "data": data_dir}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m captioners.train_clip", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="synthetic corpus folder (generated there if missing)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: the bundled model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=4, help="corpus scale when DIR holds no corpus yet")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--extra", type=int, default=4000, help="generated training pairs added to the corpus's")
    ap.add_argument("--holdout", type=float, default=0.3, help="share of the corpus's correct pairs held out")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--vision", default="rn", choices=sorted(VISION))
    ap.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--evaluate", metavar="MODEL_DIR",
                    help="only evaluate MODEL_DIR on every caption pair of the corpus in --data")
    args = ap.parse_args(argv)
    if args.evaluate:
        report = evaluate_on_corpus(args.evaluate, args.data, seed=args.seed, scale=args.scale)
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return report
    report = train(args.data, args.out, seed=args.seed, steps=args.steps, batch=args.batch, extra=args.extra,
                   holdout=args.holdout, scale=args.scale, lr=args.lr, threads=args.threads,
                   vision=args.vision, image_size=args.image_size)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return report


if __name__ == "__main__":
    main()
