"""The training data path: pipeline output folders -> packed, tokenised sequences.

    folders (weights) ─ epoch e: shard order (permutation or resampled) ─ split: stream s, worker w
        ─ read + sha256 ─ rows (webdataset tar iterator | Parquet + tar members)
        ─ wds.shuffle(buffer, seeded) ─ mix folders by weight (seeded) ─ pack by stored token counts
        ─ skip the packs a checkpoint already consumed ─ tokenise, check counts, decode frames ─▶ Pack

One worker holds one shard's bytes, its shuffle buffer and the packer's look-ahead; nothing
holds the corpus. Every random choice is seeded from (seed, stream, worker, epoch), so a stream
is a pure function of the recipe: a run resumed at pack n of each stream sees exactly the packs an
uninterrupted run would (skipped packs are never tokenised or decoded). Streams are fixed by
`data.streams`, independent of the number of ranks: rank r reads streams r, r+W, ..., one per
micro-batch, so 1 rank x 2 micro-batches and 2 ranks x 1 see the same global batch.

Packing uses the rows' stored `text_tokens + visual_tokens` (online first-fit in arrival order; the
fullest open pack leaves when `pack_buffer` rows wait: `Packer`); positions restart at 0 in each
sample and `seq_lens` lets the model keep attention inside samples. Rows longer than a pack are
skipped and counted (`too_long`), never truncated.
"""
from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from schemas.sample import Sample
from schemas.train import DataConfig
from trainer.folders import OutputFolder, parquet_rows, read_verified, shard_rows, wds_rows
from trainer.template import IGNORE, Encoded, encode_sample

PIXEL_MEAN, PIXEL_STD = 0.5, 0.5     # SigLIP's normalisation


@dataclass
class Source:
    folder: OutputFolder
    weight: float


