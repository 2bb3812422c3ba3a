"""What the cold-start mixture needs from the synthetic corpus: scene records, the hand-built
think-with-image tasks, and a solver that answers the corpus's questions from its scenes.

- **Scene records** (`scenes.jsonl`): one line per picture or clip the corpus writes: its path,
  kind, `Scene` (and the clip's motions), and for the hand-built tasks the word written on it and
  how the picture was degraded. `render(record)` draws the picture again from the record alone:
  the synthetic reasoner (mixture/reasoner.py) recognises the pictures it is sent by comparing
  them with these renderings.
- **Hand-built tasks** (Keye-VL 4.5: they teach contrast and rotation code rather than cropping):
  a word printed in faint, low-contrast letters ("What word is written in the image?"), and
  scenes turned by 90, 180 or 270 degrees ("The picture is rotated. ... ?" about the upright scene).
- **`solve(record, question)`**: the answer and the reasoning steps, for every question template
  of synthetic/language.py and the hand-built ones, computed from the record; None for a
  question it does not know (benchmark questions).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthetic.language import NUMBER_WORDS, background_phrase, name, with_article
from synthetic.scenes import BACKGROUNDS, Clip, Scene, Shape, clip_frames, draw, random_scene

WORDS = ("MAPLE", "RIVER", "STONE", "CLOUD", "AMBER", "TIGER", "LEMON", "PIANO", "OCEAN", "ROBIN", "CEDAR", "FLAME")
ROTATIONS = (90, 180, 270)            # degrees counter-clockwise, as PIL's Image.rotate turns
OCR_QUESTION = "What word is written in the image?"
ROTATED_PREFIX = "The picture is rotated. "


# --- records --------------------------------------------------------------------------------------
def scene_record(path: str, scene: Scene, clip: Optional[Clip] = None, **extra) -> dict:
    rec = {"path": path, "kind": "video" if clip is not None else "image", "scene": asdict(scene)}
    if clip is not None:
        rec["clip"] = {"directions": list(clip.directions), "fps": clip.fps, "frames": clip.frames,
                       "dim": clip.dim, "blur": clip.blur, "cut": clip.after_cut is not None}
    rec.update(extra)
    return rec


def scene_of(rec: dict) -> Scene:
    d = rec["scene"]
    return Scene(d["width"], d["height"], d["background"], d["gradient"], tuple(Shape(**s) for s in d["shapes"]))


def render(rec: dict) -> Image.Image:
    """The record's picture (a clip's first frame), drawn again from the record."""
    scene = scene_of(rec)
    if rec["kind"] == "video":
        c = rec["clip"]
        clip = Clip(scene, tuple(c["directions"]), c["fps"], max(1, c["frames"]), dim=c["dim"], blur=c["blur"])
        return Image.fromarray(next(clip_frames(clip)))
    img = draw(scene)
    if rec.get("text"):
        img = faint_text(img, rec["text"], rec["text_box"], rec["contrast"])
    if rec.get("rotation"):
        img = img.rotate(rec["rotation"], expand=True)
    return img


def faint_text(img: Image.Image, text: str, box: list[int], contrast: int) -> Image.Image:
    """The word in letters `contrast` grey levels darker than the background under them."""
    img = img.copy()
    x, y, size = box
    region = np.asarray(img)[y:y + size, x:x + size * len(text)]
    base = tuple(int(v) for v in region.reshape(-1, 3).mean(0)) if region.size else (128, 128, 128)
    ink = tuple(max(0, v - contrast) for v in base)
    ImageDraw.Draw(img).text((x, y), text, fill=ink, font=ImageFont.load_default(size=size))
    return img


# --- hand-built tasks ---------------------------------------------------------------------------------
@dataclass
class Task:
    name: str
    image: Image.Image
    question: str
    answer: str
    record: dict                # without "path" (the corpus adds it)
    task: str                   # ocr | vqa


def low_contrast_ocr(rng: np.random.Generator, name_: str) -> Task:
    """A plain-background scene with two shapes and a word in faint letters along its free band."""
    w, h = int(rng.integers(360, 480)), int(rng.integers(240, 320))
    background = [b for b in BACKGROUNDS if b != "dark gray"][int(rng.integers(4))]
    scene = random_scene(rng, w, h // 2, 2, background=background)
    scene = Scene(w, h, background, False, scene.shapes)       # shapes in the top half, the word below
    word = WORDS[int(rng.integers(len(WORDS)))]
    size = 40
    box = [int(rng.integers(10, max(11, w - size * len(word) * 2 // 3 - 10))), h // 2 + 20, size]
    contrast = int(rng.integers(6, 10))
    rec = scene_record("", scene, text=word, text_box=box, contrast=contrast)
    return Task(name_, render(rec), OCR_QUESTION, f"{word}.", rec, "ocr")


def rotated_scene(rng: np.random.Generator, name_: str) -> Task:
    """A scene turned by 90/180/270 degrees, asked about as it stands upright."""
    scene = random_scene(rng, int(rng.integers(280, 400)), int(rng.integers(200, 280)), int(rng.integers(2, 4)))
    rotation = ROTATIONS[int(rng.integers(len(ROTATIONS)))]
    rec = scene_record("", scene, rotation=rotation)
    pair = next(((a, b) for i, a in enumerate(scene.shapes) for b in scene.shapes[i + 1:]
                 if abs(a.x - b.x) > a.r + b.r), None)
    if pair is not None and rng.random() < 0.6:
        a, b = pair
        question = f"Is the {name(a)} to the left or to the right of the {name(b)} when the picture is upright?"
        answer = f"To the {'left' if a.x < b.x else 'right'}."
    else:
        question, answer = "How many shapes are in the image?", f"{len(scene.shapes)}."
    return Task(name_, render(rec), ROTATED_PREFIX + question, answer, rec, "vqa")


# --- solving ---------------------------------------------------------------------------------------
@dataclass
class Solution:
    answer: str
    steps: list[str]            # the correct reasoning, one sentence per step
    wrong_answer: str           # what a careless reader answers
    wrong_steps: list[str]      # ... and how it gets there
    difficulty: float           # chance that a reader without tools gets it wrong, in [0, 1]
    operation: str              # the image operation that helps: crop | rotate | contrast


_COUNT = re.compile(r"How many shapes are in the (?:image|picture)\?")
_COLOUR = re.compile(r"What colou?r is the (?:(leftmost|rightmost) )?(circle|square|triangle)\?")
_SIDE = re.compile(r"Is the (\w+) (circle|square|triangle) to the left or to the right of the (\w+) "
                   r"(circle|square|triangle)(?: when the picture is upright)?\?")
_MOVE = re.compile(r"In which direction does the (\w+) (circle|square|triangle) move\?")


def solve(rec: dict, question: str) -> Optional[Solution]:
    scene = scene_of(rec)
    q = question.strip()
    rotated = q.startswith(ROTATED_PREFIX)
    q = q[len(ROTATED_PREFIX):] if rotated else q
    if q == OCR_QUESTION and rec.get("text"):
        word = rec["text"]
        misread = word[:-1] + ("E" if word[-1] != "E" else "O")
        return Solution(f"{word}.", [
            "The lower part of the image holds faint letters that are hard to tell from the background.",
            f"Enhancing the contrast makes the letters readable: they spell {' '.join(word)}.",
            f"So the word is {word}."], f"{misread}.", [
            "There seem to be faint letters in the lower part of the image.",
            f"They look like {' '.join(misread)}.", f"So the word is {misread}."], 1.0, "contrast")
    sol = _solve_scene(scene, q, rec)
    if sol is not None and rotated:
        turn = rec.get("rotation", 0)
        sol.steps.insert(0, f"The picture is turned by {turn} degrees, so I first imagine it upright.")
        sol.wrong_steps.insert(0, "I read the picture as it is shown.")
        sol.difficulty, sol.operation = max(sol.difficulty, 0.6), "rotate"
    return sol


def _find(scene: Scene, colour: str, kind: str) -> Optional[Shape]:
    return next((s for s in scene.shapes if s.colour == colour and s.kind == kind), None)


def _solve_scene(scene: Scene, q: str, rec: dict) -> Optional[Solution]:
    shapes = sorted(scene.shapes, key=lambda s: s.x)
    if _COUNT.fullmatch(q):
        n = len(shapes)
        seen = [f"There is {with_article(name(s))}." for s in shapes]
        missed = seen[:-1] if n > 1 else seen + ["There is another shape behind it."]
        wrong = n - 1 if n > 1 else 2
        return Solution(f"{n}.", ["I go through the picture from left to right and list each shape."] + seen + [
            f"Nothing else is drawn on {background_phrase(scene)}.",
            f"That makes {NUMBER_WORDS[n]} {'shape' if n == 1 else 'shapes'} in total."],
            f"{wrong}.", ["I go through the picture from left to right and list each shape."] + missed + [
            f"That makes {NUMBER_WORDS[wrong]} shapes in total."],
            {1: 0.0, 2: 0.2, 3: 0.5}.get(n, 1.0), "crop")
    m = _COLOUR.fullmatch(q)
    if m:
        extreme, kind = m.groups()
        same = [s for s in shapes if s.kind == kind]
        if not same:
            return None
        target = same[0] if extreme in (None, "leftmost") else same[-1]
        other = next((s for s in shapes if s.colour != target.colour), None)
        wrong_colour = other.colour if other else ("red" if target.colour != "red" else "blue")
        find = (f"There is exactly one {kind} in the picture." if len(same) == 1 else
                f"There are {NUMBER_WORDS[len(same)]} {kind}s, so I need the {extreme} one.")
        return Solution(f"{target.colour.capitalize()}.", [
            f"The question is about the colour of a {kind}.", find, f"Its fill colour is {target.colour}."],
            f"{wrong_colour.capitalize()}.", [f"The question is about the colour of a {kind}.",
                                              f"The {kind} looks {wrong_colour} to me."],
            0.0 if len(same) == 1 else 0.5, "crop")
    m = _SIDE.fullmatch(q)
    if m:
        a, b = _find(scene, m.group(1), m.group(2)), _find(scene, m.group(3), m.group(4))
        if a is None or b is None:
            return None
        side = "left" if a.x < b.x else "right"
        flip = "right" if side == "left" else "left"
        pa, pb = round(100 * a.x / scene.width), round(100 * b.x / scene.width)
        return Solution(f"To the {side}.", [
            "I compare the horizontal positions of the two shapes.",
            f"The {name(a)} is centred about {pa}% of the way across the image.",
            f"The {name(b)} is centred about {pb}% of the way across.",
            f"Since {pa}% is {'less' if side == 'left' else 'more'} than {pb}%, the {name(a)} is to the {side}."],
            f"To the {flip}.", ["I compare the horizontal positions of the two shapes.",
                                f"The {name(a)} seems to be on the {flip} side."], 0.25, "crop")
    m = _MOVE.fullmatch(q)
    if m and rec.get("clip"):
        dirs = dict(zip([(s.colour, s.kind) for s in scene.shapes], rec["clip"]["directions"]))
        d = dirs.get((m.group(1), m.group(2)))
        if not d:
            return None
        start, end = d.split(" to ")
        return Solution(f"From {d}.", [
            f"In the first frame the {m.group(1)} {m.group(2)} is near the {start} edge of the frame.",
            "Around the middle of the clip it is close to the centre.",
            f"In the last frame it has reached the {end} edge.",
            f"So the {m.group(1)} {m.group(2)} moves from {d}."],
            f"From {end} to {start}.", [f"The {m.group(1)} {m.group(2)} starts near the {end} edge.",
                                        f"So it moves from {end} to {start}."], 0.25, "crop")
    return None
