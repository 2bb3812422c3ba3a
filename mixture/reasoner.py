"""THE SYNTHETIC REASONER: a deterministic test double for the generator model. Not the product.

No capable VLM runs on this project's test machines, so the demo and the tests point the mixture's
generator (`mixture.builders.generator`) at this stand-in, served over the same OpenAI-compatible
HTTP protocol as vLLM / SGLang by captioners.serve:

    python -m mixture.reasoner --corpus SAMPLE_DIR --port 8001     (SAMPLE_DIR: synthetic.corpus output)

It only knows the synthetic corpus: it recognises each picture it is sent by comparing a 16x16
thumbnail with the pictures drawn again from `scenes.jsonl` (synthetic/coldstart.py), finds which
versioned prompt (mixture/prompts/) the request was rendered from, and answers from the scene's
truth (`synthetic.coldstart.solve`):

    reason_v1, reason_video_v1   <think> step-by-step path </think><answer>..</answer>; with probability
                                 = the item's difficulty (seeded by the request's seed) a path makes a
                                 mistake (a missed shape, a flipped side, a misread word); phrasing
                                 varies between paths; 1 path in 25 loops (a repetitive generation)
    analyse_v1, explain_mode_v1  a difficulty analysis ending "Therefore /think (/no_think) mode is more
                                 appropriate." (hard = difficulty >= 0.3)
    image_code_v1                reasoning + PIL code: crop-and-zoom, rotate upright, or autocontrast;
                                 seeded faults: code that raises, saves nothing, saves the input
                                 unchanged, saves a flat strip, or a crop too small to be an image
    image_continue_v1            reasoning from the produced image, then the answer
    judge_v1                     yes / no by the verifier's rules

So verification, path selection, too-easy / never-solved filtering and every think-with-image
rejection all have work to do. Same request (prompt, pictures, seed), same text.

Planted rows (coverage tests): a question ending in `[plant:NAME]` makes the reasoner behave so for
that row, whatever the seed: `too_easy` (every path right), `never_solved` (every path wrong),
`repetitive_generation` (every path loops), `bad_format` (an analysis that chooses no mode), and for
the image code `no_image_code`, `code_error`, `code_timeout` (an endless loop), `code_resource_limit`
(a huge allocation), `code_forbidden` (imports os), `no_image_produced`, `empty_image_produced`,
`image_unchanged`, `image_out_of_bounds`. The marker is read off the question, which is otherwise
solved as usual.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import sys
from typing import Optional

import numpy as np

from mixture.generate import PROMPT_DIR
from synthetic.coldstart import Solution, render, solve

THUMB = 16
MAX_THUMB_DISTANCE = 24.0      # mean abs difference (0-255) of 16x16 RGB thumbnails: same picture below
HARD = 0.3
LOOP_RATE = 0.04
CODE_FAULTS = (("raises", 0.06), ("no_file", 0.04), ("unchanged", 0.04), ("flat", 0.04), ("tiny", 0.04))
PLANT = re.compile(r"\s*\[plant:(\w+)\]\s*$")
PLANTED_CODE = {"code_error": "raises", "no_image_produced": "no_file", "image_unchanged": "unchanged",
                "empty_image_produced": "flat", "image_out_of_bounds": "tiny", "code_timeout": "loops",
                "code_resource_limit": "allocates", "code_forbidden": "imports_os"}


def unit(seed: Optional[int], purpose: str) -> float:
    """A uniform number in [0, 1) from the request's seed and what it decides."""
    h = hashlib.sha256(f"{seed}\x1f{purpose}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def thumbnail(img) -> np.ndarray:
    from PIL import Image

    return np.asarray(img.convert("RGB").resize((THUMB, THUMB), Image.BILINEAR), dtype=np.float32)


class SceneIndex:
    """Every picture of the corpus, drawn again from its record, as a thumbnail; nearest one wins."""

    def __init__(self, corpus_dir: str) -> None:
        with open(os.path.join(corpus_dir, "scenes.jsonl"), encoding="utf-8") as f:
            self.records = [json.loads(line) for line in f if line.strip()]
        self.thumbs = np.stack([thumbnail(render(r)) for r in self.records]) if self.records else np.zeros((0,))

    def lookup(self, img) -> Optional[dict]:
        if not self.records:
            return None
        d = np.abs(self.thumbs - thumbnail(img)[None]).mean(axis=(1, 2, 3))
        best = int(np.argmin(d))
        return self.records[best] if d[best] <= MAX_THUMB_DISTANCE else None


def _template(text: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", text.strip())
    out = []
    for i, p in enumerate(parts):
        out.append(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.*?)" if f"(?P<{p}>" not in "".join(out)
                   else f"(?P={p})")
    return re.compile("".join(out), re.S)


def prompt_templates() -> dict[str, re.Pattern]:
    """Every versioned generation prompt as a pattern that captures its placeholders."""
    out = {}
    for name in sorted(os.listdir(PROMPT_DIR)):
        if name.endswith(".txt"):
            with open(os.path.join(PROMPT_DIR, name), encoding="utf-8") as f:
                out[name[:-4]] = _template(f.read())
    return out


def recognise(prompt: str, templates: dict[str, re.Pattern]) -> tuple[Optional[str], dict]:
    """(the prompt id the text was rendered from, its placeholder values), or (None, {})."""
    for prompt_id, pattern in templates.items():
        m = pattern.fullmatch(prompt.strip())
        if m:
            return prompt_id, m.groupdict()
    return None, {}


class Reasoner:
    """prompt text + pictures + seed -> text (see the module docstring)."""

    def __init__(self, corpus_dir: str) -> None:
        self.index = SceneIndex(corpus_dir)
        self.templates = prompt_templates()

    def respond(self, prompt: str, images: list, seed: Optional[int]) -> str:
        prompt_id, values = recognise(prompt, self.templates)
        if prompt_id is None:
            return "I do not know how to answer that request."
        if prompt_id.startswith("judge"):
            return self.judge(values)
        question = values.get("question", "")
        m = PLANT.search(question)
        plant = m.group(1) if m else None
        rec = self.index.lookup(images[0]) if images else None
        sol = solve(rec, PLANT.sub("", question)) if rec is not None else None
        if sol is None:
            return "I cannot tell the answer from what I can see."
        kind = prompt_id.rsplit("_v", 1)[0]
        if kind in ("reason", "reason_video"):
            return self.path(sol, seed, plant)
        if kind in ("analyse", "explain_mode"):
            if plant == "bad_format":
                return "The question is about the picture and I will answer it."
            mode = values["mode"] if kind == "explain_mode" else "think" if sol.difficulty >= HARD else "no_think"
            return self.analysis(sol, mode, question)
        if kind == "image_code":
            if plant == "no_image_code":
                return "The picture is clear enough as it is; no operation would help."
            return self.image_code(sol, rec, values.get("image_name", "image.png"), seed, PLANTED_CODE.get(plant))
        if kind == "image_continue":
            return self.continuation(sol, seed)
        return "I do not know how to answer that request."

    # --- texts ----------------------------------------------------------------------------------------
    def path(self, sol: Solution, seed: Optional[int], plant: Optional[str] = None) -> str:
        wrong = {"too_easy": False, "never_solved": True}.get(plant, unit(seed, "mistake") < sol.difficulty)
        steps = list(sol.wrong_steps if wrong else sol.steps)
        steps = [self._phrase(s, seed, i) for i, s in enumerate(steps)]
        if unit(seed, "detour") < 0.3:
            steps.insert(1, "Let me look over the whole picture once more before going on.")
        if (plant is None and unit(seed, "loop") < LOOP_RATE) or plant == "repetitive_generation":  # hits max tokens
            return "<think>\n" + " ".join([steps[0]] * 60)
        answer = sol.wrong_answer if wrong else sol.answer
        return "<think>\n" + "\n".join(steps) + f"\n</think>\n<answer>{answer}</answer>"

    @staticmethod
    def _phrase(step: str, seed: Optional[int], i: int) -> str:
        u = unit(seed, f"phrase{i}")
        tail = step if step.startswith("I ") else step[0].lower() + step[1:]
        if u < 0.15:
            return "Looking closely, " + tail
        if u < 0.25:
            return "Next, " + tail
        return step

    @staticmethod
    def analysis(sol: Solution, mode: str, question: str) -> str:
        needs = {"contrast": "reading faint letters that barely stand out from the background",
                 "rotate": "imagining the turned picture upright before comparing anything",
                 "crop": "finding the right shapes in the picture and comparing them"}[sol.operation]
        if mode == "think":
            return (f"The question needs {needs}. That takes several careful steps, and a quick answer is likely "
                    f"to miss something. Therefore /think mode is more appropriate.")
        return ("The question asks for one fact that can be read straight off the picture, so a direct answer is "
                "reliable and reasoning would add nothing. Therefore /no_think mode is more appropriate.")

    def image_code(self, sol: Solution, rec: dict, image_name: str, seed: Optional[int],
                   fault: Optional[str] = None) -> str:
        u, edge = unit(seed, "code"), 0.0
        for name, share in CODE_FAULTS if fault is None else ():
            edge += share
            if u < edge:
                fault = name
                break
        src = f"/input/{image_name}"
        if sol.operation == "contrast":
            why = "The letters are too faint to read, so I will stretch the contrast of the lower half."
            body = ("gray = img.convert('L')\nw, h = gray.size\nlow = gray.crop((0, h // 2, w, h))\n"
                    "out = ImageOps.autocontrast(low, cutoff=1)")
        elif sol.operation == "rotate":
            turn = int(rec.get("rotation", 0))
            why = f"The picture is turned by {turn} degrees, so I will rotate it back upright."
            body = f"out = img.rotate({-turn}, expand=True)"
        else:
            why = "I will crop the region that holds the shapes and zoom in by two to see them clearly."
            body = ("w, h = img.size\nbox = (w // 8, h // 8, w - w // 8, h - h // 8)\n"
                    "out = img.crop(box).resize(((box[2] - box[0]) * 2, (box[3] - box[1]) * 2))")
        save = "out.save('result.png')\nprint('result.png')"
        if fault == "raises":
            body = "img = img.enhance_edges()\n" + body          # a method PIL images do not have
        elif fault == "no_file":
            save = "print(out.size)"
        elif fault == "unchanged":
            body = "out = img.copy()"
        elif fault == "flat":
            body = "w, h = img.size\nout = img.crop((0, 0, w, 1)).resize((w, 64))"
        elif fault == "tiny":
            body = "out = img.crop((0, 0, 12, 12))"
        elif fault == "loops":
            body = "while True:\n    img = img.transpose(Image.FLIP_LEFT_RIGHT)"
        elif fault == "allocates":
            body = "buffer = bytearray(8 * 1024 ** 3)\n" + body
        elif fault == "imports_os":
            body = "import os\nos.listdir('/')\n" + body
        code = f"from PIL import Image, ImageOps\nimg = Image.open('{src}').convert('RGB')\n{body}\n{save}"
        return f"{why}\n```python\n{code}\n```"

    def continuation(self, sol: Solution, seed: Optional[int]) -> str:
        wrong = unit(seed, "after") < 0.1
        steps = sol.wrong_steps[1:] if wrong else sol.steps[1:]
        answer = sol.wrong_answer if wrong else sol.answer
        return ("<think>\nThe produced image shows the part that matters more clearly.\n" + "\n".join(steps)
                + f"\n</think>\n<answer>{answer}</answer>")

    @staticmethod
    def judge(values: dict) -> str:
        from mixture.verify import normalise, parse_number

        ref, cand = values.get("reference", ""), values.get("candidate", "")
        a, b = parse_number(cand), parse_number(ref)
        same = (a is not None and b is not None and abs(a - b) < 1e-9) or normalise(cand) == normalise(ref)
        return "yes" if same else "no"


class ReasonerEngine:
    """The reasoner behind captioners.serve's HTTP front end (its engine interface)."""

    def __init__(self, corpus_dir: str) -> None:
        self.reasoner = Reasoner(corpus_dir)
        self.batches = self.batched_requests = 0

    def render(self, messages: list) -> tuple[str, list]:
        from PIL import Image

        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not user:
            raise ValueError("no user message")
        content = user[-1].get("content")
        if isinstance(content, str):
            return content, []
        if not isinstance(content, list):
            raise ValueError("content must be a string or a list of parts")
        texts, images = [], []
        for p in content:
            kind = p.get("type") if isinstance(p, dict) else None
            if kind == "text":
                texts.append(str(p.get("text", "")))
            elif kind == "image_url":
                url = (p.get("image_url") or {}).get("url", "")
                if not url.startswith("data:") or ";base64," not in url:
                    raise ValueError("image_url must be a base64 data URL (this server is offline)")
                images.append(Image.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1], validate=True))))
            else:
                raise ValueError(f"unsupported content part {kind!r}")
        return "\n".join(texts), images

    def submit(self, job):
        self.batches += 1
        self.batched_requests += 1
        try:
            job.text = self.reasoner.respond(job.prompt, job.images, job.seed)
            job.prompt_tokens, job.completion_tokens = len(job.prompt.split()), len(job.text.split())
        except Exception as e:  # noqa: BLE001 - reported to the caller as a 500, like a model server's error
            job.error = f"{type(e).__name__}: {e}"
        return job

    def stop(self) -> None:
        pass


def server(corpus_dir: str, host: str = "127.0.0.1", port: int = 0, **kw):
    """A captioners.serve.Server with the reasoner as its engine (tests: `with server(dir) as s:`)."""
    from captioners.serve import Server

    return Server(None, host, port, model_name=kw.pop("model_name", "synthetic-reasoner"),
                  engine=ReasonerEngine(corpus_dir), **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mixture.reasoner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="the synthetic corpus folder (holds scenes.jsonl)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001, help="0: any free port (printed)")
    ap.add_argument("--served-model-name", default="synthetic-reasoner")
    ap.add_argument("--fault", default=None, help="as captioners.serve: e.g. 500:0.2,hang:0.1")
    ap.add_argument("--fault-sequence", default=None)
    args = ap.parse_args(argv)
    from captioners.serve import serve_forever

    return serve_forever(server(args.corpus, args.host, args.port, model_name=args.served_model_name,
                                fault=args.fault, fault_sequence=args.fault_sequence))


if __name__ == "__main__":
    sys.exit(main())
