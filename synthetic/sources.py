"""The corpus's sections, one function per manifest (captions, table, shards, QA, videos, LLaVA,
chat, agentic, broken inputs) plus the benchmark; each draws from its own RNG (`Tree.rng(section)`),
so a section's bytes never depend on another's. `synthetic.corpus.generate` calls them in order."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from synthetic import coldstart
from synthetic import language as lang
from synthetic.scenes import (BACKGROUNDS, DIRECTIONS, Clip, Scene, draw, encode_clip, encode_image,
                              encode_tone_mp4, random_scene, reencode_mp4, rescale_jpeg)
from synthetic.tree import (BENCHMARK, CONTAMINATED, HUGE_CAPTION_BYTES, IMAGE_LEAK_ITEM, NEAR_DUPLICATE,
                            SEMANTIC_DUPLICATE, TEXT_LEAK_ITEM, VIDEO_FPS, VIDEO_SIZES, Row, Tree, caption_scene,
                            decode_verdict, image_size, media_entry, shuffled, wrong_indices)


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


def benchmark(tree: Tree) -> dict[str, BenchItem]:
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
def captions(tree: Tree, scale: int) -> tuple[list[Row], Row]:
    """captions.jsonl: caption pairs (about 10% wrong), an exact copy of one image under another
    name (exact duplicate), a smaller re-encoded JPEG of another (near duplicate). Also returns
    the row that table.parquet repeats (an exact duplicate across sources)."""
    rng = tree.rng("captions")
    n = 36 * scale
    wrong = wrong_indices(n, rng)
    rows = []
    for i in range(n):
        scene, text = caption_scene(rng, i in wrong)
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
                    media=[media_entry(rel, "image", w, h)]))
    repeated.dup_group = "g1"
    return shuffled(rows, rng), repeated


def table(tree: Tree, scale: int, repeated: Row) -> list[Row]:
    """table.parquet: caption pairs with embedded image bytes or a file path, plus the same
    row as one in captions.jsonl."""
    rng = tree.rng("table")
    n_embedded, n_path = 4 * scale, 3 * scale
    wrong = wrong_indices(n_embedded + n_path, rng)
    rows = []
    for i in range(n_embedded + n_path):
        scene, text = caption_scene(rng, i in wrong)
        row_id = f"tab_{i:04d}"
        if i < n_embedded:
            fmt = "png" if i % 2 else "jpg"
            image = {"bytes": encode_image(draw(scene), fmt), "path": f"{row_id}.{fmt}"}
            payload = {"id": row_id, "image": image, "caption": text}
            media = media_entry(None, "image", scene.width, scene.height)  # path set when written
        else:
            uri, media = tree.image(row_id, scene, "png")
            payload = {"id": row_id, "images": [uri], "caption": text}
        rows.append(Row(payload, "caption_image", "caption", caption_correct=i not in wrong, media=[media]))
    p = repeated.payload
    rows.append(Row({"id": p["id"], "images": [p["image"]], "caption": p["caption"]}, "caption_image",
                    "caption", caption_correct=True, dup_group="g1", media=[dict(repeated.media[0])]))
    return shuffled(rows, rng)


def shards(tree: Tree, scale: int) -> None:
    """img2dataset shards: KEY = 5-digit shard number + 4-digit index. 00001.tar is cut in the
    middle of one sample's image; the samples before it are rows, the cut sample is one
    truncated_archive row, and the samples after it are never seen."""
    rng = tree.rng("shards")
    for shard_no, n, cut_at in ((0, 16 * scale, None), (1, 8 * scale, 5 * scale)):
        wrong = wrong_indices(n if cut_at is None else cut_at, rng)
        relpath = f"shards/{shard_no:05d}.tar"
        samples, rows = [], []
        for i in range(n):
            key = f"{shard_no:05d}{i:04d}"
            scene, text = caption_scene(rng, i in wrong)
            jpg = encode_image(draw(scene), "jpg")
            meta = {"url": f"https://shapes.example/{key}.jpg", "caption": text, "key": key,
                    "status": "success", "error_message": None, "width": scene.width, "height": scene.height,
                    "original_width": scene.width, "original_height": scene.height,
                    "sha256": hashlib.sha256(jpg).hexdigest()}
            samples.append((key, {"jpg": jpg, "json": json.dumps(meta).encode(), "txt": text.encode()}))
            if cut_at is None or i < cut_at:
                rows.append(Row(None, "caption_image", "caption", caption_correct=i not in wrong,
                                media=[media_entry(f"manifests/{relpath}#{key}.jpg", "image", scene.width,
                                              scene.height)]))
            elif i == cut_at:
                rows.append(Row(None, "broken", None, expect=("ingest", "truncated_archive")))
        tree.tar(relpath, samples, rows, cut_in=None if cut_at is None else f"{samples[cut_at][0]}.jpg")


# --- question answering --------------------------------------------------------------------------
def qa(tree: Tree, scale: int, bench: dict[str, BenchItem]) -> list[Row]:
    """qa.jsonl: image QA, cold-start QA with a reasoning trace, and two rows that leak the
    benchmark: one shows a benchmark image (resized, re-encoded), one asks a benchmark
    question word for word about another image."""
    rng = tree.rng("qa")
    n_plain, n_reasoning = 16 * scale, 8 * scale
    rows = []
    for i in range(n_plain + n_reasoning):
        scene = random_scene(rng, *image_size(rng), int(rng.integers(1, 5)))
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
                    "qa_image", "vqa", media=[media_entry(rel, "image", w, h)],
                    contaminated_by={"benchmark": BENCHMARK, "item": leak.id, "kind": "image"},
                    future=CONTAMINATED))

    item = bench[TEXT_LEAK_ITEM]
    answer_of = dict(lang.BENCH_QUESTIONS)[item.question]
    scene = random_scene(rng, *image_size(rng), int(rng.integers(2, 5)))
    uri, media = tree.image("qa_leak_text", scene, "png")
    rows.append(Row({"id": "qa_leak_text", "image": uri, "question": item.question,
                     "answer": answer_of(scene)}, "qa_image", "vqa", media=[media],
                    contaminated_by={"benchmark": BENCHMARK, "item": item.id, "kind": "text"},
                    future=CONTAMINATED))
    return shuffled(rows, rng)


# --- videos --------------------------------------------------------------------------------------
def motion_clip(rng: np.random.Generator, seconds: Optional[float] = None, shapes: Optional[int] = None) -> Clip:
    """One or two shapes (or `shapes`); the first moves along a random direction, a second one
    (if any) moves along the other axis or stays still."""
    width, height = VIDEO_SIZES[int(rng.integers(len(VIDEO_SIZES)))]
    fps = VIDEO_FPS[int(rng.integers(len(VIDEO_FPS)))]
    scene = random_scene(rng, width, height, int(rng.integers(1, 3)) if shapes is None else shapes)
    first = DIRECTIONS[int(rng.integers(4))]
    other_axis = DIRECTIONS[2:] if first in DIRECTIONS[:2] else DIRECTIONS[:2]
    second = (other_axis + (None,))[int(rng.integers(3))]
    seconds = float(rng.uniform(1.5, 4.0)) if seconds is None else seconds
    return Clip(scene, (first, second)[:len(scene.shapes)], fps, max(1, round(seconds * fps)))


def reversed_caption(clip: Clip) -> str:
    """The caption with the first shape's direction reversed: a wrong video caption."""
    start, end = clip.directions[0].split(" to ")
    return lang.motion_caption(Clip(clip.scene, (f"{end} to {start}",) + clip.directions[1:], clip.fps,
                                    clip.frames))