@dataclass
class Pack:
    """One packed sequence: `input_ids`, `labels`, `position_ids` (length pack_length), the
    samples' lengths in order (padding is the last entry when present), and the frames' pixels
    in the order their visual tokens appear."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    seq_lens: list[int]
    pixels: list[torch.Tensor] = field(default_factory=list)    # (3, h, w) float each
    sample_ids: list[str] = field(default_factory=list)
    real_tokens: int = 0
    too_long: int = 0          # rows the stream skipped so far for being longer than a pack

    @property
    def efficiency(self) -> float:
        return self.real_tokens / len(self.input_ids)


def seed_of(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def sample_length(s: Sample) -> int:
    return s.text_tokens + s.visual_tokens


# --- rows ------------------------------------------------------------------------------------------------
def epoch_shards(folder: OutputFolder, cfg: DataConfig, epoch: int, kind: str) -> list:
    shards = folder.list(kind)
    rng = np.random.default_rng(seed_of(cfg.seed, folder.root.rstrip("/").split("/")[-1], "epoch", epoch))
    if cfg.resample:
        return [shards[i] for i in rng.integers(0, len(shards), len(shards))]
    return [shards[i] for i in rng.permutation(len(shards))]


def folder_rows(folder: OutputFolder, cfg: DataConfig, part: int, parts: int) -> Iterator[Sample]:
    """This part's rows of a folder, epoch after epoch, forever. Shards are split between the
    parts (stream x worker); with fewer shards than parts, every part reads every shard and keeps
    every `parts`-th row, so a small folder still feeds each part."""
    kind = "parquet" if cfg.format == "parquet" else "wds"
    epoch = 0
    while True:
        shards = epoch_shards(folder, cfg, epoch, kind)
        by_row = len(shards) < parts
        mine = shards if by_row else shards[part::parts]
        k = 0
        for shard in mine:
            for sample in shard_rows(folder, shard, cfg.format, cfg.verify):
                if not by_row or k % parts == part:
                    yield sample
                k += 1
        if k == 0 and epoch >= len(shards):
            raise ValueError(f"{folder.root}: no rows to train on in part {part} of {parts}")
        epoch += 1


def mixed_rows(sources: Sequence[Source], cfg: DataConfig, part: int, parts: int) -> Iterator[tuple[int, Sample]]:
    """(source index, row): each folder shuffled through `webdataset.shuffle`, then drawn by weight."""
    import webdataset as wds

    streams = [iter(wds.shuffle(bufsize=cfg.shuffle_buffer, initial=cfg.shuffle_buffer,
                                rng=random.Random(seed_of(cfg.seed, "shuffle", i, part)))(
                        folder_rows(s.folder, cfg, part, parts))
                    if cfg.shuffle_buffer > 1 else folder_rows(s.folder, cfg, part, parts))
               for i, s in enumerate(sources)]
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    cum = np.cumsum(weights / weights.sum())
    rng = random.Random(seed_of(cfg.seed, "mix", part))
    while True:
        i = min(int(np.searchsorted(cum, rng.random(), side="right")), len(sources) - 1)
        yield i, next(streams[i])


# --- packing ---------------------------------------------------------------------------------------------
@dataclass
class Packer:
    """Online first-fit by stored token counts: each row, in the (shuffled) order it arrives, goes into
    the first open pack with room; when more than `buffer` rows wait in open packs, the fullest pack
    leaves (a full one leaves at once). Not first-fit *decreasing*: sorting the look-ahead by length
    filled each pack with rows of one length (one video geometry, one caption length), and those
    homogeneous batches kept the tiny model's direction word at chance where mixed ones of the same
    rows taught it (README, "Evidence"); this packs as tightly (bench.train)."""

    length: int
    buffer: int
    too_long: int = 0

    def packs(self, rows: Iterator[tuple[int, Sample]]) -> Iterator[list[tuple[int, Sample]]]:
        bins: list[list[tuple[int, Sample]]] = []
        room: list[int] = []
        held = 0

        def leave(j: int) -> list[tuple[int, Sample]]:
            nonlocal held
            held -= len(bins[j])
            room.pop(j)
            return bins.pop(j)

        for src, sample in rows:
            n = sample_length(sample)
            if n > self.length:
                self.too_long += 1
                continue
            j = next((k for k, free in enumerate(room) if n <= free), len(bins))
            if j == len(bins):
                bins.append([])
                room.append(self.length)
            bins[j].append((src, sample))
            room[j] -= n
            held += 1
            if room[j] == 0:
                yield leave(j)
            while held > self.buffer:
                yield leave(min(range(len(room)), key=lambda k: (room[k], k)))    # the fullest, the oldest of equals


# --- materialising ---------------------------------------------------------------------------------------
def decode_frame(data: bytes, height: int, width: int, sample_id: str) -> torch.Tensor:
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.size != (width, height):
        raise ValueError(f"row {sample_id}: a stored frame is {img.size[0]}x{img.size[1]}, "
                         f"the row says {width}x{height}")
    return pixel_tensor(img)


def pixel_tensor(img) -> torch.Tensor:
    """A PIL RGB picture as SigLIP's (3, h, w) input."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return (arr / 255.0 - PIXEL_MEAN) / PIXEL_STD


def frame_pixels(sample: Sample, enc: Encoded) -> list[torch.Tensor]:
    return [decode_frame(sample.blobs[f.member], f.height, f.width, sample.id) for f in enc.frames]


def build_pack(rows: list[tuple[int, Sample]], sources: Sequence[Source], tokenizer, length: int,
               pad_id: int) -> Pack:
    ids, labels, pos, lens, pixels, names = [], [], [], [], [], []
    for src, sample in rows:
        folder = sources[src].folder
        enc = encode_sample(sample, tokenizer, folder.layout, folder.system_prompt)
        ids += enc.input_ids
        labels += enc.labels
        pos += range(len(enc))
        lens.append(len(enc))
        pixels += frame_pixels(sample, enc)
        names.append(sample.id)
    real = len(ids)
    if real < length:
        ids += [pad_id] * (length - real)
        labels += [IGNORE] * (length - real)
        pos += range(length - real)
        lens.append(length - real)
    return Pack(torch.tensor(ids), torch.tensor(labels), torch.tensor(pos), lens, pixels, names, real)


