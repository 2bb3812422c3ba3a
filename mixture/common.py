"""What every mode builder shares: reading a QA row, deriving a new row, sampling and choosing paths.

    input Sample ─qa_of─▶ QA (question turn, reference answer, trace if any)
                 ─sample_paths─▶ N generations ─parse─▶ repetition gate ─verify─▶ correct paths
                 ─select_path─▶ the most representative correct path (pass rate, path score)
                 ─derive─▶ a new Sample (`<id>@<tag>`, task cold_start, the mode, the mode's suffix)
                 ─finish─▶ repetition gate on generated text, format validator ─▶ [row] | Rejected

A builder holds, per worker, one generator client (shared by its threads), the verifier and the
config; per row it holds that row's N paths, never anything about other rows.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Optional

from filters.base import reject_sample
from mixture.base import derived_id
from mixture.formats import CATEGORY_MODE, format_error, strip_suffix, with_suffix
from mixture.generate import Call, Generated, Generator, Parsed, parse_reasoning, shared_generator
from mixture.paths import select_path
from mixture.repetition import check_text
from mixture.verify import AnswerVerifier
from schemas.blobs import renamed_blobs
from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import ContentPart, GenerationRecord, Message, Sample

_INLINE_THINK = re.compile(
    r"^\s*<think>(?P<reasoning>.*?)</think>\s*(?:<answer>(?P<answer>.*?)</answer>)?(?P<rest>.*)$", re.S)
TAGS = {"non_thinking": "nothink", "thinking": "think", "auto_think": "auto", "think_with_image": "agentic",
        "video_think": "vthink", "video_no_think": "vnothink"}


@dataclass
class QA:
    prefix: list[Message]       # turns before the question (earlier rounds, a system turn)
    question_turn: Message      # the last user turn (media parts and text)
    question: str               # its text, any mode suffix removed
    answer: str                 # the reference answer
    reasoning: Optional[str]    # a trace the row came with


def qa_of(sample: Sample) -> Optional[QA]:
    """The row as a question with a reference answer, or None (no final assistant text after a user turn)."""
    msgs = sample.messages
    if len(msgs) < 2 or msgs[-1].role != "assistant" or msgs[-2].role != "user":
        return None
    last = msgs[-1]
    if any(p.type != "text" for p in last.content):
        return None
    text = "".join(p.text or "" for p in last.content).strip()
    reasoning = last.reasoning
    m = _INLINE_THINK.match(text)
    if m:                                         # a trace written inline: <think>..</think><answer>..</answer>
        reasoning = m.group("reasoning").strip() or reasoning
        text = (m.group("answer") or m.group("rest") or "").strip()
    question = strip_suffix(" ".join(p.text for p in msgs[-2].content if p.type == "text" and p.text))
    if not text or not question:
        return None
    return QA(msgs[:-2], msgs[-2], question, text, (reasoning or "").strip() or None)


def media_kinds(sample: Sample) -> set[str]:
    return {m.kind for m in sample.media}


@dataclass
class Paths:
    """One item's sampled paths, judged."""
    results: list[Generated]
    parsed: list[Optional[Parsed]] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)      # indices of verified, non-repetitive paths
    repetitive: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def pass_rate(self) -> float:
        return len(self.correct) / self.answered if self.answered else 0.0


