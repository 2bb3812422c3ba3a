"""The synthetic sample corpus: a small, deterministic input tree that every stage is tested on.

`generate(out_dir, seed, scale)` writes, relative to out_dir:

    manifests/                  the pipeline's input (--input out_dir/manifests); a folder input
                                names each row's source after its top-level entry (captions, shards...)
      captions.jsonl            image caption pairs {"id", "image", "caption"}
      videos.jsonl              video captions {"id", "video", "caption"} and video QA
                                {"id", "video", "question", "answer"[, "reasoning"]}
      qa.jsonl                  image QA {"id", "image", "question", "answer"}; cold-start rows add "reasoning"
      chat.jsonl                own layout {"messages": [...]}: multi-turn QA, interleaved images and
                                text, a cold-start turn; pure text rows {"text": ...}
      llava.json                LLaVA list {"id", "image"|"images", "conversations"} with <image> markers
      table.parquet             caption pairs in Parquet: embedded bytes {"image": {"bytes", "path"}}, or a
                                file path in the "images" list column (a Parquet column has one type)
      shards/00000.tar          img2dataset WebDataset: KEY.jpg, KEY.json (metadata), KEY.txt (caption)
      shards/00001.tar          the same, cut in the middle of a member
      broken.jsonl              one row per planted input defect
      broken.json               a LLaVA list cut off after a few good elements
    media/images/, media/videos/    files the manifests name (as ../media/... from manifests/)
      agentic.jsonl             hand-built think-with-image QA (synthetic/coldstart.py): a word in faint
                                letters ({"task": "ocr"}), scenes turned by 90/180/270 degrees
    benchmark/bench.jsonl, benchmark/media/   "synthbench": QA items for decontamination
    scenes.jsonl                one record per picture and clip (synthetic/coldstart.py): what the synthetic
                                reasoner (mixture/reasoner.py) knows about each picture
    truth.jsonl                 one line per input row the pipeline sees, sorted by (source, source_ref)

A truth line says what the row is and what must happen to it:

    source, source_ref, id      as the pipeline names the row (id = schemas.sample.sample_id)
    kind                        caption_image | caption_video | qa_image | qa_video | cold_start | chat |
                                interleaved | text, or broken when the row never becomes a Sample
    task                        the task validate gives the row; null for broken rows
    expect                      null if the current pipeline keeps the row, else {stage, reason, detected_by}
    future                      null, or what a later stage (decode, near_dedupe, semantic_dedupe,
                                decontaminate) will do to a row the current pipeline keeps
    caption_correct             for caption pairs: false where one fact was changed on purpose
    dup_group, dup_kept         exact-duplicate group; the member with the smallest id is kept
    near_dup_of, near_dup_kind, jaccard     near duplicates: source_ref of the original, text|image|video,
                                and for text the word 5-gram Jaccard (synthetic.language.jaccard)
    contaminated_by             {"benchmark": "synthbench", "item": "b003", "kind": "image"|"text"}
    media_defect, scene_cut     what is wrong with (or special about) the row's media
    media                       [{path (relative to out_dir; "#" marks a member of a container), kind,
                                width, height, fps, frames, duration_s}], null where unknown

Every count of ordinary rows is multiplied by `scale`; each planted defect appears once.
Each section draws from its own RNG, seeded from (seed, section name), so the bytes depend
only on (seed, scale) and the library versions, never on the clock or the file system.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.readers import folder_source
from schemas.sample import sample_id
from synthetic import coldstart
from synthetic import language as lang
from synthetic.scenes import (BACKGROUNDS, DIRECTIONS, Clip, Scene, draw, encode_clip, encode_image,
                              encode_tone_mp4, random_scene, reencode_mp4, rescale_jpeg)

BENCHMARK = "synthbench"
IMAGE_LEAK_ITEM, TEXT_LEAK_ITEM = "b003", "b006"
WRONG_CAPTION_RATE = 0.1
HUGE_CAPTION_BYTES = 10_000_000       # well over ingest.max_row_bytes (4 MiB)
VIDEO_SIZES = ((160, 120), (320, 240), (256, 144), (144, 256))
VIDEO_FPS = (15, 24, 25, 30)
CURRENT_DETECTOR = {"ingest": "ingest", "validate": "validate", "text": "text", "media": "media_fetch",
                    "exact_dedupe": "exact_dedupe"}
DECODE_REASON = {  # media_defect -> what the (future) decode stage rejects the row for
    "truncated": "truncated_media", "not_a_video": "not_a_video", "no_video_stream": "no_video_stream",
    "dark": "too_dark", "static": "static", "blurry": "blurry", "too_short": "too_short",
    "single_frame": "too_short",
}
# (stage, reason, detected_by) of later stages
NEAR_DUPLICATE = ("near_dedupe", "near_duplicate", "near_dedupe")
SEMANTIC_DUPLICATE = ("semantic_dedupe", "semantic_duplicate", "semantic_dedupe")
CONTAMINATED = ("decontaminate", "contaminated", "decontaminate")


def generate(out_dir: str, seed: int = 0, scale: int = 1, video_scale: Optional[int] = None) -> dict:
    """Write the corpus under out_dir (replacing a previous one there) and return summary counts.
    `video_scale` (default: scale) multiplies the motion clips alone (caption and QA videos): a
    video-heavy corpus for `trainer.evidence` without scaling every other section too."""
    tree = _Tree(out_dir, seed)
    bench = _benchmark(tree)
    captions, table_copy = _captions(tree, scale)
    tree.jsonl("captions.jsonl", captions)
    tree.parquet("table.parquet", _table(tree, scale, table_copy))
    _shards(tree, scale)
    tree.jsonl("qa.jsonl", _qa(tree, scale, bench))
    tree.jsonl("videos.jsonl", _videos(tree, scale if video_scale is None else video_scale))
    tree.json_array("llava.json", _llava(tree, scale))
    tree.jsonl("chat.jsonl", _chat(tree, scale))
    tree.jsonl("agentic.jsonl", _agentic(tree, scale))
    tree.jsonl("broken.jsonl", _broken_lines(tree))
    tree.json_array("broken.json", _broken_array(tree), cut_in_last=True)
    _resolve_exact_duplicates(tree.rows)
    rows = sorted(tree.rows, key=lambda r: (r.source, r.ref))
    tree.save("scenes.jsonl", b"".join(json.dumps(r, sort_keys=True).encode() + b"\n"
                                       for r in sorted(tree.scenes, key=lambda r: r["path"])))
    tree.save("truth.jsonl", b"".join(json.dumps(r.truth(), ensure_ascii=False).encode() + b"\n"
                                      for r in rows))
    return _summary(rows, tree, len(bench))


def corpus_recipe(cfg, root: str):
    """`cfg` (a schemas.config.Config) set to read the corpus at root: its manifests as the
    input, its media folder as an allowed media root (manifests name media as ../media/...,
    outside the input's own folder), and its benchmark, synthbench, when the recipe names none."""
    import dataclasses

    from schemas.config import BenchmarkConfig, InputConfig

    ingest = dataclasses.replace(cfg.ingest, media_roots=[*cfg.ingest.media_roots, corpus_media_root(root)])
    cfg = dataclasses.replace(cfg, ingest=ingest)
    if not cfg.decontaminate.benchmarks:
        bench = BenchmarkConfig(name="synthbench", path=os.path.join(root, "benchmark", "bench.jsonl"))
        cfg = dataclasses.replace(cfg, decontaminate=dataclasses.replace(cfg.decontaminate, benchmarks=[bench]))
    return cfg.with_inputs([InputConfig(path=os.path.join(root, "manifests"), source=None, format="auto")])


def corpus_media_root(root: str) -> str:
    """The corpus's media folder: what `ingest.media_roots` must allow for its manifests."""
    return os.path.join(root, "media")


# --- rows and the output tree ------------------------------------------------------------------
@dataclass
class Row:
    """One input row: the value written to its manifest, and what truth says about it."""

    payload: Any                       # JSON value; bytes: a raw JSONL line; None: written elsewhere (tar)
    kind: str
    task: Optional[str]
    expect: Optional[tuple[str, str]] = None        # (stage, reason) in the current pipeline
    future: Optional[tuple[str, str, str]] = None   # (stage, reason, detected_by) in a later stage
    caption_correct: Optional[bool] = None
    dup_group: Optional[str] = None
    dup_kept: Optional[bool] = None
    near_dup_of: Optional["Row"] = None
    near_dup_kind: Optional[str] = None
    jaccard: Optional[float] = None
    contaminated_by: Optional[dict] = None
    media_defect: Optional[str] = None
    scene_cut: bool = False
    media: list[dict] = field(default_factory=list)
    source: str = ""                   # set when the manifest is written
    ref: str = ""

    @property
    def id(self) -> str:
        return sample_id(self.source, self.ref)

    def truth(self) -> dict:
        def verdict(v: Optional[tuple]) -> Optional[dict]:
            if v is None:
                return None
            detected_by = v[2] if len(v) > 2 else CURRENT_DETECTOR[v[0]]
            return {"stage": v[0], "reason": v[1], "detected_by": detected_by}

        return {
            "source": self.source, "source_ref": self.ref, "id": self.id, "kind": self.kind,
            "task": self.task, "expect": verdict(self.expect), "future": verdict(self.future),
            "caption_correct": self.caption_correct, "dup_group": self.dup_group, "dup_kept": self.dup_kept,
            "near_dup_of": self.near_dup_of.ref if self.near_dup_of else None,
            "near_dup_kind": self.near_dup_kind, "jaccard": self.jaccard,
            "contaminated_by": self.contaminated_by, "media_defect": self.media_defect,
            "scene_cut": self.scene_cut, "media": self.media,
        }


def _media(path: Optional[str], kind: str, width=None, height=None, fps=None, frames=None, duration_s=None) -> dict:
    return {"path": path, "kind": kind, "width": width, "height": height, "fps": fps, "frames": frames,
            "duration_s": duration_s}


def _clip_media(path: str, clip: Clip) -> dict:
    return _media(path, "video", clip.scene.width, clip.scene.height, clip.fps, clip.frames, clip.duration_s)


class _Tree:
    """The output folder: writes files, and collects every manifest's rows with their refs."""

    OWNED = ("manifests", "media", "benchmark", "truth.jsonl", "scenes.jsonl")

    def __init__(self, root: str, seed: int) -> None:
        self.root, self.seed = root, seed
        self.rows: list[Row] = []
        self.scenes: list[dict] = []       # scenes.jsonl: what each picture and clip shows
        self.sizes: dict[str, int] = {}
        for entry in self.OWNED:
            path = os.path.join(root, entry)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)

    def rng(self, section: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(section.encode())])

    def save(self, rel: str, data: bytes) -> None:
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.sizes[rel] = len(data)

    def read(self, rel: str) -> bytes:
        with open(os.path.join(self.root, rel), "rb") as f:
            return f.read()

    def image(self, name: str, scene: Scene, fmt: str = "png") -> tuple[str, dict]:
        """Save a scene as media/images/NAME.FMT; (URI from manifests/, truth media entry)."""
        rel = f"media/images/{name}.{fmt}"
        self.save(rel, encode_image(draw(scene), fmt))
        self.scenes.append(coldstart.scene_record(rel, scene))
        return f"../{rel}", _media(rel, "image", scene.width, scene.height)

    def clip(self, name: str, clip: Clip) -> tuple[str, dict]:
        rel = f"media/videos/{name}.mp4"
        self.save(rel, encode_clip(clip))
        self.scenes.append(coldstart.scene_record(rel, clip.scene, clip))
        return f"../{rel}", _clip_media(rel, clip)

    def _register(self, relpath: str, rows: list[Row], refs: list[str]) -> None:
        for row, ref in zip(rows, refs):
            row.source, row.ref = folder_source(relpath), ref
        self.rows.extend(rows)

    def jsonl(self, relpath: str, rows: list[Row]) -> None:
        lines = [r.payload if isinstance(r.payload, bytes) else json.dumps(r.payload, ensure_ascii=False).encode()
                 for r in rows]
        self.save(f"manifests/{relpath}", b"".join(line + b"\n" for line in lines))
        self._register(relpath, rows, [f"{relpath}:{i}" for i in range(1, len(rows) + 1)])

    def json_array(self, relpath: str, rows: list[Row], cut_in_last: bool = False) -> None:
        """A JSON array, one element per row (LLaVA style). With cut_in_last the file ends in the
        middle of the last element; that row stands for "the rest of the file"."""
        elements = [json.dumps(r.payload, ensure_ascii=False, indent=2) for r in rows]
        text = "[\n" + ",\n".join(elements) + "\n]\n"
        if cut_in_last:
            text = text[:text.rindex(elements[-1]) + len(elements[-1]) // 2]
        self.save(f"manifests/{relpath}", text.encode())
        self._register(relpath, rows, [f"{relpath}:{i}" for i in range(len(rows))])

    def parquet(self, relpath: str, rows: list[Row]) -> None:
        schema = pa.schema([("id", pa.string()),
                            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                            ("images", pa.list_(pa.string())), ("caption", pa.string())])
        table = pa.Table.from_pylist([{k: r.payload.get(k) for k in schema.names} for r in rows], schema)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.save(f"manifests/{relpath}", buf.getvalue())
        self._register(relpath, rows, [f"{relpath}:{i}" for i in range(len(rows))])
        for i, r in enumerate(rows):   # embedded media live in the Parquet row itself
            for m in r.media:
                if m["path"] is None:
                    m["path"] = f"manifests/{relpath}#{i}"

    def tar(self, relpath: str, samples: list[tuple[str, dict[str, bytes]]], rows: list[Row],
            cut_in: Optional[str] = None) -> None:
        """A WebDataset tar of (key, {ext: bytes}) samples; with cut_in=MEMBER the archive ends
        in the middle of that member's data. rows[i] is the row of samples[i] (fewer rows
        than samples when the archive is cut: nothing after the cut is read)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                for ext in sorted(members):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mode, info.mtime = len(members[ext]), 0o644, 0
                    tar.addfile(info, io.BytesIO(members[ext]))
        data = buf.getvalue()
        if cut_in is not None:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.getmember(cut_in)
            data = data[:member.offset_data + member.size // 2]
        self.save(f"manifests/{relpath}", data)
        self._register(relpath, rows, [f"{relpath}#{key}" for key, _ in samples[:len(rows)]])


def _shuffled(rows: list[Row], rng: np.random.Generator) -> list[Row]:
    return [rows[i] for i in rng.permutation(len(rows))]


def _wrong_indices(n: int, rng: np.random.Generator) -> set[int]:
    return set(rng.choice(n, size=round(n * WRONG_CAPTION_RATE), replace=False).tolist())


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(64, 321)), int(rng.integers(64, 321))


def _caption_scene(rng: np.random.Generator, wrong: bool) -> tuple[Scene, str]:
    scene = random_scene(rng, *_image_size(rng), int(rng.integers(1, 5)))
    return scene, lang.wrong_caption(scene, rng) if wrong else lang.caption(scene)


def _decode_verdict(media_defect: str) -> tuple[str, str, str]:
    return "media", DECODE_REASON[media_defect], "decode"


# --- benchmark -----------------------------------------------------------------------------------
@dataclass
class BenchItem:
    id: str
    question: str
    answer: str
    media_kind: str          # image | video
    media: bytes
    scene: Optional[Scene]   # for image items: what the picture shows

    def line(self) -> dict:
        ext = "png" if self.media_kind == "image" else "mp4"
        return {"id": self.id, self.media_kind: f"media/{self.id}.{ext}", "question": self.question,
                "answer": self.answer}


def _benchmark(tree: _Tree) -> dict[str, BenchItem]:
    """synthbench: one image item per BENCH_QUESTIONS entry, one video item per video question."""
    rng = tree.rng("benchmark")
    items = []
    for question, answer_of in lang.BENCH_QUESTIONS:
        scene = random_scene(rng, int(rng.integers(160, 321)), int(rng.integers(160, 321)),
                             int(rng.integers(2, 5)))
        items.append(BenchItem(f"b{len(items):03d}", question, answer_of(scene), "image",
                               encode_image(draw(scene), "png"), scene))
    for (question, answer_of), (width, height) in zip(lang.BENCH_VIDEO_QUESTIONS, VIDEO_SIZES):
        clip = Clip(random_scene(rng, width, height, 1), (DIRECTIONS[int(rng.integers(4))],), fps=25, frames=50)
        items.append(BenchItem(f"b{len(items):03d}", question, answer_of(clip), "video", encode_clip(clip), None))
    for item in items:
        tree.save(f"benchmark/{item.line()[item.media_kind]}", item.media)
    tree.save("benchmark/bench.jsonl", b"".join(json.dumps(item.line()).encode() + b"\n" for item in items))
    return {item.id: item for item in items}


# --- image caption pairs -----------------------------------------------------------------------
def _captions(tree: _Tree, scale: int) -> tuple[list[Row], Row]:
    """captions.jsonl: caption pairs (about 10% wrong), an exact copy of one image under another
    name (exact duplicate), a smaller re-encoded JPEG of another (near duplicate). Also returns
    the row that table.parquet repeats (an exact duplicate across sources)."""
    rng = tree.rng("captions")
    n = 36 * scale
    wrong = _wrong_indices(n, rng)
    rows = []
    for i in range(n):
        scene, text = _caption_scene(rng, i in wrong)
        uri, media = tree.image(f"cap_{i:04d}", scene, "png" if rng.random() < 0.5 else "jpg")
        rows.append(Row({"id": f"cap_{i:04d}", "image": uri, "caption": text}, "caption_image", "caption",
                        caption_correct=i not in wrong, media=[media]))
    copied, shrunk, repeated = (rows[i] for i in rng.choice(sorted(set(range(n)) - wrong), 3, replace=False))

    src = copied.media[0]["path"]
    stem, ext = os.path.splitext(src)
    rel = f"{stem}_copy{ext}"
    tree.save(rel, tree.read(src))
    copied.dup_group = "g2"
    rows.append(Row(dict(copied.payload, id=copied.payload["id"] + "_copy", image=f"../{rel}"),
                    "caption_image", "caption", caption_correct=True, dup_group="g2",
                    media=[dict(copied.media[0], path=rel)]))

    data, w, h = rescale_jpeg(tree.read(shrunk.media[0]["path"]), 0.8, 60)
    rel = f"media/images/{shrunk.payload['id']}_small.jpg"
    tree.save(rel, data)
    rows.append(Row(dict(shrunk.payload, id=shrunk.payload["id"] + "_small", image=f"../{rel}"),
                    "caption_image", "caption", caption_correct=True, near_dup_of=shrunk,
                    near_dup_kind="image", future=SEMANTIC_DUPLICATE,
                    media=[_media(rel, "image", w, h)]))
    repeated.dup_group = "g1"
    return _shuffled(rows, rng), repeated


def _table(tree: _Tree, scale: int, repeated: Row) -> list[Row]:
    """table.parquet: caption pairs with embedded image bytes or a file path, plus the same
    row as one in captions.jsonl."""
    rng = tree.rng("table")
    n_embedded, n_path = 4 * scale, 3 * scale
    wrong = _wrong_indices(n_embedded + n_path, rng)
    rows = []
    for i in range(n_embedded + n_path):
        scene, text = _caption_scene(rng, i in wrong)
        row_id = f"tab_{i:04d}"
        if i < n_embedded:
            fmt = "png" if i % 2 else "jpg"
            image = {"bytes": encode_image(draw(scene), fmt), "path": f"{row_id}.{fmt}"}
            payload = {"id": row_id, "image": image, "caption": text}
            media = _media(None, "image", scene.width, scene.height)  # path set when written
        else:
            uri, media = tree.image(row_id, scene, "png")
            payload = {"id": row_id, "images": [uri], "caption": text}
        rows.append(Row(payload, "caption_image", "caption", caption_correct=i not in wrong, media=[media]))
    p = repeated.payload
    rows.append(Row({"id": p["id"], "images": [p["image"]], "caption": p["caption"]}, "caption_image",
                    "caption", caption_correct=True, dup_group="g1", media=[dict(repeated.media[0])]))
    return _shuffled(rows, rng)


def _shards(tree: _Tree, scale: int) -> None:
    """img2dataset shards: KEY = 5-digit shard number + 4-digit index. 00001.tar is cut in the
    middle of one sample's image; the samples before it are rows, the cut sample is one
    truncated_archive row, and the samples after it are never seen."""
    rng = tree.rng("shards")
    for shard_no, n, cut_at in ((0, 16 * scale, None), (1, 8 * scale, 5 * scale)):
        wrong = _wrong_indices(n if cut_at is None else cut_at, rng)
        relpath = f"shards/{shard_no:05d}.tar"
        samples, rows = [], []
        for i in range(n):
            key = f"{shard_no:05d}{i:04d}"
            scene, text = _caption_scene(rng, i in wrong)
            jpg = encode_image(draw(scene), "jpg")
            meta = {"url": f"https://shapes.example/{key}.jpg", "caption": text, "key": key,
                    "status": "success", "error_message": None, "width": scene.width, "height": scene.height,
                    "original_width": scene.width, "original_height": scene.height,
                    "sha256": hashlib.sha256(jpg).hexdigest()}
            samples.append((key, {"jpg": jpg, "json": json.dumps(meta).encode(), "txt": text.encode()}))
            if cut_at is None or i < cut_at:
                rows.append(Row(None, "caption_image", "caption", caption_correct=i not in wrong,
                                media=[_media(f"manifests/{relpath}#{key}.jpg", "image", scene.width,
                                              scene.height)]))
            elif i == cut_at:
                rows.append(Row(None, "broken", None, expect=("ingest", "truncated_archive")))
        tree.tar(relpath, samples, rows, cut_in=None if cut_at is None else f"{samples[cut_at][0]}.jpg")


# --- question answering --------------------------------------------------------------------------
def _qa(tree: _Tree, scale: int, bench: dict[str, BenchItem]) -> list[Row]:
    """qa.jsonl: image QA, cold-start QA with a reasoning trace, and two rows that leak the
    benchmark: one shows a benchmark image (resized, re-encoded), one asks a benchmark
    question word for word about another image."""
    rng = tree.rng("qa")
    n_plain, n_reasoning = 16 * scale, 8 * scale
    rows = []
    for i in range(n_plain + n_reasoning):
        scene = random_scene(rng, *_image_size(rng), int(rng.integers(1, 5)))
        question, answer, reasoning = lang.image_qa(scene, rng)
        uri, media = tree.image(f"qa_{i:04d}", scene, "png" if rng.random() < 0.5 else "jpg")
        payload = {"id": f"qa_{i:04d}", "image": uri, "question": question, "answer": answer}
        if i >= n_plain:
            rows.append(Row(dict(payload, reasoning=reasoning), "cold_start", "cold_start", media=[media]))
        else:
            rows.append(Row(payload, "qa_image", "vqa", media=[media]))

    leak = bench[IMAGE_LEAK_ITEM]
    data, w, h = rescale_jpeg(leak.media, 0.9, 85)
    rel = f"media/images/qa_leak_{leak.id}.jpg"
    tree.save(rel, data)
    question, answer, _ = lang.image_qa(leak.scene, rng)  # a training question; scaling keeps answers
    rows.append(Row({"id": "qa_leak_image", "image": f"../{rel}", "question": question, "answer": answer},
                    "qa_image", "vqa", media=[_media(rel, "image", w, h)],
                    contaminated_by={"benchmark": BENCHMARK, "item": leak.id, "kind": "image"},
                    future=CONTAMINATED))

    item = bench[TEXT_LEAK_ITEM]
    answer_of = dict(lang.BENCH_QUESTIONS)[item.question]
    scene = random_scene(rng, *_image_size(rng), int(rng.integers(2, 5)))
    uri, media = tree.image("qa_leak_text", scene, "png")
    rows.append(Row({"id": "qa_leak_text", "image": uri, "question": item.question,
                     "answer": answer_of(scene)}, "qa_image", "vqa", media=[media],
                    contaminated_by={"benchmark": BENCHMARK, "item": item.id, "kind": "text"},
                    future=CONTAMINATED))
    return _shuffled(rows, rng)


# --- videos --------------------------------------------------------------------------------------
def _motion_clip(rng: np.random.Generator, seconds: Optional[float] = None) -> Clip:
    """One or two shapes; the first moves along a random direction, a second one (if any)
    moves along the other axis or stays still."""
    width, height = VIDEO_SIZES[int(rng.integers(len(VIDEO_SIZES)))]
    fps = VIDEO_FPS[int(rng.integers(len(VIDEO_FPS)))]
    scene = random_scene(rng, width, height, int(rng.integers(1, 3)))
    first = DIRECTIONS[int(rng.integers(4))]
    other_axis = DIRECTIONS[2:] if first in DIRECTIONS[:2] else DIRECTIONS[:2]
    second = (other_axis + (None,))[int(rng.integers(3))]
    seconds = float(rng.uniform(1.5, 4.0)) if seconds is None else seconds
    return Clip(scene, (first, second)[:len(scene.shapes)], fps, max(1, round(seconds * fps)))


def _reversed_caption(clip: Clip) -> str:
    """The caption with the first shape's direction reversed: a wrong video caption."""
    start, end = clip.directions[0].split(" to ")
    return lang.motion_caption(Clip(clip.scene, (f"{end} to {start}",) + clip.directions[1:], clip.fps,
                                    clip.frames))


def _cut_clip(rng: np.random.Generator) -> Clip:
    """Halfway through, everything changes: background, shapes, colours, direction."""
    first = _motion_clip(rng, seconds=3.0)
    colours = {s.colour for s in first.scene.shapes}
    kinds = {s.kind for s in first.scene.shapes}
    backgrounds = [b for b in BACKGROUNDS if b != first.scene.background]
    while True:
        after = random_scene(rng, first.scene.width, first.scene.height, 1,
                             background=backgrounds[int(rng.integers(len(backgrounds)))])
        if after.shapes[0].colour not in colours and after.shapes[0].kind not in kinds:
            break
    direction = next(d for d in DIRECTIONS if d not in first.directions)
    return Clip(first.scene, first.directions, first.fps, first.frames,
                after_cut=Clip(after, (direction,), first.fps, first.frames))


def _videos(tree: _Tree, scale: int) -> list[Row]:
    """videos.jsonl: caption and QA rows over motion clips, a scene cut, the clips a decode
    stage must reject (static, dark, blurry, too short, one frame), and a re-encoded copy."""
    rng = tree.rng("videos")
    n_caption, n_qa = 8 * scale, 6 * scale
    wrong = _wrong_indices(n_caption, rng)
    rows = []
    for i in range(n_caption):
        clip = _motion_clip(rng)
        uri, media = tree.clip(f"vid_{i:04d}", clip)
        text = _reversed_caption(clip) if i in wrong else lang.motion_caption(clip)
        rows.append(Row({"id": f"vid_{i:04d}", "video": uri, "caption": text}, "caption_video", "video",
                        caption_correct=i not in wrong, media=[media]))
    for i in range(n_qa):
        clip = _motion_clip(rng)
        uri, media = tree.clip(f"vqa_{i:04d}", clip)
        question, answer, reasoning = lang.video_qa(clip)
        payload = {"id": f"vqa_{i:04d}", "video": uri, "question": question, "answer": answer}
        if i % 2:
            rows.append(Row(dict(payload, reasoning=reasoning), "cold_start", "cold_start", media=[media]))
        else:
            rows.append(Row(payload, "qa_video", "video", media=[media]))

    cut = _cut_clip(rng)
    uri, media = tree.clip("vid_scene_cut", cut)
    rows.append(Row({"id": "vid_scene_cut", "video": uri, "caption": f"{lang.motion_caption(cut)}, then the "
                     f"scene cuts to {lang.motion_caption(cut.after_cut)}"}, "caption_video", "video",
                    caption_correct=True, scene_cut=True, media=[media]))

    for defect, clip, text in _defect_clips(rng):
        uri, media = tree.clip(f"vid_{defect}", clip)
        rows.append(Row({"id": f"vid_{defect}", "video": uri, "caption": text}, "caption_video", "video",
                        caption_correct=True, media_defect=defect, future=_decode_verdict(defect), media=[media]))

    original = next(r for i, r in enumerate(rows[:n_caption]) if i not in wrong)
    src = original.media[0]
    width, height = round(src["width"] * 0.7 / 2) * 2, round(src["height"] * 0.7 / 2) * 2
    data, frames, fps = reencode_mp4(tree.read(src["path"]), width, height, qp=38)
    rel = f"media/videos/{original.payload['id']}_small.mp4"
    tree.save(rel, data)
    rows.append(Row(dict(original.payload, id=original.payload["id"] + "_small", video=f"../{rel}"),
                    "caption_video", "video", caption_correct=True, near_dup_of=original, near_dup_kind="video",
                    future=SEMANTIC_DUPLICATE,
                    media=[_media(rel, "video", width, height, fps, frames, round(frames / fps, 3))]))
    return _shuffled(rows, rng)


def _defect_clips(rng: np.random.Generator) -> list[tuple[str, Clip, str]]:
    """(media_defect, clip, caption) for the clips a decode stage must reject."""
    static = random_scene(rng, 160, 120, 2)
    dark = _motion_clip(rng)
    blurry = _motion_clip(rng)
    short = replace(_motion_clip(rng), fps=30, frames=9)   # 0.3 s
    single = random_scene(rng, 256, 144, 1)
    return [
        ("static", Clip(static, (None,) * len(static.shapes), fps=15, frames=30), lang.still_caption(static)),
        # a dark-gray scene at 4% brightness: mean pixel value about 3 of 255
        ("dark", replace(dark, scene=replace(dark.scene, background="dark gray", gradient=False), dim=0.04),
         f"in near darkness, {lang.motion_caption(dark)}"),
        ("blurry", replace(blurry, blur=0.15 * min(blurry.scene.width, blurry.scene.height)),
         f"out of focus, {lang.motion_caption(blurry)}"),
        ("too_short", short, lang.motion_caption(short)),
        ("single_frame", Clip(single, (None,), fps=25, frames=1), lang.still_caption(single)),
    ]


# --- LLaVA, chat and text --------------------------------------------------------------------
def _llava_qa(tree: _Tree, rng: np.random.Generator, name: str, multi_round: bool = False) -> Row:
    """A LLaVA row: one image and one question, or (multi_round) every kind of question the
    image answers, one round each."""
    scene = random_scene(rng, *_image_size(rng), int(rng.integers(1, 5)))
    uri, media = tree.image(name, scene, "jpg")
    qas = lang.image_qa_rounds(scene, rng) if multi_round else [lang.image_qa(scene, rng)]
    turns = []
    for k, (question, answer, _) in enumerate(qas):
        turns += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + question},
                  {"from": "gpt", "value": answer}]
    return Row({"id": name, "image": uri, "conversations": turns}, "qa_image", "vqa", media=[media])


