"""Keye-VL's architecture from transformers components.

    frames (3, h, w), h and w multiples of 28
      ─ SiglipVisionModel at native resolution (position embeddings interpolated to h/14 x w/14)
      ─ 2x2 patch merge (4 neighbouring 14-px patches -> one 28x28 token) ─ LayerNorm + 2-layer MLP
      ─▶ (h/28)(w/28) embeddings, written over the row's `<|image_pad|>` / `<|video_pad|>` tokens
    Qwen3ForCausalLM over the packed sequence: positions restart in each sample; attention stays
    inside samples (a block-diagonal causal mask with SDPA; varlen flash attention on CUDA, which
    transformers derives from the restarting position ids). `visual_positions` (trainer/positions.py)
    tells the LLM where each visual token is: Keye-VL's multimodal RoPE (`mrope`), or fixed
    (row, column) features (`sincos2d`).

The loss is computed only where labels exist (assistant tokens): the LM head runs on those
positions alone, which on a 151k vocabulary is most of a tiny model's cost otherwise.

`build_model(cfg)` makes the model (pretrained SigLIP / Qwen3 by local path or hub id, or random
from the recipe's tiny configs), then `set_trainable` freezes by name pattern and
`apply_adapter` wraps it (`model.adapter`: a registered name or "module:function"), which is
where CorDA++ and other PEFT methods plug in. `save_checkpoint` / `load_trained` write and read
a trainer checkpoint folder (safetensors + the configs needed to rebuild it offline).
"""
from __future__ import annotations

import fnmatch
import importlib
import json
import os
from contextlib import nullcontext
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from schemas.train import ModelConfig, TrainConfig
from trainer.positions import MultimodalRotary, install_mrope, mrope_positions, place_features

IGNORE = -100
WEIGHTS = "model.safetensors"
MODEL_META = "keye_model.json"


