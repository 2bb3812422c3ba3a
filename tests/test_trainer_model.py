"""The Keye-VL model: no attention across packed samples, each stage's frozen parameters, loading
pretrained SigLIP / Qwen3 checkpoints from disk, and trainer checkpoints round-tripping."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from keye.tokenizer import KEYE_SPECIAL_TOKENS, load_tokenizer
from schemas.config import CONFIG_DIR
from schemas.train import load_train_config
from trainer.model import KeyeVL, build_model, load_trained, place_features, save_weights, set_trainable
from trainer.train import make_optimizer

IMAGE_PAD = KEYE_SPECIAL_TOKENS["<|image_pad|>"]
VOCAB = sorted(set(range(400)) | set(KEYE_SPECIAL_TOKENS.values()))


def tiny(recipe="train_tiny.yaml", *overrides, vocab=VOCAB) -> tuple[KeyeVL, object]:
    cfg = load_train_config(os.path.join(CONFIG_DIR, recipe), list(overrides))
    return build_model(cfg.model, load_tokenizer(), "cpu", 0, vocab), cfg


def sample(seed: int, n_text: int, image_hw=None):
    """Token ids with an optional image (its (h/28)(w/28) pads in the middle), and its pixels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 400, (n_text,), generator=g).tolist()
    pixels = []
    if image_hw:
        h, w = image_hw
        ids[n_text // 2:n_text // 2] = [IMAGE_PAD] * ((h // 28) * (w // 28))
        pixels = [torch.rand(3, h, w, generator=g) * 2 - 1]
    return ids, pixels


def packed_logits(model, samples):
    ids = [t for s, _ in samples for t in s]
    pos = [p for s, _ in samples for p in range(len(s))]
    lens = [[len(s) for s, _ in samples]]
    pixels = [p for _, px in samples for p in px]
    with torch.no_grad():
        return model.logits(torch.tensor([ids]), torch.tensor([pos]), lens, pixels)[0]


def test_packed_samples_do_not_see_each_other():
    model, _ = tiny()
    a, c = sample(1, 20, (56, 84)), sample(3, 15, (84, 56))
    b1, b2 = sample(2, 30, (56, 56)), sample(4, 37)       # change the middle sample (and its length)
    one = packed_logits(model, [a, b1, c])
    two = packed_logits(model, [a, b2, c])
    la, lb1, lb2 = len(a[0]), len(b1[0]), len(b2[0])
    assert torch.allclose(one[:la], two[:la], atol=1e-5)
    assert torch.allclose(one[la + lb1:], two[la + lb2:], atol=1e-5)
    assert not torch.allclose(one[la:la + lb1].mean(0), two[la:la + lb2].mean(0), atol=1e-3)
    alone = packed_logits(model, [b1])                     # a sample packed equals the sample alone
    assert torch.allclose(one[la:la + lb1], alone, atol=1e-5)


def one_step(model, cfg):
    opt = make_optimizer(model, cfg)
    ids, px = sample(5, 40, (56, 56))
    labels = torch.tensor([ids])
    labels[0, :10] = -100
    loss, n = model(torch.tensor([ids]), labels, torch.arange(len(ids))[None], [[len(ids)]], px)
    (loss / n).backward()
    opt.step()


@pytest.mark.parametrize("recipe,trains", [("train_tiny_stage1.yaml", {"projector"}),
                                           ("train_tiny.yaml", {"projector", "vision", "llm"})])
def test_each_stage_trains_only_its_parameters(recipe, trains):
    model, cfg = tiny(recipe)
    set_trainable(model, cfg.stage.trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one_step(model, cfg)
    changed = {k.split(".")[0] for k, v in model.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])}
    assert changed == trains
    frozen = [k for k, p in model.named_parameters() if not p.requires_grad]
    assert all(k.split(".")[0] not in trains for k in frozen)


def test_stage_recipes_name_their_stage():
    for recipe, stage, trainable in (("train_stage1.yaml", "stage1", ["projector.*"]),
                                     ("train_stage2.yaml", "stage2", ["*"]),
                                     ("train_stage3.yaml", "stage3", ["*"]), ("train_sft.yaml", "sft", ["*"])):
        cfg = load_train_config(os.path.join(CONFIG_DIR, recipe))
        assert (cfg.stage.name, cfg.stage.trainable) == (stage, trainable)
        assert cfg.model.vision and cfg.model.llm   # real checkpoints by hub id (or --set a local path)
    s3 = load_train_config(os.path.join(CONFIG_DIR, "train_stage3.yaml"))
    assert s3.data.pack_length > 8192 and s3.optim.schedule == "linear" and s3.model.rope_theta == 8e6