def cut_clip(rng: np.random.Generator) -> Clip:
    """Halfway through, everything changes: background, shapes, colours, direction."""
    first = motion_clip(rng, seconds=3.0)
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


def videos(tree: Tree, scale: int) -> list[Row]:
    """videos.jsonl: caption and QA rows over motion clips, a scene cut, the clips a decode
    stage must reject (static, dark, blurry, too short, one frame), and a re-encoded copy."""
    rng = tree.rng("videos")
    n_caption, n_qa = 8 * scale, 6 * scale
    wrong = wrong_indices(n_caption, rng)
    rows = []
    for i in range(n_caption):
        clip = motion_clip(rng)
        uri, media = tree.clip(f"vid_{i:04d}", clip)
        text = reversed_caption(clip) if i in wrong else lang.motion_caption(clip)
        rows.append(Row({"id": f"vid_{i:04d}", "video": uri, "caption": text}, "caption_video", "video",
                        caption_correct=i not in wrong, media=[media]))
    for i in range(n_qa):
        clip = motion_clip(rng)
        uri, media = tree.clip(f"vqa_{i:04d}", clip)
        question, answer, reasoning = lang.video_qa(clip)
        payload = {"id": f"vqa_{i:04d}", "video": uri, "question": question, "answer": answer}
        if i % 2:
            rows.append(Row(dict(payload, reasoning=reasoning), "cold_start", "cold_start", media=[media]))
        else:
            rows.append(Row(payload, "qa_video", "video", media=[media]))

    cut = cut_clip(rng)
    uri, media = tree.clip("vid_scene_cut", cut)
    rows.append(Row({"id": "vid_scene_cut", "video": uri, "caption": f"{lang.motion_caption(cut)}, then the "
                     f"scene cuts to {lang.motion_caption(cut.after_cut)}"}, "caption_video", "video",
                    caption_correct=True, scene_cut=True, media=[media]))

    for defect, clip, text in defect_clips(rng):
        uri, media = tree.clip(f"vid_{defect}", clip)
        rows.append(Row({"id": f"vid_{defect}", "video": uri, "caption": text}, "caption_video", "video",
                        caption_correct=True, media_defect=defect, future=decode_verdict(defect), media=[media]))

    original = next(r for i, r in enumerate(rows[:n_caption]) if i not in wrong)
    src = original.media[0]
    width, height = round(src["width"] * 0.7 / 2) * 2, round(src["height"] * 0.7 / 2) * 2
    data, frames, fps = reencode_mp4(tree.read(src["path"]), width, height, qp=38)
    rel = f"media/videos/{original.payload['id']}_small.mp4"
    tree.save(rel, data)
    rows.append(Row(dict(original.payload, id=original.payload["id"] + "_small", video=f"../{rel}"),
                    "caption_video", "video", caption_correct=True, near_dup_of=original, near_dup_kind="video",
                    future=SEMANTIC_DUPLICATE,
                    media=[media_entry(rel, "video", width, height, fps, frames, round(frames / fps, 3))]))
    return shuffled(rows, rng)