class Projector(nn.Module):
    """Keye-VL's projector: merge x merge patches concatenated, then LayerNorm'd MLP to the LLM width."""

    def __init__(self, vision_dim: int, llm_dim: int, merge: int) -> None:
        super().__init__()
        self.merge = merge
        self.norm = nn.LayerNorm(vision_dim, eps=1e-6)
        self.fc1 = nn.Linear(vision_dim * merge * merge, vision_dim * merge * merge)
        self.fc2 = nn.Linear(vision_dim * merge * merge, llm_dim)

    def forward(self, patches: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        b, _, d = patches.shape
        m = self.merge
        x = self.norm(patches).view(b, grid_h // m, m, grid_w // m, m, d).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, (grid_h // m) * (grid_w // m), m * m * d)
        return self.fc2(F.gelu(self.fc1(x)))


class KeyeVL(nn.Module):
    def __init__(self, vision: nn.Module, llm: nn.Module, merge: int, visual_token_ids: Sequence[int],
                 vocab_ids: Optional[Sequence[int]] = None, visual_positions: str = "none") -> None:
        super().__init__()
        self.visual_positions = visual_positions
        self.vision = vision
        self.llm = llm
        if visual_positions == "mrope":
            install_mrope(llm)
        self.projector = Projector(vision.config.hidden_size, llm.config.hidden_size, merge)
        self.patch = vision.config.patch_size
        self.register_buffer("visual_ids", torch.tensor(sorted(visual_token_ids)), persistent=False)
        # A vocabulary subset (tiny CPU models, `model.vocab_subset`): row k of the embedding and the
        # LM head is tokenizer id vocab_ids[k]; ids outside it read the row of vocab_ids[0].
        if vocab_ids is None:
            self.vocab_ids: Optional[torch.Tensor] = None
        else:
            ids = torch.tensor(sorted(set(vocab_ids)))
            local = torch.zeros(int(ids.max()) + 1, dtype=torch.long)
            local[ids] = torch.arange(len(ids))
            self.register_buffer("vocab_ids", ids)
            self.register_buffer("local_of", local, persistent=False)

    def to_local(self, ids: torch.Tensor) -> torch.Tensor:
        if self.vocab_ids is None:
            return ids
        return self.local_of[ids.clamp(0, len(self.local_of) - 1)]

    # --- vision ----------------------------------------------------------------------------------------
    def encode_frames(self, pixels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per frame (3, h, w) -> its (h/28 * w/28, llm_dim) embeddings; frames of one size share a batch."""
        out: list[Optional[torch.Tensor]] = [None] * len(pixels)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(pixels):
            groups.setdefault(tuple(p.shape[-2:]), []).append(i)
        dtype = next(self.projector.parameters()).dtype
        for (h, w), idx in sorted(groups.items()):
            batch = torch.stack([pixels[i] for i in idx]).to(self.visual_ids.device, dtype)
            hidden = self.vision(pixel_values=batch, interpolate_pos_encoding=True).last_hidden_state
            tokens = self.projector(hidden, h // self.patch, w // self.patch)
            if self.visual_positions == "sincos2d":
                m = self.projector.merge
                tokens = tokens + place_features(h // self.patch // m, w // self.patch // m, tokens)
            for j, i in enumerate(idx):
                out[i] = tokens[j]
        return out  # type: ignore[return-value]

    def embed(self, input_ids: torch.Tensor, pixels: Sequence[torch.Tensor]) -> torch.Tensor:
        embeds = self.llm.get_input_embeddings()(self.to_local(input_ids))
        if not pixels:
            return embeds
        visual = torch.cat(self.encode_frames(pixels)).to(embeds.dtype)
        where = torch.isin(input_ids, self.visual_ids)
        if int(where.sum()) != visual.shape[0]:
            raise ValueError(f"{int(where.sum())} visual pad tokens but {visual.shape[0]} visual embeddings")
        return embeds.masked_scatter(where.unsqueeze(-1), visual)

    # --- language --------------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, position_ids: torch.Tensor, seq_lens: Sequence[Sequence[int]],
                      pixels: Sequence[torch.Tensor]) -> torch.Tensor:
        embeds = self.embed(input_ids, pixels)
        mask = None
        if self.llm.config._attn_implementation != "flash_attention_2":
            mask = block_causal_mask(seq_lens, input_ids.shape[1], input_ids.device)
        with self.rotate(self.mrope(input_ids, position_ids, seq_lens, pixels)):
            return self.llm.model(inputs_embeds=embeds, position_ids=position_ids, attention_mask=mask,
                                  use_cache=False).last_hidden_state

    @property
    def rotary(self) -> Optional[MultimodalRotary]:
        """The LLM's multimodal rotary module (`visual_positions: mrope`; registered once, under the LLM)."""
        rot = self.llm.model.rotary_emb
        return rot if isinstance(rot, MultimodalRotary) else None

    def grids(self, pixels: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
        side = self.patch * self.projector.merge
        return [(p.shape[-2] // side, p.shape[-1] // side) for p in pixels]

    def mrope(self, input_ids: torch.Tensor, position_ids: torch.Tensor, seq_lens: Sequence[Sequence[int]],
              pixels: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
        """(3, B, T) multimodal RoPE positions (`visual_positions: mrope`), else None."""
        if self.rotary is None:
            return None
        where = torch.isin(input_ids, self.visual_ids).cpu()     # a few small ops per frame: on the host
        return mrope_positions(where, position_ids.cpu(), seq_lens, self.grids(pixels)).to(input_ids.device)

    def rotate(self, positions: Optional[torch.Tensor]):
        return nullcontext() if positions is None else self.rotary.use(positions)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor,
                seq_lens: Sequence[Sequence[int]], pixels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(summed next-token cross-entropy over label tokens, number of label tokens)."""
        hidden = self.hidden_states(input_ids, position_ids, seq_lens, pixels)
        target = labels[:, 1:]
        keep = target != IGNORE
        logits = self.llm.lm_head(hidden[:, :-1][keep]).float()
        return F.cross_entropy(logits, self.to_local(target[keep]), reduction="sum"), int(keep.sum())

    def logits(self, input_ids: torch.Tensor, position_ids: torch.Tensor, seq_lens: Sequence[Sequence[int]],
               pixels: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.llm.lm_head(self.hidden_states(input_ids, position_ids, seq_lens, pixels)).float()

    @torch.inference_mode()
    def generate(self, input_ids: list[int], pixels: Sequence[torch.Tensor], max_new_tokens: int,
                 stop_ids: Sequence[int], temperature: float = 0.0, seed: int = 0,
                 scores: Optional[list] = None) -> list[int]:
        """Greedy (or sampled) decoding with the LLM's KV cache; the prompt's frames are encoded once.
        `scores`, when given, receives each step's logits (over the model's vocabulary)."""
        device = self.visual_ids.device
        ids = torch.tensor([input_ids], device=device)
        embeds = self.embed(ids, pixels)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out, past, pos = [], None, len(input_ids)
        step_embeds, positions = embeds, torch.arange(pos, device=device)[None]
        prompt = self.mrope(ids, positions, [[pos]], pixels)
        if prompt is not None:          # the answer continues after the prompt's largest 3-D position
            pos = int(prompt.max()) + 1
        for _ in range(max_new_tokens):
            with self.rotate(prompt if past is None else None):
                res = self.llm(inputs_embeds=step_embeds, position_ids=positions, past_key_values=past,
                               use_cache=True)
            past = res.past_key_values
            logits = res.logits[0, -1].float()
            if scores is not None:
                scores.append(logits)
            if temperature > 0:
                local = int(torch.multinomial(torch.softmax(logits.cpu() / temperature, -1), 1, generator=gen))
            else:
                local = int(logits.argmax())
            nxt = local if self.vocab_ids is None else int(self.vocab_ids[local])
            if nxt in stop_ids:
                break
            out.append(nxt)
            step_embeds = self.llm.get_input_embeddings()(torch.tensor([[local]], device=device))
            positions = torch.tensor([[pos]], device=device)
            pos += 1
        return out


def block_causal_mask(seq_lens: Sequence[Sequence[int]], length: int, device) -> torch.Tensor:
    """(B, 1, T, T) bool: token i attends to j iff j <= i and both are in the same sample."""
    seg = torch.stack([torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))[:length]
                       for lens in seq_lens]).to(device)
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


# --- building ------------------------------------------------------------------------------------------
def attention_impl(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    if str(device).startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def visual_token_ids(tokenizer) -> list[int]:
    from trainer.template import PAD_TOKENS, special_id

    return [special_id(tokenizer, t) for t in PAD_TOKENS]


def build_vision(cfg: ModelConfig):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    if cfg.vision:
        vision = SiglipVisionModel.from_pretrained(cfg.vision)
        if vision.use_head:   # the attention-pooling head is for contrastive training; Keye uses the patches
            vision.use_head, vision.config.vision_use_head = False, False
            del vision.head
        return vision
    v = cfg.vision_config
    return SiglipVisionModel(SiglipVisionConfig(
        hidden_size=v.hidden_size, intermediate_size=v.intermediate_size, num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads, patch_size=v.patch_size, image_size=v.image_size,
        vision_use_head=False))


def build_llm(cfg: ModelConfig, attn: str, vocab_size: Optional[int] = None):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if cfg.llm:
        conf = Qwen3Config.from_pretrained(cfg.llm)
    else:
        c = cfg.llm_config
        conf = Qwen3Config(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                           num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                           num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim,
                           vocab_size=vocab_size or c.vocab_size,
                           max_position_embeddings=c.max_position_embeddings, rope_theta=c.rope_theta,
                           tie_word_embeddings=c.tie_word_embeddings)
    if cfg.rope_theta is not None:
        conf.rope_parameters = {**(conf.rope_parameters or {"rope_type": "default"}), "rope_theta": cfg.rope_theta}
    conf._attn_implementation = attn
    if cfg.llm:
        return Qwen3ForCausalLM.from_pretrained(cfg.llm, config=conf, attn_implementation=attn)
    return Qwen3ForCausalLM(conf)


def build_model(cfg: ModelConfig, tokenizer, device: str = "cpu", seed: int = 0,
                vocab_ids: Optional[Sequence[int]] = None) -> KeyeVL:
    """The model of a recipe: pretrained parts where named, random (seeded) otherwise; then
    `model.init` (a trainer checkpoint) when set. `vocab_ids` (a random LLM only) restricts the
    vocabulary to those tokenizer ids."""
    torch.manual_seed(seed)
    attn = attention_impl(cfg.attention, device)
    if vocab_ids is not None and cfg.llm:
        raise ValueError("model.vocab_subset applies to a randomly initialised LLM only (model.llm is set)")
    vocab_size = len(set(vocab_ids)) if vocab_ids is not None else None
    model = KeyeVL(build_vision(cfg), build_llm(cfg, attn, vocab_size), cfg.merge,
                   visual_token_ids(tokenizer), vocab_ids, cfg.visual_positions)
    if cfg.init:
        load_weights(model, cfg.init)
    if cfg.gradient_checkpointing:
        for part in (model.vision, model.llm):   # transformers 5 renamed it; the old name warns
            (getattr(part, "activation_checkpointing_enable", None) or part.gradient_checkpointing_enable)()
    return model.to(device)


def set_trainable(model: nn.Module, patterns: Sequence[str]) -> tuple[int, int]:
    """requires_grad by fnmatch over parameter names; (trainable, total) parameter counts."""
    trainable = total = 0
    for name, p in model.named_parameters():
        p.requires_grad = any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    if not trainable:
        raise ValueError(f"stage.trainable {list(patterns)} matches no parameter")
    return trainable, total


ADAPTERS: dict[str, Callable[[nn.Module, TrainConfig], nn.Module]] = {}


def register_adapter(name: str):
    """Register `fn(model, train_cfg) -> model`, applied after freezing (`model.adapter: name`)."""
    def deco(fn):
        ADAPTERS[name] = fn
        return fn
    return deco


def apply_adapter(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    name = cfg.model.adapter
    if not name:
        return model
    if name in ADAPTERS:
        return ADAPTERS[name](model, cfg)
    module, _, fn = name.partition(":")
    if not fn:
        raise ValueError(f"model.adapter {name!r}: not registered ({sorted(ADAPTERS)}) and not 'module:function'")
    return getattr(importlib.import_module(module), fn)(model, cfg)


# --- checkpoints of the model ----------------------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def write_meta(model: nn.Module, folder: str, tokenizer_spec: str, merge: int, data: Optional[dict] = None) -> None:
    """`keye_model.json`: the configs that rebuild the model offline, its tokenizer, and how its
    training data was rendered (`data`: chat_layout, system_prompt, the pipeline's media recipe)."""
    m = unwrap(model)
    meta = {"vision_config": m.vision.config.to_dict(), "llm_config": m.llm.config.to_dict(), "merge": merge,
            "visual_positions": getattr(m, "visual_positions", "none"),
            "tokenizer": tokenizer_spec, "vocab_subset": m.vocab_ids is not None, "data": data or {}}
    if hasattr(m, "peft_config"):           # CorDA / LoRA adapters: load_trained folds them into the weights
        from trainer.corda.keye import lora_scaling
        meta["lora_scaling"] = lora_scaling(m)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, MODEL_META), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True, default=str)


def save_weights(model: nn.Module, folder: str, tokenizer_spec: str, merge: int, data: Optional[dict] = None) -> None:
    from safetensors.torch import save_model

    write_meta(model, folder, tokenizer_spec, merge, data)
    save_model(unwrap(model), os.path.join(folder, WEIGHTS))


def read_meta(folder: str) -> dict:
    with open(os.path.join(folder, MODEL_META), encoding="utf-8") as f:
        return json.load(f)


def load_weights(model: nn.Module, folder: str) -> None:
    from safetensors.torch import load_model

    load_model(unwrap(model), os.path.join(folder, WEIGHTS), strict=True)


def checkpoint_vocab(folder: str) -> Optional[list[int]]:
    """The vocabulary subset stored with a trainer checkpoint's weights, if it has one."""
    from safetensors import safe_open

    with safe_open(os.path.join(folder, WEIGHTS), framework="pt") as f:
        key = next((k for k in ("vocab_ids", "base_model.model.vocab_ids") if k in f.keys()), None)
        return f.get_tensor(key).tolist() if key else None


def load_trained(folder: str, device: str = "cpu") -> tuple[KeyeVL, object]:
    """(model, tokenizer) of a trainer checkpoint folder, rebuilt from its own configs (offline)."""
    from keye.tokenizer import load_tokenizer

    meta = read_meta(folder)
    tokenizer = load_tokenizer(meta["tokenizer"])
    from transformers import Qwen3Config, Qwen3ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    drop = ("transformers_version", "architectures")
    vision = SiglipVisionModel(SiglipVisionConfig(**{k: v for k, v in meta["vision_config"].items() if k not in drop}))
    llm_conf = Qwen3Config(**{k: v for k, v in meta["llm_config"].items() if k not in drop})
    llm_conf._attn_implementation = attention_impl("auto", device)
    model = KeyeVL(vision, Qwen3ForCausalLM(llm_conf), meta["merge"], visual_token_ids(tokenizer),
                   checkpoint_vocab(folder), meta.get("visual_positions", "none"))
    if meta.get("lora_scaling"):
        from trainer.corda.keye import load_folded
        load_folded(model, os.path.join(folder, WEIGHTS), meta["lora_scaling"])
    else:
        load_weights(model, folder)
    return model.to(device).eval(), tokenizer
