"""Keye-VL's multimodal RoPE (`model.visual_positions: mrope`): the (time, height, width) position ids
follow Keye-VL 1.5's rule, text alone turns as under 1-D RoPE, packed samples stay apart, generation
continues from the prompt's positions, and a checkpoint rebuilds the same model."""
from __future__ import annotations

import torch

from tests.test_trainer_model import IMAGE_PAD, packed_logits, sample, tiny
from trainer.model import load_trained, save_weights
from trainer.positions import MultimodalRotary, mrope_positions, sections


def reference(tokens: list, grids: list) -> list[list[int]]:
    """Keye-VL 1.5's `get_mrope_input_positions` for one sample, written as its loop: text continues at
    the largest position so far + 1; a grid starting at s puts token (r, c) at (s, s + r, s + c)."""
    out, nxt, frame, i = [], 0, 0, 0
    while i < len(tokens):
        if tokens[i] == "v":
            rows, cols = grids[frame]
            out += [[nxt, nxt + r, nxt + c] for r in range(rows) for c in range(cols)]
            nxt = max(max(p) for p in out) + 1
            i += rows * cols
            frame += 1
        else:
            out.append([nxt] * 3)
            nxt += 1
            i += 1
    return out


def layout(parts) -> tuple[list, list]:
    """("t", n) text tokens, ("v", rows, cols) one frame: the token kinds and the frames' grids."""
    tokens, grids = [], []
    for p in parts:
        if p[0] == "t":
            tokens += ["t"] * p[1]
        else:
            tokens += ["v"] * (p[1] * p[2])
            grids.append((p[1], p[2]))
    return tokens, grids


def test_positions_follow_keye_15_per_frame_grids_and_restart_per_sample():
    samples = [[("t", 3), ("v", 2, 3), ("t", 2)],
               [("t", 2), ("v", 2, 2), ("v", 1, 4), ("t", 1), ("v", 3, 1), ("t", 4)],   # frames back to back
               [("t", 5)]]
    tokens, grids, want, pos = [], [], [], []
    for parts in samples:
        t, g = layout(parts)
        tokens += t
        grids += g
        want += reference(t, g)
        pos += list(range(len(t)))
    visual = torch.tensor([[k == "v" for k in tokens]])
    got = mrope_positions(visual, torch.tensor([pos]), [[len(layout(p)[0]) for p in samples]], grids)
    assert got.shape == (3, 1, len(tokens))
    assert got[:, 0].T.tolist() == want
    # the first sample by hand: text 0 1 2, grid at 3 (rows 3-4, cols 3-5), text after at 3 + max(2, 3) = 6
    assert got[:, 0, :11].T.tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3], [3, 3, 4], [3, 3, 5],
                                         [3, 4, 3], [3, 4, 4], [3, 4, 5], [6, 6, 6], [7, 7, 7]]


def test_text_alone_turns_as_one_d_rope():
    model, _ = tiny("train_tiny.yaml", "model.visual_positions=mrope")
    rot = model.llm.model.rotary_emb
    assert isinstance(rot, MultimodalRotary) and sum(sections(32)) == 16
    x, pos = torch.randn(1, 9, 8), torch.arange(9)[None]
    want = rot.inner(x, pos)
    with rot.use(pos[None].expand(3, 1, 9)):
        got = rot(x, pos)
    assert all(torch.allclose(a, b) for a, b in zip(got, want))
    ids, _ = sample(5, 30)                                  # no picture: the same logits as 1-D RoPE
    plain, _ = tiny()
    assert torch.allclose(packed_logits(model, [(ids, [])]), packed_logits(plain, [(ids, [])]), atol=1e-5)


def test_packed_samples_stay_apart_and_generation_continues_from_the_prompt(tmp_path):
    model, cfg = tiny("train_tiny.yaml", "model.visual_positions=mrope")
    plain, _ = tiny()
    a, b, c = sample(1, 20, (56, 84)), sample(2, 30, (84, 56)), sample(3, 15, (56, 56))
    packed = packed_logits(model, [a, b, c])
    la, lb = len(a[0]), len(b[0])
    assert torch.allclose(packed[la:la + lb], packed_logits(model, [b]), atol=1e-5)
    assert not torch.allclose(packed_logits(plain, [b]), packed_logits(model, [b]), atol=1e-3)   # it moves

    ids, px = sample(7, 25, (84, 112))
    assert ids.count(IMAGE_PAD) == 12
    last = packed_logits(model, [(ids, px)])[-1]
    first = model.generate(ids, px, max_new_tokens=1, stop_ids=[])
    local = int(last.argmax())
    assert first == [local if model.vocab_ids is None else int(model.vocab_ids[local])]
    steps: list = []
    longer = model.generate(ids, px, max_new_tokens=6, stop_ids=[], scores=steps)   # each step as the whole
    rescored = packed_logits(model, [(ids + longer[:-1], px)])[len(ids) - 1:]          # sequence scores it
    assert torch.allclose(torch.stack(steps), rescored, atol=1e-4)

    save_weights(model, str(tmp_path), cfg.model.tokenizer, cfg.model.merge)
    back, _ = load_trained(str(tmp_path))
    assert back.visual_positions == "mrope" and isinstance(back.llm.model.rotary_emb, MultimodalRotary)
    assert torch.equal(packed_logits(back, [a, b, c]), packed)