def _scenes_with_one_most_crowded(rng: np.random.Generator, k: int = 2) -> list[Scene]:
    """k scenes with a unique largest shape count (so "which has more shapes" has one answer)."""
    while True:
        scenes = [random_scene(rng, int(rng.integers(160, 321)), int(rng.integers(160, 321)),
                               int(rng.integers(1, 5))) for _ in range(k)]
        counts = sorted(len(s.shapes) for s in scenes)
        if counts[-1] != counts[-2]:
            return scenes


def _llava(tree: _Tree, scale: int) -> list[Row]:
    """llava.json: single-image QA, two-image comparisons, and a multi-round conversation."""
    rng = tree.rng("llava")
    rows = [_llava_qa(tree, rng, f"llava_{i:04d}") for i in range(8 * scale)]
    for i in range(3 * scale):
        name = f"llava_pair_{i:04d}"
        scenes = _scenes_with_one_most_crowded(rng)
        uris, media = zip(*(tree.image(f"{name}_{j}", s, "png") for j, s in enumerate(scenes)))
        question, answer = lang.count_compare(*scenes)
        rows.append(Row({"id": name, "images": list(uris), "conversations": [
            {"from": "human", "value": f"<image>\n<image>\n{question}"}, {"from": "gpt", "value": answer}]},
            "qa_image", "vqa", media=list(media)))
    rows += [_llava_qa(tree, rng, f"llava_multi_{i:04d}", multi_round=True) for i in range(scale)]
    return _shuffled(rows, rng)