def test_pretrained_siglip_and_qwen3_load_from_disk(tmp_path):
    """Real configs name checkpoints; the same code loads tiny ones saved to disk (a full SiglipModel
    with its text tower, as google/siglip-* ships, and a Qwen3ForCausalLM)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM, SiglipConfig, SiglipModel

    torch.manual_seed(1)
    siglip = SiglipModel(SiglipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           patch_size=14, image_size=56),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100)))
    qwen = Qwen3ForCausalLM(Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                        vocab_size=151680))
    siglip.save_pretrained(tmp_path / "siglip")
    qwen.save_pretrained(tmp_path / "qwen3")
    cfg = load_train_config(None, [f"model.vision={tmp_path / 'siglip'}", f"model.llm={tmp_path / 'qwen3'}",
                                   "model.vocab_subset=false", "model.rope_theta=8000000.0"])
    model = build_model(cfg.model, load_tokenizer())
    sd = model.state_dict()
    for k, v in siglip.vision_model.state_dict().items():
        if not k.startswith("head."):    # the pooling head is dropped: Keye uses the patch tokens
            assert torch.equal(sd[f"vision.{k}"], v), k
    assert not any(k.startswith("vision.head.") for k in sd)
    for k, v in qwen.state_dict().items():
        assert torch.equal(sd[f"llm.{k}"], v), k
    assert model.llm.config.rope_parameters["rope_theta"] == 8e6
    ids, px = sample(7, 12, (56, 84))
    with torch.no_grad():
        assert model.logits(torch.tensor([ids]), torch.arange(len(ids))[None], [[len(ids)]], px).shape[-1] == 151680


def test_trainer_checkpoints_round_trip(tmp_path):
    model, cfg = tiny()
    save_weights(model, str(tmp_path), cfg.model.tokenizer, cfg.model.merge, {"chat_layout": "keye_preview"})
    back, _ = load_trained(str(tmp_path))
    ids, px = sample(8, 25, (84, 84))
    args = (torch.tensor([ids]), torch.arange(len(ids))[None], [[len(ids)]], px)
    with torch.no_grad():
        assert torch.equal(model.logits(*args), back.logits(*args))
    assert back.vocab_ids.tolist() == VOCAB


def test_visual_positions_tell_places_apart_and_survive_a_checkpoint(tmp_path):
    """model.visual_positions: sincos2d adds each visual token's (row, column) in its frame: the same
    picture gives different tokens at another place, the same place reads alike at any resolution, and a
    checkpoint rebuilds the same model."""
    tokens = torch.randn(1, 4 * 6, 128)
    feats = place_features(4, 6, tokens)
    assert feats.shape == tokens.shape
    assert torch.allclose(feats.pow(2).mean().sqrt(), 0.5 * tokens.pow(2).mean().sqrt(), rtol=1e-4)
    grid = feats[0].view(4, 6, 128)
    assert len({tuple(v.round(decimals=4).tolist()) for v in grid.reshape(-1, 128)}) == 24
    double = place_features(8, 12, torch.randn(1, 8 * 12, 128))[0].view(8, 12, 128)
    near = torch.nn.functional.cosine_similarity(double[0, 0], grid[0, 0], 0)     # the top-left corner, finer grid
    far = torch.nn.functional.cosine_similarity(double[7, 11], grid[0, 0], 0)
    assert near > 0.9 > far

    model, cfg = tiny("train_tiny.yaml", "model.visual_positions=sincos2d")
    plain, _ = tiny()
    ids, px = sample(8, 25, (84, 84))
    args = (torch.tensor([ids]), torch.arange(len(ids))[None], [[len(ids)]], px)
    with torch.no_grad():
        assert not torch.allclose(model.logits(*args), plain.logits(*args))
    save_weights(model, str(tmp_path), cfg.model.tokenizer, cfg.model.merge)
    back, _ = load_trained(str(tmp_path))
    assert back.visual_positions == "sincos2d"
    with torch.no_grad():
        assert torch.equal(model.logits(*args), back.logits(*args))


def test_a_trainable_pattern_that_matches_nothing_is_an_error():
    model, _ = tiny()
    with pytest.raises(ValueError, match="matches no parameter"):
        set_trainable(model, ["projecter.*"])
    cfg = load_train_config()
    with pytest.raises(Exception, match="stage.trainable"):
        dataclasses.replace(cfg, stage=dataclasses.replace(cfg.stage, trainable=[]))


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for gc in ("false", "true"):
        model, cfg = tiny("train_tiny.yaml", f"model.gradient_checkpointing={gc}")
        model.train()
        ids, px = sample(9, 40, (56, 84))
        loss, n = model(torch.tensor([ids]), torch.tensor([ids]), torch.arange(len(ids))[None], [[len(ids)]], px)
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])