class Builder:
    """Base of the mode builders (the `mixture.base.ModeBuilder` protocol)."""

    category = ""

    def __init__(self, cfg: Config, generator: Optional[Generator] = None) -> None:
        self.cfg = cfg
        self.b = cfg.mixture.builders
        self.mode = CATEGORY_MODE[self.category]
        self.tag = TAGS[self.category]
        self.generator = generator
        self.verifier: Optional[AnswerVerifier] = None
        self.embed = None            # step embeddings for path selection (paths.grouping: clip_text)

    # --- lifecycle ---------------------------------------------------------------------------
    def needs_generator(self) -> bool:
        return False

    def setup(self) -> None:
        if self.needs_generator() and self.generator is None:
            self.generator = shared_generator(self.b.generator)
        if self.generator is not None:
            self.generator.setup()
        if self.verifier is None:
            self.verifier = AnswerVerifier(self.b.verify, self._judge if self.generator is not None else None)
        if self.b.paths.grouping == "clip_text" and self.embed is None and self.needs_generator():
            from captioners.clip import ClipRef, ClipScorer

            self.embed = ClipScorer(ClipRef(self.cfg.score.model, self.cfg.score.pretrained), device="cpu").embed_texts

    def teardown(self) -> None:
        pass                      # the generator is shared by the worker's builders; it lives as long as they do

    def _judge(self, question: str, reference: str, candidate: str) -> Optional[bool]:
        res = self.generator.run([Call(f"judge:{reference}:{candidate}", self.b.verify.judge_prompt,
                                       {"question": question, "reference": reference, "candidate": candidate},
                                       target="judge")])[0]
        if not res.ok:
            return None
        word = res.text.strip().lower().strip(".! ")
        return True if word.startswith("yes") else False if word.startswith("no") else None

    # --- routing -------------------------------------------------------------------------------
    def section(self):
        """This mode's recipe section (mixture.builders.<mode>)."""
        raise NotImplementedError

    def material(self, sample: Sample) -> bool:
        """Whether the row's media suit the mode (the task and QA shape are checked besides)."""
        return "video" not in media_kinds(sample)

    def wants(self, sample: Sample) -> bool:
        return self.material(sample) and self.enabled_for(sample, self.section()) is not None

    def __call__(self, sample: Sample) -> list[Sample] | Rejected:
        sample = dataclasses.replace(sample, scores=dict(sample.scores))   # stats go on this copy, not the input
        qa = self.enabled_for(sample, self.section()) if self.wants(sample) else None
        if qa is None:      # the pipeline routes by wants(); called anyway, the row is refused, never raised on
            return self.reject(sample, Reason.BAD_FORMAT, f"{self.category}: the row is not material for this "
                               f"mode (task {sample.task}, media {sorted(media_kinds(sample))}, no question/answer)")
        return self.build(sample, qa)

    def build(self, sample: Sample, qa: QA) -> list[Sample] | Rejected:
        raise NotImplementedError

    def enabled_for(self, sample: Sample, section) -> Optional[QA]:
        """The row's QA when this mode is on and takes the row's task, else None."""
        if not section.enabled or sample.task not in section.tasks:
            return None
        return qa_of(sample)

    # --- results -------------------------------------------------------------------------------
    def reject(self, sample: Sample, reason, detail: str) -> Rejected:
        return reject_sample(sample, Stage.MIXTURE, reason, detail[:1000])

    def derive(self, sample: Sample, qa: QA, assistant: list[ContentPart], *, records=(),
               scores: Optional[dict] = None) -> Sample:
        """The new row: the parent's turns with the mode suffix on the question and the new answer;
        media members renamed under the new id (a WebDataset key groups a row's members)."""
        new_id = derived_id(sample.id, self.tag)
        rename = {name: new_id + name[len(sample.id):] for name in sample.blobs if name.startswith(sample.id + ".")}
        media = []
        for item in sample.media:
            item = dataclasses.replace(item, members=[rename.get(n, n) for n in item.members],
                                       source_member=rename.get(item.source_member, item.source_member),
                                       stats=dict(item.stats), frame_timestamps=list(item.frame_timestamps),
                                       frame_types=list(item.frame_types))
            media.append(item)
        prefix = [Message(m.role, copy.deepcopy(m.content), None) for m in qa.prefix]  # Keye strips old traces
        question = copy.deepcopy(qa.question_turn.content)
        last_text = max(i for i, p in enumerate(question) if p.type == "text")
        question[last_text] = ContentPart("text", text=with_suffix(question[last_text].text, self.mode,
                                                                    self.b.auto_think_suffix))
        messages = prefix + [Message("user", question), Message("assistant", assistant)]
        prov = dataclasses.replace(sample.provenance, captioners=list(sample.provenance.captioners),
                                   generations=list(sample.provenance.generations) + list(records))
        return Sample(id=new_id, source=sample.source, source_ref=sample.source_ref, task="cold_start",
                      messages=messages, media=media, mode=self.mode, source_id=sample.source_id,
                      scores={**sample.scores, **(scores or {})}, provenance=prov,
                      blobs=renamed_blobs(sample.blobs, rename),
                      embeddings=dict(sample.embeddings))

    def finish(self, sample: Sample, row: Sample, generated: str = "") -> list[Sample] | Rejected:
        """The gates every built row passes: repetition (on the generated text) and the format."""
        if generated:
            stats, verdict = check_text(generated, self.b.repetition)
            row.scores.update(stats)
            sample.scores.update(stats)
            if verdict is not None:
                return self.reject(sample, *verdict)
        err = format_error(row, self.b.auto_think_suffix)
        if err is not None:
            return self.reject(sample, Reason.BAD_FORMAT, f"{self.category}: {err}")
        return [row]

    # --- generation ------------------------------------------------------------------------------
    def sample_paths(self, sample: Sample, qa: QA, prompt_id: str, values: dict, images: list[bytes]) -> Paths:
        n = self.b.paths.n
        calls = [Call(sample.id, prompt_id, {"question": qa.question, **values}, images, path_index=i)
                 for i in range(n)]
        paths = Paths(self.generator.run(calls))
        for i, res in enumerate(paths.results):
            if not res.ok:
                paths.parsed.append(None)
                paths.errors.append(res.error or "failed")
                continue
            parsed = parse_reasoning(res.text)
            paths.parsed.append(parsed)
            _, verdict = check_text(res.text, self.b.repetition)
            if verdict is not None:
                paths.repetitive.append(i)
                continue
            if parsed.reasoning and self.verifier.verify(parsed.answer, qa.answer, qa.question).correct:
                paths.correct.append(i)
        return paths

    def judge_paths(self, sample: Sample, paths: Paths, too_easy: bool) -> Optional[Rejected]:
        """Scores on the row, then the verdict: generation failed, never solved, too easy, or None."""
        sample.scores["gen_paths"] = float(len(paths.results))
        if paths.answered == 0:
            return self.reject(sample, Reason.GENERATION_FAILED, f"{len(paths.results)} requests failed: "
                               f"{paths.errors[-1] if paths.errors else ''}")
        sample.scores["gen_pass_rate"] = paths.pass_rate
        if not paths.correct:
            if len(paths.repetitive) == paths.answered:
                return self.reject(sample, Reason.REPETITIVE_GENERATION,
                                   f"all {paths.answered} answered paths are repetitive or unterminated")
            return self.reject(sample, Reason.NEVER_SOLVED, f"0 of {paths.answered} paths reached the reference "
                               f"answer ({len(paths.repetitive)} repetitive)")
        if too_easy and paths.pass_rate >= self.b.paths.too_easy_pass_rate:
            return self.reject(sample, Reason.TOO_EASY, f"{len(paths.correct)} of {paths.answered} paths correct "
                               f"(pass rate {paths.pass_rate:.2f} >= {self.b.paths.too_easy_pass_rate})")
        return None

    def best_path(self, sample: Sample, paths: Paths) -> tuple[str, GenerationRecord]:
        """The most representative correct path's reasoning and its record; its score goes on the row."""
        choice = select_path([paths.parsed[i].reasoning for i in paths.correct], self.b.paths.min_step_chars,
                             self.embed, self.b.paths.step_similarity)
        sample.scores["gen_path_score"] = choice.score
        i = paths.correct[choice.index]
        return paths.parsed[i].reasoning, paths.results[i].record

    def images_of(self, sample: Sample, max_frames: int = 8) -> list[bytes]:
        """The row's pictures as JPEG (what the chat protocol sends); MediaUnavailable if unreadable."""
        from mixture.generate import MediaUnavailable, as_jpeg, pictures

        try:
            return [as_jpeg(b) for i in range(len(sample.media)) for b in pictures(sample, i, max_frames)]
        except (OSError, ValueError) as e:          # PIL's UnidentifiedImageError is an OSError
            if isinstance(e, MediaUnavailable):
                raise
            raise MediaUnavailable(f"undecodable picture: {type(e).__name__}: {e}"[:300]) from None