ORDINALS = ("first", "second", "third")


def _chat(tree: _Tree, scale: int) -> list[Row]:
    """chat.jsonl: multi-turn QA about one image, interleaved rows (images between text parts),
    a cold-start row, text paragraphs, near-duplicate paragraphs and an exact duplicate."""
    rng = tree.rng("chat")
    rows = []
    for i in range(5 * scale):
        scene = random_scene(rng, *_image_size(rng), int(rng.integers(2, 5)))
        uri, media = tree.image(f"chat_{i:04d}", scene, "png")
        messages = [{"role": "system", "content": "You answer questions about pictures of shapes."}] if i == 0 else []
        for turn, (question, answer, _) in enumerate(lang.image_qa_rounds(scene, rng)):
            content = [{"type": "image", "image": uri}, {"type": "text", "text": question}] if turn == 0 else question
            messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
        rows.append(Row({"id": f"chat_{i:04d}", "messages": messages}, "chat", "vqa", media=[media]))

    for i in range(4 * scale):
        name = f"inter_{i:04d}"
        scenes = _scenes_with_one_most_crowded(rng, k=2 + i % 2)
        content, media = [], []
        for j, scene in enumerate(scenes):
            uri, m = tree.image(f"{name}_{j}", scene, "jpg" if j % 2 else "png")
            content += [{"type": "text", "text": f"Here is the {ORDINALS[j]} picture."},
                        {"type": "image", "image": uri}]
            media.append(m)
        content.append({"type": "text", "text": "Which picture contains the most shapes?"})
        best = max(range(len(scenes)), key=lambda j: len(scenes[j].shapes))
        answer = f"The {ORDINALS[best]} picture: it shows {lang.listing([lang.name(s) for s in scenes[best].shapes])}."
        rows.append(Row({"id": name, "messages": [{"role": "user", "content": content},
                                                  {"role": "assistant", "content": answer}]},
                        "interleaved", "interleaved", media=media))

    for i in range(scale):
        scene = random_scene(rng, *_image_size(rng), int(rng.integers(2, 5)))
        uri, media = tree.image(f"chat_think_{i:04d}", scene, "png")
        question, answer, reasoning = lang.image_qa(scene, rng)
        rows.append(Row({"id": f"chat_think_{i:04d}", "messages": [
            {"role": "user", "content": [{"type": "image", "image": uri}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer, "reasoning": reasoning}]}, "cold_start", "cold_start",
            media=[media]))

    texts = [Row({"id": f"text_{i:04d}", "text": lang.paragraph(rng, 150 if i < 3 else 60, 200)}, "text", "text")
             for i in range(12 * scale)]
    for original, n_changes in zip(texts[:3], (1, 2, 4)):
        edited = lang.change_words(original.payload["text"], rng, n_changes)
        texts.append(Row({"id": original.payload["id"] + "_edit", "text": edited}, "text", "text",
                         near_dup_of=original, near_dup_kind="text",
                         jaccard=round(lang.jaccard(original.payload["text"], edited), 4),
                         future=NEAR_DUPLICATE))
    texts[5].dup_group = "g3"
    texts.append(Row(dict(texts[5].payload), "text", "text", dup_group="g3"))
    return _shuffled(rows + texts, rng)


# --- hand-built think-with-image tasks ---------------------------------------------------------------
def _agentic(tree: _Tree, scale: int) -> list[Row]:
    """agentic.jsonl: low-contrast OCR and rotated scenes (Keye-VL 4.5: they teach contrast and
    rotation code); the pictures are PNG, their records in scenes.jsonl say the word and the turn."""
    rng = tree.rng("agentic")
    rows = []
    for i in range(6 * scale):
        make = coldstart.low_contrast_ocr if i % 2 == 0 else coldstart.rotated_scene
        task = make(rng, f"agentic_{i:04d}")
        rel = f"media/images/{task.name}.png"
        tree.save(rel, encode_image(task.image, "png"))
        tree.scenes.append({**task.record, "path": rel})
        rows.append(Row({"id": task.name, "image": f"../{rel}", "question": task.question, "answer": task.answer,
                         "task": task.task}, "qa_image", task.task,
                        media=[_media(rel, "image", task.image.width, task.image.height)]))
    return rows


# --- broken inputs ------------------------------------------------------------------------------
def _broken_lines(tree: _Tree) -> list[Row]:
    """broken.jsonl: one row per input defect, in a fixed order. Rows that fail at ingest or
    validate are kind "broken"; the others are real rows whose text or media is wrong."""
    rng = tree.rng("broken")
    uri, media = tree.image("broken_0000", random_scene(rng, 96, 96, 1), "png")
    huge = b'{"id": "huge_caption", "image": "' + uri.encode() + b'", "caption": "' + \
        b"x" * HUGE_CAPTION_BYTES + b'"}'

    clip = _motion_clip(rng)
    whole = encode_clip(clip)
    tree.save("media/videos/truncated.mp4", whole[:len(whole) * 4 // 10])
    tree.save("media/videos/not_a_video.mp4", b"This is a plain text file that was renamed to .mp4.\n")
    tree.save("media/videos/audio_only.mp4", encode_tone_mp4(2.0, 440.0))
    tree.save("media/videos/empty.mp4", b"")

    def video(name: str, **known) -> dict:
        return _media(f"media/videos/{name}.mp4", "video", **known)

    def broken(payload, stage: str, reason: str) -> Row:
        return Row(payload, "broken", None, expect=(stage, reason))

    def kept_video(name: str, text: str, defect: str, **known) -> Row:
        return Row({"id": name, "video": f"../media/videos/{name}.mp4", "caption": text}, "caption_video",
                   "video", media_defect=defect, future=_decode_verdict(defect),
                   media=[video(name, **known)])

    return [
        broken(b'{"id": "bad_json", "caption": "an unterminated string}', "ingest", "malformed_json"),
        broken(b'{"id": "bad_utf8", "text": "caf\xff\xfe au lait"}', "ingest", "invalid_utf8"),
        broken(huge, "ingest", "row_too_large"),
        broken({"id": "messages_number", "messages": 5}, "validate", "wrong_type"),
        broken({"id": "caption_list", "image": uri, "caption": ["a", "list"]}, "validate", "wrong_type"),
        broken(["an", "array", "not", "an", "object"], "validate", "not_an_object"),
        broken({"id": "robot_role", "messages": [{"role": "robot", "content": "beep"},
                                                 {"role": "assistant", "content": "boop"}]},
               "validate", "unknown_role"),
        broken({"id": "marker_mismatch", "image": uri, "conversations": [
            {"from": "human", "value": "<image>\n<image>\nCompare the two pictures."},
            {"from": "gpt", "value": "They look the same."}]}, "validate", "media_marker_mismatch"),
        broken({"id": "remote_url", "image": "http://shapes.example/circle.png",
                "caption": "a red circle on a white background"}, "validate", "unsupported_uri"),
        Row({"id": "missing_file", "image": "../media/images/does_not_exist.png",
             "caption": "a green square on a cream background"}, "caption_image", "caption",
            expect=("media", "missing_media"), media_defect="missing",
            media=[_media("media/images/does_not_exist.png", "image")]),
        Row({"id": "empty_video", "video": "../media/videos/empty.mp4",
             "caption": "a blue triangle moves from top to bottom on a white background"}, "caption_video",
            "video", expect=("media", "empty_media"), media_defect="empty", media=[video("empty")]),
        Row({"id": "empty_caption", "image": uri, "caption": ""}, "caption_image", "caption",
            expect=("text", "empty_text"), media=[media]),
        Row({"id": "repetitive", "text": " ".join(["The same sentence is written here once again."] * 40)},
            "text", "text", expect=("text", "repetitive_text")),
        kept_video("truncated", lang.motion_caption(clip), "truncated"),
        kept_video("not_a_video", "a yellow circle moves from right to left on a pale blue background",
                   "not_a_video"),
        kept_video("audio_only", "a steady tone plays while nothing is shown", "no_video_stream"),
    ]


def _broken_array(tree: _Tree) -> list[Row]:
    """broken.json: three good LLaVA elements, then one cut off half-way; that last row is
    the rest of the file, rejected as malformed JSON."""
    rng = tree.rng("broken_json")
    rows = [_llava_qa(tree, rng, f"cut_{i:04d}") for i in range(3)]
    last = {"id": "cut_0003", "image": "../media/images/cut_0003.jpg", "conversations": [
        {"from": "human", "value": "<image>\nHow many shapes are in the image?"}, {"from": "gpt", "value": "2."}]}
    return rows + [Row(last, "broken", None, expect=("ingest", "malformed_json"))]


# --- duplicates and summary ----------------------------------------------------------------
def _resolve_exact_duplicates(rows: list[Row]) -> None:
    """In each exact-duplicate group the row with the smallest id is kept (filters.exact)."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.dup_group:
            groups[r.dup_group].append(r)
    for members in groups.values():
        kept = min(members, key=lambda r: r.id)
        for r in members:
            r.dup_kept = r is kept
            if r is not kept:
                r.expect = ("exact_dedupe", "exact_duplicate")


def _summary(rows: list[Row], tree: _Tree, bench_items: int) -> dict:
    def counts(values) -> dict:
        return dict(sorted(Counter(v for v in values if v is not None).items()))

    return {
        "rows": len(rows),
        "kept_now": sum(r.expect is None for r in rows),
        "kinds": counts(r.kind for r in rows),
        "tasks": counts(r.task for r in rows),
        "rejected_now": counts(f"{r.expect[0]}/{r.expect[1]}" for r in rows if r.expect),
        "rejected_later": counts(f"{r.future[0]}/{r.future[1]}" for r in rows if r.future),
        "media_defects": counts(r.media_defect for r in rows),
        "wrong_captions": sum(r.caption_correct is False for r in rows),
        "scene_cuts": sum(r.scene_cut for r in rows),
        "exact_duplicate_groups": len({r.dup_group for r in rows if r.dup_group}),
        "near_duplicates": counts(r.near_dup_kind for r in rows),
        "contaminated": counts(r.contaminated_by["kind"] for r in rows if r.contaminated_by),
        "benchmark_items": bench_items,
        "image_files": sum(rel.startswith("media/images/") for rel in tree.sizes),
        "video_files": sum(rel.startswith("media/videos/") for rel in tree.sizes),
        "files": len(tree.sizes),
        "bytes": sum(tree.sizes.values()),
    }