def primer_videos(tree: Tree, clips: int) -> list[Row]:
    """primer.jsonl: `clips` correctly captioned 2-second clips of ONE moving shape. The easy end of a
    curriculum: trainer.evidence trains on them before the corpus, whose clips (two shapes, 1.5-4 s,
    10% wrong captions) keep the tiny model's direction word at chance from scratch (README, "Evidence")."""
    rng = tree.rng("primer")
    rows = []
    for i in range(clips):
        clip = motion_clip(rng, seconds=2.0, shapes=1)
        uri, media = tree.clip(f"primer_{i:05d}", clip)
        rows.append(Row({"id": f"primer_{i:05d}", "video": uri, "caption": lang.motion_caption(clip)},
                        "caption_video", "video", caption_correct=True, media=[media]))
    return rows


def defect_clips(rng: np.random.Generator) -> list[tuple[str, Clip, str]]:
    """(media_defect, clip, caption) for the clips a decode stage must reject."""
    static = random_scene(rng, 160, 120, 2)
    dark = motion_clip(rng)
    blurry = motion_clip(rng)
    short = replace(motion_clip(rng), fps=30, frames=9)   # 0.3 s
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
def llava_qa(tree: Tree, rng: np.random.Generator, name: str, multi_round: bool = False) -> Row:
    """A LLaVA row: one image and one question, or (multi_round) every kind of question the
    image answers, one round each."""
    scene = random_scene(rng, *image_size(rng), int(rng.integers(1, 5)))
    uri, media = tree.image(name, scene, "jpg")
    qas = lang.image_qa_rounds(scene, rng) if multi_round else [lang.image_qa(scene, rng)]
    turns = []
    for k, (question, answer, _) in enumerate(qas):
        turns += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + question},
                  {"from": "gpt", "value": answer}]
    return Row({"id": name, "image": uri, "conversations": turns}, "qa_image", "vqa", media=[media])


def scenes_with_one_most_crowded(rng: np.random.Generator, k: int = 2) -> list[Scene]:
    """k scenes with a unique largest shape count (so "which has more shapes" has one answer)."""
    while True:
        scenes = [random_scene(rng, int(rng.integers(160, 321)), int(rng.integers(160, 321)),
                               int(rng.integers(1, 5))) for _ in range(k)]
        counts = sorted(len(s.shapes) for s in scenes)
        if counts[-1] != counts[-2]:
            return scenes