class PackStream(torch.utils.data.IterableDataset):
    """The packs of one data stream; DataLoader workers split it further (round robin, in order).
    `start` packs of the stream are skipped without tokenising or decoding them."""

    def __init__(self, sources: Sequence[Source], cfg: DataConfig, tokenizer_spec: str, stream: int,
                 streams: int, start: int = 0, micro_batch: int = 1) -> None:
        self.sources, self.cfg, self.tokenizer_spec = list(sources), cfg, tokenizer_spec
        self.stream, self.streams, self.start, self.micro_batch = stream, streams, start, micro_batch

    def __iter__(self) -> Iterator[Pack]:
        from keye.tokenizer import load_tokenizer
        from trainer.template import special_id

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        part, parts = self.stream * workers + worker, self.streams * workers
        tokenizer = load_tokenizer(self.tokenizer_spec)
        pad_id = special_id(tokenizer, "<|endoftext|>")
        packer = Packer(self.cfg.pack_length, self.cfg.pack_buffer)
        # The DataLoader takes whole micro-batches from its workers in turn: batch j from worker j % workers.
        batches = self.start // self.micro_batch
        skip = (batches // workers + (1 if worker < batches % workers else 0)) * self.micro_batch
        for n, rows in enumerate(packer.packs(mixed_rows(self.sources, self.cfg, part, parts))):
            if n < skip:
                continue
            pack = build_pack(rows, self.sources, tokenizer, self.cfg.pack_length, pad_id)
            pack.too_long = packer.too_long
            yield pack


def collate(packs: list[Pack]) -> dict:
    return {"input_ids": torch.stack([p.input_ids for p in packs]),
            "labels": torch.stack([p.labels for p in packs]),
            "position_ids": torch.stack([p.position_ids for p in packs]),
            "seq_lens": [p.seq_lens for p in packs],
            "pixels": [px for p in packs for px in p.pixels],
            "real_tokens": sum(p.real_tokens for p in packs),
            "too_long": max(p.too_long for p in packs)}


def make_loader(sources: Sequence[Source], cfg: DataConfig, tokenizer_spec: str, stream: int, streams: int,
                micro_batch: int, start_packs: int = 0) -> torch.utils.data.DataLoader:
    if start_packs % micro_batch:
        raise ValueError(f"a stream position ({start_packs} packs) must be whole micro-batches of {micro_batch}")
    ds = PackStream(sources, cfg, tokenizer_spec, stream, streams, start_packs, micro_batch)
    return torch.utils.data.DataLoader(ds, batch_size=micro_batch, collate_fn=collate, num_workers=cfg.workers,
                                       persistent_workers=cfg.workers > 0,
                                       prefetch_factor=2 if cfg.workers > 0 else None)


def open_sources(specs: Sequence[tuple[str, float]]) -> list[Source]:
    if not specs:
        raise ValueError("no training data: pass --data OUT_DIR[:weight] or set data.inputs")
    return [Source(OutputFolder.open(path), weight) for path, weight in specs]


def parse_data_arg(text: str) -> tuple[str, float]:
    """`OUT_DIR` or `OUT_DIR:0.3` (a weight after the last colon, when it parses as a number)."""
    head, sep, tail = text.rpartition(":")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


def pack_efficiency(lengths: Sequence[int], cfg: DataConfig) -> float:
    """Non-padding tokens / pack tokens when `lengths` are packed as the trainer packs them."""
    packer = Packer(cfg.pack_length, cfg.pack_buffer)
    fake = [(0, Sample(id=f"{i:08d}", source="", source_ref="", task="text", messages=[], text_tokens=n))
            for i, n in enumerate(lengths)]
    bins = list(packer.packs(iter(fake)))
    used = sum(sample_length(s) for b in bins for _, s in b)
    return used / (len(bins) * cfg.pack_length) if bins else 0.0


def resolve_streams(cfg: DataConfig, world: int) -> int:
    streams = cfg.streams or world
    if streams % world:
        raise ValueError(f"data.streams ({streams}) must be a multiple of the number of ranks ({world})")
    return streams


def owned_streams(streams: int, rank: int, world: int) -> list[int]:
    return list(range(rank, streams, world))


def data_vocab(sources: Sequence[Source], tokenizer) -> list[int]:
    """Every token id the folders' rendered rows use, plus Keye's special tokens: the vocabulary
    of a tiny model with `model.vocab_subset` (reads every row's text once; small data only)."""
    from keye.chat import render_chat
    from keye.tokenizer import KEYE_SPECIAL_TOKENS

    ids = set(KEYE_SPECIAL_TOKENS.values())
    for src in sources:
        f = src.folder
        kind = f.stored_kind
        for shard in f.list(kind):
            data = read_verified(f.root, shard, verify=False)
            rows = parquet_rows(data, None, need_media=False) if kind == "parquet" else wds_rows(data)
            for s in rows:
                ids.update(tokenizer.encode(render_chat(s.messages, s.media, f.system_prompt, f.layout)))
    return sorted(ids)
