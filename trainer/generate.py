"""`python -m trainer.generate --checkpoint DIR --image|--video PATH --prompt TEXT`

A trainer checkpoint answers about a picture or a video the way it was trained: the file goes
through the pipeline's own media code (`media/process.py`: decode, Keye-VL frame sampling,
`smart_resize`, with the media recipe its training data was built with), the question is rendered
with the training data's chat layout (`keye/chat.py`) up to an open assistant turn, and the model
decodes greedily (or at --temperature) until `<|im_end|>`.
"""
from __future__ import annotations

import argparse
import io
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from schemas.sample import ContentPart, MediaItem, Message, Sample
from trainer.data import decode_frame
from trainer.model import load_trained, read_meta
from trainer.template import encode_sample, special_id


def media_config(meta: dict):
    """The pipeline media recipe the checkpoint's data used, over today's base.yaml: keys added to the
    recipe since that data was built take their defaults, keys since removed are dropped."""
    import dataclasses

    from schemas.config import MediaConfig, from_dict, load_config

    def overlay(base: dict, recorded: dict) -> dict:
        return {k: overlay(v, recorded[k]) if isinstance(v, dict) and isinstance(recorded.get(k), dict)
                else recorded.get(k, v) for k, v in base.items()}

    base = dataclasses.asdict(load_config().media)
    return from_dict(MediaConfig, overlay(base, (meta.get("data") or {}).get("media") or {}), "media")


class Generator:
    def __init__(self, checkpoint: str, device: str = "cpu") -> None:
        self.model, self.tokenizer = load_trained(checkpoint, device)
        meta = read_meta(checkpoint)
        data = meta.get("data") or {}
        self.layout = data.get("chat_layout", "keye_preview")
        self.system_prompt = data.get("system_prompt")
        self.media_cfg = media_config(meta)
        self.stop = [special_id(self.tokenizer, "<|im_end|>"), special_id(self.tokenizer, "<|endoftext|>")]

    def process(self, kind: str, data: bytes) -> tuple[MediaItem, list[bytes]]:
        """A file through the media stage's code: (the MediaItem the pipeline would store, frame members)."""
        from media.process import ItemTask, process_item

        res = process_item(ItemTask(kind=kind, data=data, cfg=self.media_cfg))
        if res.reason:
            raise ValueError(f"cannot use this {kind}: {res.reason} {res.detail}")
        members = [f"q.0.{i:03d}.{res.ext}" for i in range(len(res.encoded))]
        item = MediaItem(kind=kind, uri="query", width=res.width, height=res.height, fast_width=res.fast_width,
                         fast_height=res.fast_height, frame_timestamps=list(res.frame_timestamps),
                         frame_types=list(res.frame_types), visual_tokens=res.visual_tokens, members=members)
        return item, list(res.encoded)

    def frames_item(self, frames: Sequence[np.ndarray], fps: Optional[float]) -> tuple[MediaItem, list[bytes]]:
        """Decoded pictures (one image, or a video's frames in order) sized as the media recipe sizes them."""
        from media.images import encode_png, resize_rgb
        from media.sampling import frame_size, image_size

        s = self.media_cfg.sampling
        h, w = frames[0].shape[:2]
        if len(frames) == 1:
            size, kind = image_size(h, w, s), "image"
        else:
            per_frame = max(s.frame_min_tokens, min(s.frame_max_tokens, s.video_max_tokens // len(frames)))
            size, kind = frame_size(h, w, per_frame, s), "video"
        blobs = [encode_png(resize_rgb(f, size)) for f in frames]
        members = [f"q.0.{i:03d}.png" for i in range(len(blobs))]
        step = 1.0 / fps if fps else 1.0
        unit = (size[0] // s.patch_size) * (size[1] // s.patch_size)
        item = MediaItem(kind=kind, uri="query", width=size[1], height=size[0], visual_tokens=unit * len(frames),
                         frame_timestamps=[round(i * step, 6) for i in range(len(frames))] if kind == "video" else [],
                         frame_types=[0] * len(frames) if kind == "video" else [], members=members)
        return item, blobs

    def answer(self, item: MediaItem, blobs: list[bytes], prompt: str, max_new_tokens: int = 64,
               temperature: float = 0.0, seed: int = 0) -> str:
        sample = Sample(id="query", source="generate", source_ref="", task="caption", media=[item],
                        messages=[Message("user", [ContentPart("image" if item.kind == "image" else "video",
                                                               media_index=0)] +
                                          ([ContentPart("text", text=prompt)] if prompt else []))],
                        blobs=dict(zip(item.members, blobs)))
        enc = encode_sample(sample, self.tokenizer, self.layout, self.system_prompt, prompt_only=True)
        device = self.model.visual_ids.device
        pixels = [decode_frame(sample.blobs[f.member], f.height, f.width, sample.id).to(device) for f in enc.frames]
        ids = self.model.generate(enc.input_ids, pixels, max_new_tokens, self.stop, temperature, seed)
        return self.tokenizer.decode(ids).strip()

    def answer_file(self, path: str, kind: str, prompt: str, **kw) -> str:
        with open(path, "rb") as f:
            item, blobs = self.process(kind, f.read())
        return self.answer(item, blobs, prompt, **kw)


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a trainer checkpoint folder (RUN/checkpoints/step-N)")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--image")
    what.add_argument("--video")
    ap.add_argument("--prompt", default="", help="the user's text after the picture (empty: a bare caption request)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    with torch.no_grad():           # scoped: a caller's (a test's) later training keeps its gradients
        gen = Generator(args.checkpoint, args.device)
        kind, path = ("image", args.image) if args.image else ("video", args.video)
        print(gen.answer_file(path, kind, args.prompt, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
