"""Text for the synthetic corpus: captions, questions, answers, reasoning traces, paragraphs.

Every caption, answer and reasoning trace is computed from the `Scene` or `Clip` it talks
about (synthetic/scenes.py), so correctness is known; `wrong_caption` changes exactly one
fact to plant a mismatched pair. Paragraphs are built from small word lists with the RNG:
readable enough for text filters and dedupe, never repetitive by accident.

Benchmark questions (`BENCH_QUESTIONS`) are long (at least 13 words) and worded unlike any
training template, so a 13-gram overlap with training text only happens where planted.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from synthetic.scenes import COLOURS, SHAPES, Clip, Scene, Shape

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


# --- describing scenes -------------------------------------------------------------------------
def name(s: Shape) -> str:
    return f"{s.colour} {s.kind}"


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def listing(names: list[str]) -> str:
    """"a red circle, an orange square and a green triangle"."""
    items = [with_article(n) for n in names]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def background_phrase(scene: Scene) -> str:
    return f"a {scene.background} {'gradient ' if scene.gradient else ''}background"


def caption(scene: Scene) -> str:
    """Shapes left to right, then the background."""
    shapes = sorted(scene.shapes, key=lambda s: s.x)
    return f"{listing([name(s) for s in shapes])} on {background_phrase(scene)}"


def wrong_caption(scene: Scene, rng: np.random.Generator) -> str:
    """The caption with one fact changed: a colour, a kind, or the number of shapes."""
    shapes = sorted(scene.shapes, key=lambda s: s.x)
    present = {(s.kind, s.colour) for s in shapes}
    names = [name(s) for s in shapes]
    i = int(rng.integers(len(shapes)))
    s = shapes[i]
    other_kinds = [k for k in SHAPES if (k, s.colour) not in present]
    change = ("colour", "kind", "count")[int(rng.integers(3))]
    if change == "count" and len(shapes) > 1:
        del names[i]
    elif change == "count":
        names.append(next(f"{c} {k}" for k in SHAPES for c in COLOURS if (k, c) not in present))
    elif change == "kind" and other_kinds:
        names[i] = f"{s.colour} {other_kinds[int(rng.integers(len(other_kinds)))]}"
    else:  # a colour this kind does not have in the picture (there are always some)
        colours = [c for c in COLOURS if (s.kind, c) not in present]
        names[i] = f"{colours[int(rng.integers(len(colours)))]} {s.kind}"
    return f"{listing(names)} on {background_phrase(scene)}"


def motion_caption(clip: Clip) -> str:
    scene = clip.scene
    parts = []
    for s, d in zip(scene.shapes, clip.directions):
        parts.append(f"{with_article(name(s))} {f'moves from {d}' if d else 'stays still'}")
    text = (", ".join(parts[:-1]) + " and " + parts[-1]) if len(parts) > 1 else parts[0]
    return f"{text} on {background_phrase(scene)}"


def still_caption(scene: Scene) -> str:
    return f"{listing([name(s) for s in scene.shapes])} {'stays' if len(scene.shapes) == 1 else 'stay'} " \
           f"still on {background_phrase(scene)}"


# --- image questions ---------------------------------------------------------------------------
def image_qa(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    """(question, answer, reasoning): a counting, colour or position question, picked among
    those the scene answers unambiguously."""
    askable = _askable(scene)
    return askable[int(rng.integers(len(askable)))](scene, rng)


def image_qa_rounds(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """One question of each kind the scene answers (count first): a multi-turn conversation."""
    return [ask(scene, rng) for ask in _askable(scene)]


def _askable(scene: Scene) -> list[Callable[[Scene, np.random.Generator], tuple[str, str, str]]]:
    askable = [_count_qa]
    if _nameable_by_kind(scene):
        askable.append(_colour_qa)
    if _separated_pair(scene) is not None:
        askable.append(_position_qa)
    return askable


def _count_qa(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    shapes = sorted(scene.shapes, key=lambda s: s.x)
    n = len(shapes)
    steps = " ".join(f"There is {with_article(name(s))}." for s in shapes)
    return ("How many shapes are in the image?", f"{n}.",
            f"I go through the picture from left to right and list each shape. {steps} "
            f"Nothing else is drawn on {background_phrase(scene)}. That makes {NUMBER_WORDS[n]} "
            f"{'shape' if n == 1 else 'shapes'} in total, so the answer is {n}.")


def _nameable_by_kind(scene: Scene) -> list[tuple[Shape, Optional[str]]]:
    """Shapes that "the circle" or "the leftmost circle" picks out without doubt: the only one
    of its kind, or the leftmost / rightmost of its kind, clearly apart from the next one."""
    out = []
    for kind in SHAPES:
        same = sorted((s for s in scene.shapes if s.kind == kind), key=lambda s: s.x)
        if len(same) == 1:
            out.append((same[0], None))
        elif len(same) > 1:
            if same[1].x - same[0].x > same[0].r + same[1].r:
                out.append((same[0], "leftmost"))
            if same[-1].x - same[-2].x > same[-1].r + same[-2].r:
                out.append((same[-1], "rightmost"))
    return out


def _colour_qa(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    candidates = _nameable_by_kind(scene)
    s, extreme = candidates[int(rng.integers(len(candidates)))]
    if extreme is None:
        question = f"What colour is the {s.kind}?"
        find = f"There is exactly one {s.kind} in the picture."
    else:
        n = sum(t.kind == s.kind for t in scene.shapes)
        question = f"What colour is the {extreme} {s.kind}?"
        find = (f"There are {NUMBER_WORDS[n]} {s.kind}s, so I need the {extreme} one; it is further "
                f"{extreme[:-len('most')]} than the others.")
    return (question, f"{s.colour.capitalize()}.",
            f"The question is about the colour of a {s.kind}. {find} Its fill colour is {s.colour}, "
            f"which stands out against {background_phrase(scene)}. So the answer is {s.colour}.")


def _position_qa(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    a, b = _separated_pair(scene)
    a, b = (a, b) if rng.random() < 0.5 else (b, a)
    side = "left" if a.x < b.x else "right"
    pa, pb = round(100 * a.x / scene.width), round(100 * b.x / scene.width)
    return (f"Is the {name(a)} to the left or to the right of the {name(b)}?", f"To the {side}.",
            f"I compare the horizontal positions of the two shapes. The {name(a)} is centred about "
            f"{pa}% of the way across the image. The {name(b)} is centred about {pb}% of the way across. "
            f"Since {pa}% is {'less' if side == 'left' else 'more'} than {pb}%, the {name(a)} is to "
            f"the {side} of the {name(b)}.")


def _separated_pair(scene: Scene) -> Optional[tuple[Shape, Shape]]:
    """Two shapes whose left/right order is obvious (centres far apart horizontally)."""
    for i, a in enumerate(scene.shapes):
        for b in scene.shapes[i + 1:]:
            if abs(a.x - b.x) > a.r + b.r:
                return a, b
    return None


def count_compare(left: Scene, right: Scene) -> tuple[str, str]:
    """A two-image question; the scenes must hold different numbers of shapes."""
    first_more = len(left.shapes) > len(right.shapes)
    return "Which of the two images contains more shapes?", f"The {'first' if first_more else 'second'} image."


# --- video questions ---------------------------------------------------------------------------
def video_qa(clip: Clip) -> tuple[str, str, str]:
    """(question, answer, reasoning) about the direction of the clip's first moving shape."""
    s, d = next((s, d) for s, d in zip(clip.scene.shapes, clip.directions) if d)
    start, end = d.split(" to ")
    axis = "horizontal" if start in ("left", "right") else "vertical"
    return (f"In which direction does the {name(s)} move?", f"From {d}.",
            f"In the first frame the {name(s)} is near the {start} edge of the frame. Around the middle "
            f"of the clip it is close to the centre. In the last frame it has reached the {end} edge. "
            f"Its {axis} position changes steadily in one direction, so the {name(s)} moves from {d}.")


