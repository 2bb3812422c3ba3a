"""`python -m captioners.tiny_vlm --out DIR`: a tiny Qwen2-VL built from configs, for tests and benchmarks.

No VLM weights can be downloaded here, so the recaption backends are exercised against a real
transformers vision-language model with random weights: Qwen2-VL's architecture (the family
Keye-VL's processing follows: `<|vision_start|><|image_pad|><|vision_end|>` placeholders,
dynamic resolution in 28-pixel units), a two-layer 64-wide language model, a one-block vision
tower, and the real Qwen BPE tokenizer with Keye's added tokens (keye.tokenizer.save_hf_tokenizer).
It loads with `AutoModelForImageTextToText` / `AutoProcessor` like any hub checkpoint, and its
chat template renders turns exactly like keye/chat.py.

Its captions are noise (random weights): the tests check the plumbing (requests, batching,
failures, provenance) and that CLIP then prefers the better caption, not caption quality.
"""
from __future__ import annotations

import argparse
import os
import sys

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MIN_PIXELS, MAX_PIXELS = 56 * 56, 224 * 224


def build(out_dir: str, seed: int = 0) -> str:
    """Write the tiny model, its processor and tokenizer to out_dir; returns out_dir."""
    import torch
    from transformers import (AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    from keye.tokenizer import KEYE_SPECIAL_TOKENS, save_hf_tokenizer

    os.makedirs(out_dir, exist_ok=True)
    save_hf_tokenizer(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         bos_token_id=KEYE_SPECIAL_TOKENS["<|endoftext|>"],
                         eos_token_id=KEYE_SPECIAL_TOKENS["<|im_end|>"],
                         pad_token_id=KEYE_SPECIAL_TOKENS["<|endoftext|>"]),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = KEYE_SPECIAL_TOKENS["<|im_end|>"]
    model.generation_config.pad_token_id = KEYE_SPECIAL_TOKENS["<|endoftext|>"]
    model.save_pretrained(out_dir)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
        video_processor=Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out_dir)
    return out_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m captioners.tiny_vlm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(build(args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
