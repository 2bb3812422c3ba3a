"""The corpus's output folder and its rows: `Tree` writes files and collects every manifest's rows;
`Row` is one input row with what truth.jsonl says about it. The constants every section shares
(planted-defect reasons, video sizes) live here too."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.readers import folder_source
from schemas.sample import sample_id
from synthetic import coldstart
from synthetic import language as lang
from synthetic.scenes import Clip, Scene, draw, encode_clip, encode_image, random_scene

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


def media_entry(path: Optional[str], kind: str, width=None, height=None, fps=None, frames=None, duration_s=None) -> dict:
    return {"path": path, "kind": kind, "width": width, "height": height, "fps": fps, "frames": frames,
            "duration_s": duration_s}


def clip_media(path: str, clip: Clip) -> dict:
    return media_entry(path, "video", clip.scene.width, clip.scene.height, clip.fps, clip.frames, clip.duration_s)


class Tree:
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
        return f"../{rel}", media_entry(rel, "image", scene.width, scene.height)

    def clip(self, name: str, clip: Clip) -> tuple[str, dict]:
        rel = f"media/videos/{name}.mp4"
        self.save(rel, encode_clip(clip))
        self.scenes.append(coldstart.scene_record(rel, clip.scene, clip))
        return f"../{rel}", clip_media(rel, clip)

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


def shuffled(rows: list[Row], rng: np.random.Generator) -> list[Row]:
    return [rows[i] for i in rng.permutation(len(rows))]


def wrong_indices(n: int, rng: np.random.Generator) -> set[int]:
    return set(rng.choice(n, size=round(n * WRONG_CAPTION_RATE), replace=False).tolist())


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(64, 321)), int(rng.integers(64, 321))


def caption_scene(rng: np.random.Generator, wrong: bool) -> tuple[Scene, str]:
    scene = random_scene(rng, *image_size(rng), int(rng.integers(1, 5)))
    return scene, lang.wrong_caption(scene, rng) if wrong else lang.caption(scene)


def decode_verdict(media_defect: str) -> tuple[str, str, str]:
    return "media", DECODE_REASON[media_defect], "decode"