# --- benchmark ---------------------------------------------------------------------------------
def _leftmost(scene: Scene) -> Shape:
    return min(scene.shapes, key=lambda s: s.x)


def _red_answer(scene: Scene) -> str:
    n = sum(s.colour == "red" for s in scene.shapes)
    return f"Yes, {n}." if n else "No."


def _circles_vs_squares(scene: Scene) -> str:
    c = sum(s.kind == "circle" for s in scene.shapes)
    q = sum(s.kind == "square" for s in scene.shapes)
    return "More." if c > q else "Fewer." if c < q else "The same number."


BENCH_QUESTIONS: list[tuple[str, Callable[[Scene], str]]] = [
    ("Counting every circle, square and triangle drawn in this picture, how many shapes are there "
     "altogether?", lambda sc: f"{len(sc.shapes)}."),
    ("Looking across the picture from the left edge to the right edge, what colour is the shape that "
     "is furthest to the left?", lambda sc: f"{_leftmost(sc).colour.capitalize()}."),
    ("Ignoring every shape drawn on top of it, what is the main colour of the background of this "
     "picture?", lambda sc: f"{sc.background.capitalize()}."),
    ("Which kind of shape, a circle or a square or a triangle, sits closest to the top edge of this "
     "picture?", lambda sc: f"A {min(sc.shapes, key=lambda s: s.y).kind}."),
    ("Not counting the background, how many different colours are used to fill the shapes in this "
     "picture?", lambda sc: f"{len({s.colour for s in sc.shapes})}."),
    ("Looking across the picture from the right edge to the left edge, which kind of shape is the one "
     "furthest to the right?", lambda sc: f"A {max(sc.shapes, key=lambda s: s.x).kind}."),
    ("Is there at least one red shape anywhere in this picture, and if there is, how many red shapes "
     "are there?", _red_answer),
    ("Starting from the bottom edge of this picture and moving upwards, what colour is the first shape "
     "that you meet?", lambda sc: f"{max(sc.shapes, key=lambda s: s.y).colour.capitalize()}."),
    ("How many triangles can you find in this picture if you look carefully at every one of the "
     "shapes?", lambda sc: f"{sum(s.kind == 'triangle' for s in sc.shapes)}."),
    ("Taking the shapes in this picture as a whole, are there more circles than squares, fewer circles "
     "than squares, or the same number?", _circles_vs_squares),
]
BENCH_VIDEO_QUESTIONS: list[tuple[str, Callable[[Clip], str]]] = [
    ("Watching the whole clip from its first frame to its last frame, in which direction does the "
     "moving shape travel?", lambda c: f"From {next(d for d in c.directions if d)}."),
    ("Over the course of this short clip, does the moving shape travel horizontally across the frame "
     "or vertically?", lambda c: "Horizontally." if next(d for d in c.directions if d)[0] in "lr"
     else "Vertically."),
]


