"""Versioned recaption prompts: `captioners/prompts/<prompt_id>.txt`, recorded by id in provenance.

A prompt's text never changes under its id (the id in a row's provenance must say exactly what
the model was asked): to change a prompt, add `<name>_v2.txt` and point the recipe at it.
`prompts/SHA256SUMS` pins every released prompt and tests/test_recaption.py fails when a file
and its line disagree. Placeholders, filled per request:

    {fps}          frames per second the video frames were sampled at (videos)
    {num_frames}   frames sent (videos)
    {duration_s}   the video's duration in seconds (videos)
    {asr}          the video's speech transcript (only in prompts made for it)
"""
from __future__ import annotations

import functools
import hashlib
import os
import string
from dataclasses import dataclass

PROMPT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")
PLACEHOLDERS = {"fps", "num_frames", "duration_s", "asr"}


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    sha256: str

    @property
    def fields(self) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(self.text) if name}

    def render(self, **values) -> str:
        missing = self.fields - set(values)
        if missing:
            raise KeyError(f"prompt {self.id} needs {sorted(missing)}")
        return self.text.format(**{k: v for k, v in values.items() if k in self.fields}).strip()


@functools.lru_cache(maxsize=None)
def load_prompt(prompt_id: str, prompt_dir: str = PROMPT_DIR, placeholders: frozenset = frozenset(PLACEHOLDERS)) -> Prompt:
    """`<prompt_dir>/<prompt_id>.txt`; other prompt sets (the mixture's generation prompts) pass
    their own folder and placeholders."""
    path = os.path.join(prompt_dir, f"{prompt_id}.txt")
    if not os.path.isfile(path) or os.path.dirname(os.path.abspath(path)) != os.path.abspath(prompt_dir):
        raise FileNotFoundError(f"no prompt {prompt_id!r}: expected {path}")
    with open(path, "rb") as f:
        data = f.read()
    prompt = Prompt(prompt_id, data.decode("utf-8"), hashlib.sha256(data).hexdigest())
    unknown = prompt.fields - placeholders
    if unknown:
        raise ValueError(f"prompt {prompt_id} has unknown placeholders {sorted(unknown)}")
    return prompt


def released(prompt_dir: str = PROMPT_DIR) -> dict[str, str]:
    """prompt file name -> pinned sha256 (<prompt_dir>/SHA256SUMS)."""
    out = {}
    with open(os.path.join(prompt_dir, "SHA256SUMS"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                digest, name = line.split()
                out[name] = digest
    return out