def llava(tree: Tree, scale: int) -> list[Row]:
    """llava.json: single-image QA, two-image comparisons, and a multi-round conversation."""
    rng = tree.rng("llava")
    rows = [llava_qa(tree, rng, f"llava_{i:04d}") for i in range(8 * scale)]
    for i in range(3 * scale):
        name = f"llava_pair_{i:04d}"
        scenes = scenes_with_one_most_crowded(rng)
        uris, media = zip(*(tree.image(f"{name}_{j}", s, "png") for j, s in enumerate(scenes)))
        question, answer = lang.count_compare(*scenes)
        rows.append(Row({"id": name, "images": list(uris), "conversations": [
            {"from": "human", "value": f"<image>\n<image>\n{question}"}, {"from": "gpt", "value": answer}]},
            "qa_image", "vqa", media=list(media)))
    rows += [llava_qa(tree, rng, f"llava_multi_{i:04d}", multi_round=True) for i in range(scale)]
    return shuffled(rows, rng)


ORDINALS = ("first", "second", "third")


def chat(tree: Tree, scale: int) -> list[Row]:
    """chat.jsonl: multi-turn QA about one image, interleaved rows (images between text parts),
    a cold-start row, text paragraphs, near-duplicate paragraphs and an exact duplicate."""
    rng = tree.rng("chat")
    rows = []
    for i in range(5 * scale):
        scene = random_scene(rng, *image_size(rng), int(rng.integers(2, 5)))
        uri, media = tree.image(f"chat_{i:04d}", scene, "png")
        messages = [{"role": "system", "content": "You answer questions about pictures of shapes."}] if i == 0 else []
        for turn, (question, answer, _) in enumerate(lang.image_qa_rounds(scene, rng)):
            content = [{"type": "image", "image": uri}, {"type": "text", "text": question}] if turn == 0 else question
            messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
        rows.append(Row({"id": f"chat_{i:04d}", "messages": messages}, "chat", "vqa", media=[media]))

    for i in range(4 * scale):
        name = f"inter_{i:04d}"
        scenes = scenes_with_one_most_crowded(rng, k=2 + i % 2)
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
        scene = random_scene(rng, *image_size(rng), int(rng.integers(2, 5)))
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
    return shuffled(rows + texts, rng)


# --- hand-built think-with-image tasks ---------------------------------------------------------------
def agentic(tree: Tree, scale: int) -> list[Row]:
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
                        media=[media_entry(rel, "image", task.image.width, task.image.height)]))
    return rows


# --- broken inputs ------------------------------------------------------------------------------
def broken_lines(tree: Tree) -> list[Row]:
    """broken.jsonl: one row per input defect, in a fixed order. Rows that fail at ingest or
    validate are kind "broken"; the others are real rows whose text or media is wrong."""
    rng = tree.rng("broken")
    uri, media = tree.image("broken_0000", random_scene(rng, 96, 96, 1), "png")
    huge = b'{"id": "huge_caption", "image": "' + uri.encode() + b'", "caption": "' + \
        b"x" * HUGE_CAPTION_BYTES + b'"}'

    clip = motion_clip(rng)
    whole = encode_clip(clip)
    tree.save("media/videos/truncated.mp4", whole[:len(whole) * 4 // 10])
    tree.save("media/videos/not_a_video.mp4", b"This is a plain text file that was renamed to .mp4.\n")
    tree.save("media/videos/audio_only.mp4", encode_tone_mp4(2.0, 440.0))
    tree.save("media/videos/empty.mp4", b"")

    def video(name: str, **known) -> dict:
        return media_entry(f"media/videos/{name}.mp4", "video", **known)

    def broken(payload, stage: str, reason: str) -> Row:
        return Row(payload, "broken", None, expect=(stage, reason))

    def kept_video(name: str, text: str, defect: str, **known) -> Row:
        return Row({"id": name, "video": f"../media/videos/{name}.mp4", "caption": text}, "caption_video",
                   "video", media_defect=defect, future=decode_verdict(defect),
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
            media=[media_entry("media/images/does_not_exist.png", "image")]),
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


def broken_array(tree: Tree) -> list[Row]:
    """broken.json: three good LLaVA elements, then one cut off half-way; that last row is
    the rest of the file, rejected as malformed JSON."""
    rng = tree.rng("broken_json")
    rows = [llava_qa(tree, rng, f"cut_{i:04d}") for i in range(3)]
    last = {"id": "cut_0003", "image": "../media/images/cut_0003.jpg", "conversations": [
        {"from": "human", "value": "<image>\nHow many shapes are in the image?"}, {"from": "gpt", "value": "2."}]}
    return rows + [Row(last, "broken", None, expect=("ingest", "malformed_json"))]
