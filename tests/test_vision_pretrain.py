"""Stage 0 (trainer/vision_pretrain.py): SigLIP pre-training of the vision tower on the pipeline's caption
rows, written as a SiglipVisionModel folder that stage 1 loads through `model.vision` like any
pretrained SigLIP."""
from __future__ import annotations

import math
import os

import pytest
import torch

from keye.tokenizer import load_tokenizer
from schemas.config import CONFIG_DIR
from schemas.sample import ContentPart, MediaItem, Message, Sample
from schemas.train import load_train_config
from trainer.model import build_model
from trainer.vision_pretrain import Pairs, PretrainConfig, build_siglip, caption_of, frame_member, pretrain


def row(n_media: int, answer: str, members=("k.0.jpg", "k.1.jpg", "k.2.jpg")) -> Sample:
    media = [MediaItem(kind="video", uri=f"v{i}.mp4", members=list(members)) for i in range(n_media)]
    return Sample(id="r", source="s", source_ref="r:1", task="caption", media=media,
                  messages=[Message("user", [ContentPart("video", media_index=0)]),
                            Message("assistant", [ContentPart("text", text=answer)])],
                  blobs={m: b"x" for m in members})


def test_rows_used_are_one_picture_with_a_caption_and_a_video_gives_its_middle_frame():
    assert caption_of(row(1, "a red circle moves from left to right")) == "a red circle moves from left to right"
    assert caption_of(row(1, "yes")) is None                 # a short QA answer says nothing to contrast
    assert caption_of(row(2, "a red circle and a blue square")) is None
    assert frame_member(row(1, "a b c")) == "k.1.jpg"
    assert frame_member(row(1, "a b c", members=("k.mp4",))) is None


@pytest.mark.slow
def test_the_tower_learns_and_stage_1_loads_it(trainer_data, tmp_path):
    data, _ = trainer_data
    cfg = PretrainConfig(steps=3, batch_size=8, workers=0, shuffle_buffer=16, warmup_steps=1)
    recipe = os.path.join(CONFIG_DIR, "train_tiny_stage1.yaml")
    model_cfg = load_train_config(recipe, []).model
    siglip = build_siglip(model_cfg.vision_config, cfg)
    assert abs(siglip.logit_scale.item() - math.log(10)) < 1e-6 and siglip.logit_bias.item() == -10.0

    pixels, ids = map(torch.stack, zip(*[pair for pair, _ in zip(Pairs([str(data)], cfg, "builtin:qwen3"), range(8))]))
    assert pixels.shape == (8, 3, 224, 224) and ids.shape == (8, cfg.text_tokens)
    opt = torch.optim.AdamW(siglip.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):                                       # one batch: the sigmoid loss must fall
        loss = siglip(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses

    folder = pretrain(recipe, [], [str(data)], str(tmp_path / "stage0"), cfg, "cpu")
    assert os.path.exists(os.path.join(tmp_path, "stage0", "log.jsonl"))
    cfg1 = load_train_config(recipe, [f"model.vision={folder}"])
    keye = build_model(cfg1.model, load_tokenizer(), "cpu", 0, list(range(500)))
    assert not hasattr(keye.vision, "head") or keye.vision.head is None       # the pooling head is dropped
    from safetensors.torch import load_file

    saved = load_file(os.path.join(folder, "model.safetensors"))
    key = next(k for k in saved if k.endswith("patch_embedding.weight"))
    assert torch.equal(keye.vision.state_dict()[key.removeprefix("vision_model.")], saved[key])
