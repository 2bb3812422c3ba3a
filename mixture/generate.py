"""Generation for the mode builders: versioned prompts, the generator client, what a row shows it.

    Generator.run([Call, ...]) ──▶ captioners.backends client (OpenAI-compatible HTTP: concurrency,
                                    retries, request budget; or in-process transformers)
                               ◀── [Generated(text | error, record), ...] in order, never raising

Every call carries its prompt id (`mixture/prompts/<id>.txt`, pinned in SHA256SUMS like the
caption prompts), and every result carries a `GenerationRecord` (backend, model, prompt id,
temperature, max tokens, seed, path index, target) that the builder puts in the row's
provenance for each generated text it keeps. Seeds are a hash of (generator.seed, row id, prompt
id, path index): the same row asks the same questions on any worker, and a server that honours
seeds (vLLM, SGLang, the synthetic reasoner) answers the same.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence

from captioners.backends import CaptionRequest, make_text_backend
from captioners.prompts import Prompt, load_prompt
from schemas.config import GeneratorConfig
from schemas.sample import GenerationRecord, Sample

PROMPT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")
PLACEHOLDERS = frozenset({"question", "num_frames", "mode", "image_name", "code", "reference", "candidate"})


def prompt(prompt_id: str) -> Prompt:
    return load_prompt(prompt_id, PROMPT_DIR, PLACEHOLDERS)


@dataclass
class Call:
    key: str                          # the row id (seeds and logs)
    prompt_id: str
    values: dict                      # placeholder values
    images: list[bytes] = field(default_factory=list)   # JPEG or PNG: one image, or a video's frames
    path_index: int = 0
    target: str = "reasoning"


@dataclass
class Generated:
    text: Optional[str]
    error: Optional[str]
    record: GenerationRecord
    budget_exhausted: bool = False

    @property
    def ok(self) -> bool:
        return self.text is not None


def request_seed(base: int, key: str, prompt_id: str, path_index: int) -> int:
    digest = hashlib.sha256(f"{base}\x1f{key}\x1f{prompt_id}\x1f{path_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class Generator:
    """One per worker process (pipelines share it between threads like the recaption backend)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.backend = make_text_backend(cfg.backend, cfg.openai, cfg.transformers, max_new_tokens=cfg.max_new_tokens,
                                         temperature=cfg.temperature, model_id=cfg.generator_id)
        self.model_id = self.backend.captioner_id

    def setup(self) -> None:
        self.backend.setup()

    def close(self) -> None:
        self.backend.close()

    def record(self, call: Call, seed: int) -> GenerationRecord:
        return GenerationRecord(backend=self.cfg.backend, model=self.model_id, prompt_id=call.prompt_id,
                                temperature=self.cfg.temperature, max_new_tokens=self.cfg.max_new_tokens,
                                seed=seed, path_index=call.path_index, target=call.target)

    def run(self, calls: Sequence[Call]) -> list[Generated]:
        requests, records = [], []
        for c in calls:
            seed = request_seed(self.cfg.seed, c.key, c.prompt_id, c.path_index)
            text = prompt(c.prompt_id).render(**c.values)
            requests.append(CaptionRequest(key=f"{c.key}#{c.prompt_id}#{c.path_index}", prompt_id=c.prompt_id,
                                           prompt=text, images=[as_jpeg(b) for b in c.images], seed=seed))
            records.append(self.record(c, seed))
        results = self.backend.caption(requests) if requests else []
        return [Generated(r.text, r.error, rec, r.budget_exhausted) for r, rec in zip(results, records)]


_SHARED: dict[GeneratorConfig, Generator] = {}
_SHARED_LOCK = threading.Lock()


def shared_generator(cfg: GeneratorConfig) -> Generator:
    """One generator client per worker process and config, shared by every builder and thread there,
    so `concurrency` and `request_budget` hold per process (as the recaption stage's backend does)."""
    with _SHARED_LOCK:
        if cfg not in _SHARED:
            _SHARED[cfg] = Generator(cfg)
        return _SHARED[cfg]


# --- what a row shows the generator -----------------------------------------------------------
class MediaUnavailable(ValueError):
    """The row's pictures cannot be read (no decoded members and no readable source)."""


def as_jpeg(data: bytes, quality: int = 92) -> bytes:
    """JPEG bytes as the chat protocol's data URLs declare them (PNG and others are re-encoded)."""
    if data[:3] == b"\xff\xd8\xff":
        return data
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def as_png(data: bytes) -> bytes:
    """Lossless bytes for the sandbox's input image."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def pictures(sample: Sample, index: int, max_frames: int = 8, max_bytes: int = 1 << 28) -> list[bytes]:
    """The item's image (one) or up to max_frames of its sampled frames (evenly thinned), as encoded
    image bytes: the members the media stage stored, else the source bytes read from `uri`."""
    from media.frames import UndecodedVideo, frame_count, item_frames

    item = sample.media[index]
    if item.kind == "image":
        for name in item.members:
            if name in sample.blobs:
                return [sample.blobs[name]]
        from media.fetch import read_media

        data = read_media(item.location or item.uri, max_bytes, shown=item.uri)   # location: in flight, absolute
        if isinstance(data, tuple):
            raise MediaUnavailable(f"media[{index}] {item.uri}: {data[0].value}: {data[1]}")
        return [data]
    if not item.members or any(n not in sample.blobs for n in item.members):
        raise MediaUnavailable(f"media[{index}]: the video's frames are not in the row (run the media stage)")
    n = frame_count(item)
    picked = sorted({round(i * (n - 1) / max(1, max_frames - 1)) for i in range(min(n, max_frames))}) if n else []
    if item.members[0] in sample.blobs and len(item.members) == n and item.members[0].endswith((".jpg", ".png")):
        return [sample.blobs[item.members[i]] for i in picked]
    try:
        frames = item_frames(sample, index, picked)
    except (UndecodedVideo, ValueError, OSError) as e:
        raise MediaUnavailable(f"media[{index}]: {e}") from None
    from PIL import Image

    out = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# --- reading what came back --------------------------------------------------------------------
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)
_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


@dataclass(frozen=True)
class Parsed:
    reasoning: str
    answer: str


def parse_reasoning(text: str) -> Parsed:
    """(reasoning, answer) of a generation in the think format, tolerating a missing </think> or
    answer tags (then the text after </think>, or an "Answer:" line, is the answer)."""
    from mixture.verify import extract_answer

    think = _THINK.search(text)
    reasoning = think.group(1).strip() if think else text.split("<answer>")[0].strip()
    answer = _ANSWER.search(text)
    if answer:
        ans = answer.group(1).strip()
    else:
        ans = extract_answer(text.split("</think>")[-1]) if "</think>" in text else extract_answer(text)
        if ans == text.strip():
            ans = ""
    return Parsed(reasoning, ans)


_FORMAT_TAG = re.compile(r"</?(?:think|answer|analysis|sandbox_output)>")


def parse_code(text: str) -> Optional[tuple[str, str]]:
    """(reasoning before the code, the code) of an image-code generation; None without a code block.
    Format tags the model wrote around its reasoning are dropped: the builder writes the format."""
    m = _CODE.search(text)
    if not m or not m.group(1).strip():
        return None
    return _FORMAT_TAG.sub("", text[:m.start()]).strip(), m.group(1).strip()