# --- paragraphs --------------------------------------------------------------------------------
ADJECTIVES = ("quiet", "old", "bright", "narrow", "heavy", "small", "distant", "wooden", "green", "cold",
              "busy", "gentle", "tall", "hidden", "empty", "warm", "broken", "silver", "patient", "early")
NOUNS = ("river", "village", "teacher", "garden", "lantern", "bridge", "market", "window", "farmer",
         "library", "mountain", "engine", "kitchen", "harbour", "painter", "forest", "letter", "station",
         "orchard", "clock", "sailor", "meadow", "workshop", "tower", "student", "valley", "carpet",
         "island", "baker", "road")
VERBS = ("follows", "carries", "watches", "finds", "covers", "repairs", "paints", "opens", "visits",
         "remembers", "crosses", "lights", "guards", "measures", "describes")
INTRANSITIVE = ("rests", "waits", "shines", "sleeps", "wanders", "returns", "grows", "listens",
                "disappears", "settles")
PREPOSITIONS = ("near", "behind", "beside", "above", "below", "across", "inside", "beyond", "under",
                "around")
ADVERBS = ("Slowly", "Later", "Sometimes", "Meanwhile", "Suddenly", "Usually", "Again", "Afterwards")
TIMES = ("morning", "evening", "winter", "summer", "week", "spring", "night", "autumn")


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def sentence(rng: np.random.Generator) -> str:
    a, n, v, i, p = ADJECTIVES, NOUNS, VERBS, INTRANSITIVE, PREPOSITIONS
    template = int(rng.integers(5))
    if template == 0:
        return f"The {_pick(rng, a)} {_pick(rng, n)} {_pick(rng, v)} the {_pick(rng, n)}."
    if template == 1:
        return f"{_pick(rng, ADVERBS)}, a {_pick(rng, n)} {_pick(rng, i)} {_pick(rng, p)} the {_pick(rng, a)} {_pick(rng, n)}."
    if template == 2:
        return (f"Every {_pick(rng, TIMES)}, the {_pick(rng, n)} {_pick(rng, v)} a {_pick(rng, a)} "
                f"{_pick(rng, n)} {_pick(rng, p)} the {_pick(rng, n)}.")
    if template == 3:
        return f"The {_pick(rng, n)} of the {_pick(rng, a)} {_pick(rng, n)} {_pick(rng, i)} {_pick(rng, p)} the {_pick(rng, n)}."
    return f"Nobody knows why the {_pick(rng, a)} {_pick(rng, n)} {_pick(rng, v)} the {_pick(rng, n)} every {_pick(rng, TIMES)}."


def paragraph(rng: np.random.Generator, min_words: int, max_words: int) -> str:
    """Sentences until at least a target word count in [min_words, max_words] is reached,
    then trimmed back to whole sentences within max_words."""
    target = int(rng.integers(min_words, max_words + 1))
    sentences: list[str] = []
    words = 0
    while words < target:
        s = sentence(rng)
        if words + len(s.split()) > max_words:
            break
        sentences.append(s)
        words += len(s.split())
    return " ".join(sentences)


def change_words(text: str, rng: np.random.Generator, n_changes: int) -> str:
    """The text with n_changes distinct word positions replaced by a different word of the
    same list (noun for noun, adjective for adjective): a near duplicate."""
    words = text.split()
    candidates = [i for i, w in enumerate(words) if w.strip(".,") in NOUNS + ADJECTIVES]
    for i in sorted(rng.choice(candidates, size=n_changes, replace=False).tolist()):
        bare = words[i].strip(".,")
        pool = NOUNS if bare in NOUNS else ADJECTIVES
        others = [w for w in pool if w != bare]
        words[i] = words[i].replace(bare, others[int(rng.integers(len(others)))])
    return " ".join(words)


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard similarity of the word n-gram sets (lower-cased, split on whitespace)."""
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb)
