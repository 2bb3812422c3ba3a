"""Where a visual token is, told to an LLM whose own positions are 1-D (`model.visual_positions`).

    none      as the LLM is: 1-D RoPE over the packed stream (a frame's tokens are a run of positions)
    sincos2d  each visual token's (row, column) added to it as fixed sin/cos features (parameter-free)
    mrope     Keye-VL's multimodal RoPE: the head dimension's rotary frequencies split into (time, height,
              width) sections, each turned by its own position id. Keye-VL 1.5's rule (its
              `get_mrope_input_positions`): every image and every video frame is its own grid with one
              time step; its tokens sit at (s, s + row, s + col) for the grid's start s, and the text after
              it continues at s + max(rows, cols). Text tokens have three equal ids, so a text-only sequence
              turns exactly as under 1-D RoPE, and time order comes from the grids' starts (and, in the
              1.5 layout, the timestamp text between frames).

The three position rows are derived from what a batch already holds (token ids, the per-sample 1-D
positions, each frame's pixel size), so data loading and checkpoints are unchanged; the rotary module
reads them for the one forward pass they were set for (`MultimodalRotary.use`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

VISUAL_POSITIONS = ("none", "sincos2d", "mrope")


def place_features(rows: int, cols: int, tokens: torch.Tensor) -> torch.Tensor:
    """(1, rows*cols, dim) fixed sin/cos features of each token's row and column as fractions of the frame
    (the same place reads the same at any resolution), scaled to half the tokens' RMS: what Keye-VL's
    mRoPE tells its LLM about where a visual token is, for an LLM with 1-D positions."""
    dim = tokens.shape[-1]
    # wavelengths from 4 frame widths (monotonic across the frame) down to half a frame
    freqs = (torch.pi / 2) * 2.0 ** torch.linspace(0, 3, dim // 4, device=tokens.device)
    y = (torch.arange(rows, device=tokens.device, dtype=torch.float32) + 0.5) / rows
    x = (torch.arange(cols, device=tokens.device, dtype=torch.float32) + 0.5) / cols
    fy, fx = y[:, None] * freqs, x[:, None] * freqs                            # (rows, dim/4), (cols, dim/4)
    grid = torch.cat([fy.sin()[:, None].expand(-1, cols, -1), fy.cos()[:, None].expand(-1, cols, -1),
                      fx.sin()[None].expand(rows, -1, -1), fx.cos()[None].expand(rows, -1, -1)], -1)
    feats = torch.zeros(rows * cols, dim, device=tokens.device, dtype=torch.float32)
    feats[:, :grid.shape[-1]] = grid.reshape(rows * cols, -1)
    scale = 0.5 * tokens.detach().float().pow(2).mean(dim=(-1, -2), keepdim=True).sqrt()
    return (feats[None] * scale / feats.pow(2).mean().sqrt()).to(tokens.dtype)


def mrope_positions(visual: torch.Tensor, position_ids: torch.Tensor, seq_lens: Sequence[Sequence[int]],
                    grids: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(3, B, T) time / height / width position ids. `visual` (B, T) marks visual pad tokens,
    `position_ids` (B, T) are the 1-D ones (restarting at each packed sample), `grids` the (rows, cols)
    of every frame in the batch in token order (a frame's pads are the next rows*cols visual tokens)."""
    pos = position_ids.to(torch.long)
    shift = torch.zeros_like(pos)          # how far each token's 3-D start lags its 1-D position
    out = pos.unsqueeze(0).repeat(3, 1, 1)
    frame = 0
    for b, lens in enumerate(seq_lens):
        where = visual[b].nonzero().flatten().tolist()
        ends = torch.tensor(list(lens)).cumsum(0).tolist()
        j, sample = 0, 0
        while j < len(where):
            if frame >= len(grids):
                raise ValueError(f"{len(where) - j} visual tokens in row {b} beyond the batch's {len(grids)} frames")
            rows, cols = grids[frame]
            idx = torch.tensor(where[j:j + rows * cols], device=pos.device)
            if len(idx) != rows * cols or int(idx[-1] - idx[0]) != rows * cols - 1:
                raise ValueError(f"frame {frame} ({rows}x{cols}) is not one run of visual tokens in row {b}")
            while int(idx[0]) >= ends[sample]:
                sample += 1
            start = int(pos[b, idx[0]] - shift[b, idx[0]])
            k = torch.arange(rows * cols, device=pos.device)
            out[0, b, idx] = start
            out[1, b, idx] = start + k // cols
            out[2, b, idx] = start + k % cols
            after = int(idx[-1]) + 1
            if after < ends[sample]:        # the rest of this sample starts max(rows, cols) after s, not rows*cols
                shift[b, after:ends[sample]] += rows * cols - max(rows, cols)
            j += rows * cols
            frame += 1
        text = ~visual[b]
        out[:, b, text] = (pos[b] - shift[b])[text]
    if frame != len(grids):
        raise ValueError(f"{len(grids)} frames but visual tokens for {frame}")
    return out


def sections(head_dim: int) -> tuple[int, int, int]:
    """Rotary frequency pairs per (time, height, width): Qwen2-VL's [16, 24, 24] of 64 pairs, scaled."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return t, h, half - t - h


class MultimodalRotary(nn.Module):
    """Replaces a Qwen3 decoder's rotary module: cos/sin from (3, B, T) positions when `use` set them
    for this forward pass, else exactly the 1-D rotary (text-only generation steps, other callers)."""

    def __init__(self, inner: nn.Module, head_dim: int) -> None:
        super().__init__()
        self.inner = inner
        self.sections = sections(head_dim)
        self._positions: Optional[torch.Tensor] = None

    @contextmanager
    def use(self, positions: torch.Tensor) -> Iterator[None]:
        self._positions = positions
        try:
            yield
        finally:
            self._positions = None

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self._positions
        if pos is None:
            return self.inner(x, position_ids)
        inv = self.inner.inv_freq.to(device=x.device, dtype=torch.float)
        freqs = pos[..., None].float() * inv                               # (3, B, T, half)
        bounds = torch.tensor((0, *self.sections)).cumsum(0).tolist()
        mixed = torch.cat([freqs[i, ..., bounds[i]:bounds[i + 1]] for i in range(3)], dim=-1)
        emb = torch.cat((mixed, mixed), dim=-1)
        scale = getattr(self.inner, "attention_scaling", 1.0)
        return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)


def install_mrope(llm: nn.Module) -> MultimodalRotary:
    """Swap the decoder's rotary module for the multimodal one (no parameters: checkpoints unchanged)."""
    base = llm.model.rotary_emb
    if isinstance(base, MultimodalRotary):
        return base
    conf = llm.config
    head_dim = getattr(conf, "head_dim", None) or conf.hidden_size // conf.num_attention_heads
    llm.model.rotary_emb = MultimodalRotary(base, head_dim)
    return llm.model.rotary_emb
